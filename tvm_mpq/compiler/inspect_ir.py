"""What a lowered module computes in which precision: the checks behind "real integer kernels"."""

from __future__ import annotations

from collections import Counter

import tvm
from tvm import relax

from tvm_mpq.graph.layer_table import MAC_OPS, iter_bindings


def _dtype(expr: relax.Expr) -> str:
    return str(getattr(expr.ty, "dtype", "?"))


def mac_census(mod: tvm.IRModule) -> Counter:
    """MAC ops of ``main`` by ``data x weight -> accumulator`` dtypes, e.g.
    ``{"uint8 x int8 -> int32": 50}`` for a fully integer model, ``"float32 x float32 -> float32"``
    for an fp32 (or fake-quantized) one."""
    census: Counter = Counter()
    for binding in iter_bindings(mod["main"]):
        value = binding.value
        if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and value.op.name in MAC_OPS:
            census[f"{_dtype(value.args[0])} x {_dtype(value.args[1])} -> {_dtype(binding.var)}"] += 1
    return census


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
