"""Hand-written default schedules ("kernels") for the MAC ops, per target architecture.

An untuned TVM build is a set of unscheduled loop nests. The build (:mod:`tvm_mpq.compiler.build`)
applies, to every fused PrimFunc that MetaSchedule's database does not cover, the first
schedule rule of the target's list that accepts it (``tvm.s_tir.dlight.ApplyDefaultSchedule``).
Rules are ``dlight`` ``ScheduleRule`` objects; a module adds its rules for an architecture with::

    @register_rules("x86_64")
    def x86_rules(target: tvm.target.Target) -> list[ScheduleRule]:
        return [Int8Conv2d(), Fp32Conv2d(), ...]

Rules may rewrite the layout of constant weight buffers (``layout_free_buffers``): the build
splits those layout rewrites out (``SplitLayoutRewritePreproc``) and folds them into the
constants, so weights are prepacked once, at compile time.

A rule that raises declines (:func:`tagged` turns the exception into ``None``, logged): the
next rule of the list gets the function, and no rule ever fails a build.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import tvm

from tvm_mpq.kernels import vector_intrinsics  # noqa: F401  (marks nearbyint vectorizable: quantize epilogues)

LOG = logging.getLogger(__name__)
RuleFactory = Callable[[tvm.target.Target], list[Any]]
_RULES: dict[str, list[RuleFactory]] = {}


def register_rules(arch: str) -> Callable[[RuleFactory], RuleFactory]:
    """Decorator: ``factory(target) -> [ScheduleRule, ...]`` for targets of ``arch``
    (``x86_64``, ``aarch64`` or ``cuda``). Factories of one arch are tried in registration order."""

    def wrap(factory: RuleFactory) -> RuleFactory:
        _RULES.setdefault(arch, []).append(factory)
        return factory

    return wrap


def target_arch(target: tvm.target.Target) -> str:
    """``x86_64``, ``aarch64``, ``cuda`` (or the target kind) for a TVM target."""
    kind = str(target.kind.name)
    if kind != "llvm":
        return kind
    triple = str(target.attrs.get("mtriple", "") or "")
    if not triple:
        triple = str(tvm.get_global_func("target.llvm_get_system_triple")())
    return "aarch64" if triple.startswith(("aarch64", "arm64")) else "x86_64"


RULE_ATTR = "tvm_mpq.rule"
"""Root-block annotation naming the rule that scheduled a PrimFunc (read by :func:`rule_of`)."""

GENERIC_RULES = ("InjectiveCpu", "RowChainCpu", "ReductionCpu", "Reduction", "Matmul", "GEMV", "GeneralReduction", "Fallback")
"""Rules that are not tvm-mpq MAC kernels: :mod:`tvm_mpq.kernels.cpu_generic` and TVM's dlight
rules (CPU ``Reduction``; on CUDA, :mod:`tvm_mpq.kernels.cuda` appends TVM's GPU rules)."""


def activation_layout(target: tvm.target.Target) -> str:
    """The activation layout the target's kernels are written for: ``NHWC`` (channels-last,
    :mod:`tvm_mpq.kernels.cpu_mac`) on every CPU, ``NCHW`` elsewhere (CUDA: the implicit GEMMs
    of :mod:`tvm_mpq.kernels.cuda_mac` and TVM's dlight GPU rules)."""
    return "NHWC" if str(target.kind.name) == "llvm" else "NCHW"


def default_schedule_rules(target: tvm.target.Target) -> list[Any]:
    """The schedule rules registered for ``target``'s architecture, then, on CPUs, the generic
    rules for what no MAC rule takes (CUDA's list ends with TVM's GPU rules itself); each tags
    what it schedules (:func:`rule_of`) and declines where it raises."""
    _load_builtin_rules()
    rules: list[Any] = []
    for factory in _RULES.get(target_arch(target), []):
        rules.extend(factory(target))
    if str(target.kind.name) == "llvm":  # every CPU: what no MAC rule took gets a parallel, vectorized nest
        from tvm.s_tir.dlight.cpu import Reduction

        from .cpu_generic import InjectiveCpu, ReductionCpu, RowChainCpu

        rules.extend([InjectiveCpu(), RowChainCpu(), ReductionCpu(), Reduction()])  # (TVM's: softmax, layer norm)
    return [tagged(rule) for rule in rules]


def rule_for(func: tvm.tirx.PrimFunc, target: tvm.target.Target) -> str | None:
    """The name of the first of ``target``'s MAC rules that schedules ``func`` (``None``: none
    does; the generic rules are not counted); tests and benchmarks."""
    for rule in default_schedule_rules(target):
        if rule.name not in GENERIC_RULES and rule.apply(func, target, False) is not None:
            return rule.name
    return None


def tagged(rule: Any) -> Any:
    """``rule`` wrapped (:class:`TaggedRule`) so that the schedule it returns names it, and an
    exception it raises (TVM's GPU ``Matmul`` asserts on epilogues it cannot inline) declines."""
    from tvm.s_tir.dlight.base import ScheduleRule

    class TaggedRule(ScheduleRule):
        """A rule whose schedules carry its name on the root block (``.rule``: the rule)."""

        def __init__(self, inner: Any) -> None:
            self.rule = inner
            self.name = type(inner).__name__

        def apply(self, func, target, tunable):  # noqa: ANN001, ANN201 - dlight's signature
            try:
                sch = self.rule.apply(func, target, tunable)
            except Exception as err:  # noqa: BLE001 - a failing rule declines: the next one is tried
                name = func.attrs.get("global_symbol", "") if isinstance(func, tvm.tirx.PrimFunc) and func.attrs else ""
                LOG.info("rule %s declined %s: %s: %s", self.name, name, type(err).__name__,
                         str(err).splitlines()[0] if str(err) else "")
                if LOG.isEnabledFor(logging.DEBUG):  # debugging a rule: its traceback
                    raise
                return None
            if sch is None or isinstance(sch, list):
                return sch
            try:
                sch.annotate(sch.get_sblock("root"), RULE_ATTR, self.name)
            except Exception:  # noqa: BLE001 - no root block: the schedule stands untagged
                pass
            return sch

    return TaggedRule(rule)


def rule_of(func: tvm.tirx.PrimFunc) -> str | None:
    """The rule that scheduled ``func`` (``None``: no rule, or not a tagged schedule)."""
    from tvm_mpq.kernels.root_block import root_annotation

    value = root_annotation(func, RULE_ATTR)
    return str(value) if value is not None else None


def is_scheduled(func: tvm.tirx.PrimFunc) -> bool:
    """Whether ``func`` carries a schedule (a rule's, a tuning record's): ``tirx.is_scheduled``."""
    return func.attrs is not None and any(func.attrs.get(key) for key in ("tirx.is_scheduled", "tir.is_scheduled"))


def _load_builtin_rules() -> None:
    """Import the modules that register the built-in rules (import side effect only)."""
    import importlib

    for name in ("x86", "aarch64", "cuda"):
        try:
            importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise
