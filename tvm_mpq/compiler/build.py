"""Build a lowered Relax module for a target: kernels, MetaSchedule tuning, prepacked weights.

:func:`build_passes` are the build half of the compile pipeline
(:func:`tvm_mpq.compiler.pipeline.compile_pipeline` puts them after the precision passes in one
``Sequential``); :func:`codegen` turns their result into an executable::

    DecomposeOpsForInference -> FoldConstant -> CanonicalizeBindings
    -> ConvertToChannelsLast -> FoldConstant             (x86: one NHWC graph, :func:`graph_passes`)
    -> LegalizeOps -> AnnotateTIROpPattern -> FoldConstant -> FuseOps -> FuseTIR
    -> AttachAttrLayoutFreeBuffers                      (weights may be re-laid out)
    -> ScheduleKernels: kernel rules                     (:mod:`tvm_mpq.kernels`: hand-written
                                                          int8/fp32 MAC kernels, e.g. vpdpbusd, sdot,
                                                          dp4a; on CUDA then TVM's GPU rules)
                        [tune the MAC kernels no rule covers and the database lacks]
                        tuning database                  (tuned records for this target, the rest)
    -> SplitLayoutRewritePreproc -> FoldConstant -> DCE  (weight prepacking at compile time)
    codegen: TVM's CPU/GPU lowering and code generation

:func:`build_module` runs both on a lowered module. CPU and CUDA builds take the same path; the
target picks the graph passes, the rules (:func:`tvm_mpq.kernels.default_schedule_rules`) and
TVM's backend lowering.

The tuning database is persistent and keyed by target and device (:mod:`tvm_mpq.compiler.tuning`):
every fused PrimFunc (one layer shape + precision + epilogue) is tuned once, on this host or on
a device over RPC (:mod:`tvm_mpq.compiler.tuning_rpc`), and any later build of any config for
the same target and device reuses the record (a sweep over rates does not re-tune).
"""

from __future__ import annotations

from pathlib import Path

import tvm
from tvm import relax

from tvm_mpq.compiler.tuning import (DEFAULT_TUNING_ROOT, MAC_TASK_MARKERS, TuningDevice, TuningOptions,  # noqa: F401
                                     check_tuning, target_key, tuning_dir, untuned_tasks)
from tvm_mpq.compiler.tune import tune
from tvm_mpq.kernels import GENERIC_RULES, is_scheduled
from tvm_mpq.target_build.passes import (KernelRules, codegen, fuse, fusion_passes, graph_passes,  # noqa: F401
                                         kernel_passes, kernel_rules, lower_after_schedule, rules_used,
                                         schedule_kernels)


BUILD_INFO_ATTR = "mpq_build"
"""Module attribute: what :class:`ScheduleKernels` did (``tuning``, ``scheduled_by``, ``rules``,
``schedulers``: kernel -> what scheduled it)."""


@tvm.transform.module_pass(opt_level=0, name="ScheduleKernels")
class ScheduleKernels:
    """Schedule the fused PrimFuncs of a legalized module: the kernel rules of
    :mod:`tvm_mpq.kernels` (``options.kernels``), MetaSchedule tuning of the MAC kernels no rule
    covers (``options.trials > 0``), then the target's tuning database. What scheduled what is
    written as module attribute :data:`BUILD_INFO_ATTR` (:func:`build_info`)."""

    def __init__(self, target: tvm.target.Target, options: TuningOptions):
        self.target = target
        self.options = options

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        info: dict = {}
        with self.target:
            mod = KernelRules(self.target, self.options.kernels)(mod)
            n_rules = _count_scheduled(mod)
            if self.options.trials > 0:
                info["tuning"] = tune(mod, self.target, self.options)
            work_dir = tuning_dir(self.target, self.options.root, self.options.device)
            if (work_dir / "database_tuning_record.json").exists():
                mod = _apply_database(mod, work_dir)
        n_scheduled = _count_scheduled(mod)
        by_rule = rules_used(mod)
        n_generic = sum(n for name, n in by_rule.items() if name in GENERIC_RULES)
        info["scheduled_by"] = {"kernel_rules": n_rules - n_generic, "generic_rules": n_generic,
                                "database": n_scheduled - n_rules, "default": _count_prim_funcs(mod) - n_scheduled}
        info["rules"] = by_rule
        info["schedulers"] = kernel_schedulers(mod)
        return mod.with_attr(BUILD_INFO_ATTR, info)


