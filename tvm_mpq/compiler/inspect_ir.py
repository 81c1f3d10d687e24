"""What a lowered module computes in which precision: the checks behind "real integer kernels"."""

from __future__ import annotations

import sys
from collections import Counter
from typing import TextIO

import tvm
from tvm import relax

from relay_passes.precision_annotation import layer_annotations, relax_functions
from tvm_mpq.graph.layer_table import MAC_OPS, iter_bindings


def _dtype(expr: relax.Expr) -> str:
    return str(getattr(expr.ty, "dtype", "?"))


def mac_census(mod: tvm.IRModule) -> Counter:
    """MAC ops of every Relax function by ``data x weight -> accumulator`` dtypes, e.g.
    ``{"uint8 x int8 -> int32": 50}`` for a fully integer model, ``"float32 x float32 -> float32"``
    for an fp32 (or fake-quantized) one."""
    census: Counter = Counter()
    for _, func in relax_functions(mod):
        for binding in iter_bindings(func):
            value = binding.value
            if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and value.op.name in MAC_OPS:
                census[f"{_dtype(value.args[0])} x {_dtype(value.args[1])} -> {_dtype(binding.var)}"] += 1
    return census


def precision_summary(mod: tvm.IRModule) -> list[str]:
    """One line per annotated layer of ``mod``: stable name, precision, activation quantizer."""
    lines = []
    for name, annotation in layer_annotations(mod).items():
        act = "" if annotation.act is None else f"  act {annotation.act.describe()}"
        lines.append(f"{name}: {annotation.describe()}{act}")
    return lines


@tvm.instrument.pass_instrument
class PrintBefore:
    """Pass instrument: print the module (TVMScript) and its layers' precisions right before
    each run of the pass named ``pass_name`` (``tvm-mpq compile --print-ir``: the annotated
    module the lowering reads)."""

    def __init__(self, pass_name: str = "LowerToInteger", stream: TextIO | None = None):
        self.pass_name = pass_name
        self.stream = stream

    def run_before_pass(self, mod: tvm.IRModule, info: tvm.transform.PassInfo) -> None:
        if info.name != self.pass_name:
            return
        out = self.stream or sys.stdout
        print(f"# the module before {self.pass_name}", file=out)
        print(mod.script(show_meta=False), file=out)
        print(f"# layer precisions ({self.pass_name} reads them from the R.mpq.precision annotations):", file=out)
        for line in precision_summary(mod):
            print(f"#   {line}", file=out)
        out.flush()


def fuse(mod: tvm.IRModule) -> tvm.IRModule:
    """The module after TVM's legalization and operator fusion (what codegen will see)."""
    seq = tvm.transform.Sequential([relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
                                    relax.transform.FoldConstant(), relax.transform.FuseOps(),
                                    relax.transform.FuseTIR()])
    with tvm.transform.PassContext(opt_level=3):
        return seq(mod)


def kernel_table(fused: tvm.IRModule) -> list[tuple[str, list[str], str]]:
    """``(kernel name, input dtypes, output dtype)`` for every ``call_tir`` of ``main`` in order."""
    rows = []
    for binding in iter_bindings(fused["main"]):
        value = binding.value
        if isinstance(value, relax.Call) and getattr(value.op, "name", "") == "relax.call_tir":
            name = value.args[0].name_hint
            inputs = [_dtype(a) for a in value.args[1].fields]
            rows.append((name, inputs, _dtype(binding.var)))
    return rows


def fp32_tensors_between_int_kernels(fused: tvm.IRModule) -> int:
    """fp32 tensors written by one integer group (a fused kernel with int8 weights) and read by
    another: 0 means consecutive int8 groups hand each other uint8 codes."""
    int_group: dict = {}
    edges = []
    for binding in iter_bindings(fused["main"]):
        value = binding.value
        if isinstance(value, relax.Call) and getattr(value.op, "name", "") == "relax.call_tir":
            args = list(value.args[1].fields)
            int_group[binding.var] = any(_dtype(a) == "int8" for a in args)
            edges += [(arg, binding.var) for arg in args if isinstance(arg, relax.Var)]
    return sum(1 for src, dst in edges
               if int_group.get(src) and int_group.get(dst) and _dtype(src) == "float32")
