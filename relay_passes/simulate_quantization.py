"""SimulateQuantization: quantize-dequantize (QDQ) the operands of chosen MAC ops in Relax."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from tvm_mpq.quantization.quantizers import ActQParams, broadcast_scales


@dataclass(frozen=True)
class LayerQuantPlan:
    """How to simulate one MAC op (keyed by the Relax variable the op is bound to).

    ``weight_scales`` (per output channel, along ``channel_axis`` of the weight operand) with
    ``w_bits``, or ``weight_act`` for an activation x activation matmul whose second operand is
    quantized like an activation; ``data`` quantizes the first (activation) operand. ``None``
    leaves that operand in fp32.
    """

    data: ActQParams | None
    w_bits: int | None = None
    weight_scales: np.ndarray | None = None
    channel_axis: int = 0
    weight_act: ActQParams | None = None


def _const(value: float) -> relax.Constant:
    return relax.const(np.float32(value), "float32")


def fake_quant_activation_expr(bb: relax.BlockBuilder, x: relax.Expr, qp: ActQParams, name: str) -> relax.Expr:
    """``(clip(round(x / s) + zp, 0, 2^b-1) - zp) * s`` in float32 (see quantizers.py).

    New bindings are named ``name`` + suffix so they never collide with the model's names.
    """
    steps = [
        lambda v: relax.op.divide(v, _const(qp.scale)),
        relax.op.round,
        lambda v: relax.op.add(v, _const(qp.zero_point)),
        lambda v: relax.op.clip(v, 0.0, float(qp.qmax)),
        lambda v: relax.op.subtract(v, _const(qp.zero_point)),
        lambda v: relax.op.multiply(v, _const(qp.scale)),
    ]
    return _emit_chain(bb, x, steps, name)


def _emit_chain(bb: relax.BlockBuilder, x: relax.Expr, steps: list, name: str) -> relax.Expr:
    """Emit one binding per elementwise step, each with a unique explicit name.

    (A nested call would be normalized into bindings named ``lv...``, which can collide with
    the model's own names; passes downstream look variables up by name.)
    """
    for k, step in enumerate(steps):
        x = bb.emit(step(x), f"{name}{k}")
    return x


def fake_quant_weight_expr(bb: relax.BlockBuilder, w: relax.Expr, bits: int, scales: np.ndarray,
                           channel_axis: int, name: str) -> relax.Expr:
    """``clip(round(w / s_c), -qmax, qmax) * s_c`` with per-channel ``s_c``."""
    ndim = len(w.ty.shape)
    s = relax.const(broadcast_scales(scales.astype(np.float32), ndim, channel_axis))
    qmax = float(2 ** (bits - 1) - 1)
    steps = [
        lambda v: relax.op.divide(v, s),
        relax.op.round,
        lambda v: relax.op.clip(v, -qmax, qmax),
        lambda v: relax.op.multiply(v, s),
    ]
    return _emit_chain(bb, w, steps, name)


@relax.expr_functor.mutator
class _QDQRewriter(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, plans: dict[str, LayerQuantPlan]):
        super().__init__(mod)
        self.plans = plans
        self.applied: set[str] = set()

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        plan = self.plans.get(binding.var.name)
        if plan is None:
            super().visit_var_binding_(binding)
            return
        call = self.visit_expr(binding.value)
        data, weight = call.args[0], call.args[1]
        bb = self.builder_
        if plan.data is not None:
            data = fake_quant_activation_expr(bb, data, plan.data, f"mpq_{binding.var.name}_a")
        if plan.weight_scales is not None and plan.w_bits is not None:
            weight = fake_quant_weight_expr(bb, weight, plan.w_bits, plan.weight_scales, plan.channel_axis,
                                            f"mpq_{binding.var.name}_w")
        elif plan.weight_act is not None:
            weight = fake_quant_activation_expr(bb, weight, plan.weight_act, f"mpq_{binding.var.name}_b")
        new_call = relax.Call(call.op, [data, weight, *call.args[2:]], call.attrs, call.ty_args)
        if isinstance(binding.var, relax.DataflowVar):
            new_var = bb.emit(new_call, name_hint=binding.var.name)
        else:
            new_var = bb.emit_output(new_call, name_hint=binding.var.name)
        self.set_var_remap(binding.var, new_var)
        self.applied.add(binding.var.name)


@tvm.transform.module_pass(opt_level=0, name="SimulateQuantization")
class SimulateQuantization:
    """Insert QDQ on the operands of the MAC ops named in ``plans`` (fake quantization).

    Weights: symmetric per output channel with precomputed scales; activations: asymmetric per
    tensor from calibrated ranges; any bit-width 2..16. Ops not in ``plans`` are untouched.
    Every plan must match a binding of ``main`` (a KeyError otherwise: a wrong plan must never
    silently leave a layer in fp32).
    """

    def __init__(self, plans: dict[str, LayerQuantPlan]):
        self.plans = dict(plans)

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        rewriter = _QDQRewriter(mod, self.plans)
        gvar = mod.get_global_var("main")
        new_main = rewriter.visit_expr(mod["main"])
        missing = set(self.plans) - rewriter.applied
        if missing:
            raise KeyError(f"SimulateQuantization: no MAC op bound to {sorted(missing)[:5]}")
        rewriter.builder_.update_func(gvar, new_main)
        return rewriter.builder_.get()