def build_passes(target: tvm.target.Target, options: TuningOptions | None = None) -> list[tvm.transform.Pass]:
    """The passes from a lowered Relax module to the module codegen takes, for ``target``:
    :func:`graph_passes`, legalization and fusion (``LegalizeOps``, ``FuseOps``, ``FuseTIR``),
    :class:`ScheduleKernels`, weight prepacking (CPU and CUDA alike). MpqError for tuning
    options the target cannot use."""
    options = options or TuningOptions()
    check_tuning(target, options)
    return kernel_passes(target, ScheduleKernels(target, options))


def build_info(mod: tvm.IRModule, target: tvm.target.Target) -> dict:
    """What the build did (from :class:`ScheduleKernels`' module attribute): ``tuning`` counts,
    ``scheduled_by`` (how many PrimFuncs got a kernel rule, a database record or neither),
    ``rules``, and ``kernels``: each final kernel -> what scheduled it."""
    attrs = mod.attrs
    info = to_python(attrs[BUILD_INFO_ATTR]) if attrs is not None and BUILD_INFO_ATTR in attrs else {}
    schedulers = info.pop("schedulers", {})
    info["kernels"] = {name: schedulers.get(name.removesuffix("_prepacked"), "default")
                       for name in kernel_schedulers(mod)}  # (the weight split renames kernels)
    return info


def to_python(value: object) -> object:
    """An IR attribute value (Map, Array, String, numbers) as plain Python."""
    if hasattr(value, "items"):
        return {str(k): to_python(v) for k, v in value.items()}
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (list, tuple)) or type(value).__name__ == "Array":
        return [to_python(v) for v in value]
    return value


def build_module(mod: tvm.IRModule, target: tvm.target.Target,
                 options: TuningOptions | None = None) -> tuple[relax.VMExecutable, dict]:
    """Compile a lowered Relax module for ``target``: :func:`build_passes`, then :func:`codegen`;
    return the executable and :func:`build_info`."""
    passes = build_passes(target, options)
    with target, tvm.transform.PassContext(opt_level=3):
        mod = tvm.transform.Sequential(passes, name="tvm_mpq.build")(mod)
    return codegen(mod, target), build_info(mod, target)


def _apply_database(mod: tvm.IRModule, work_dir: Path) -> tvm.IRModule:
    """Apply the database's best records to the PrimFuncs no kernel rule scheduled."""
    pending = {gv: f for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc) and not is_scheduled(f)}
    if not pending:
        return mod
    applied = relax.transform.MetaScheduleApplyDatabase(str(work_dir))(tvm.IRModule(pending))
    out = mod.clone()
    for gv in pending:
        out.update_func(gv, applied[gv.name_hint])
    return out


def kernel_schedulers(mod: tvm.IRModule) -> dict[str, str]:
    """Kernel name -> what scheduled it: a rule's name, ``database`` or ``default``."""
    from tvm_mpq.kernels import rule_of

    out = {}
    for gv, func in mod.functions.items():
        if isinstance(func, tvm.tirx.PrimFunc):
            out[gv.name_hint] = rule_of(func) or ("database" if is_scheduled(func) else "default")
    return dict(sorted(out.items()))


def _count_prim_funcs(mod: tvm.IRModule) -> int:
    return sum(1 for _, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc))


def _count_scheduled(mod: tvm.IRModule) -> int:
    return sum(1 for _, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc) and is_scheduled(f))


