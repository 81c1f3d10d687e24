"""FusePadIntoMac: an int8 conv's zero-point padding joins the conv's kernel.

An int8 conv whose input quantizer has a non-zero zero point pads its uint8 codes with that
zero point (the code of 0.0), so the pad is a ``nn.pad`` op of its own in front of a conv with
no padding (:meth:`relay_passes.quantized_arith.IntegerArith.mac`); a float conv pads with 0.0,
which the conv op does itself. TVM's ``FuseOps`` fuses elementwise ops after a conv into it,
but not an injective op (the pad) before it: every such pad became a kernel of its own, one
more pass over the tensor and one more parallel launch (rapidocr-dbnet fully int8: 18 of
them). This pass runs between ``FuseOps`` and ``FuseTIR``: a pad ``call_tir`` whose result
only fused groups read, each feeding it to its conv (``op_pattern`` out-elementwise-fusable), is
moved into the group (a copy into each, where two convs read one pad), with the constants it
reads besides its input (e.g. the per-channel zero points of
:class:`~relay_passes.channel_pad.ChannelPad`), so ``FuseTIR`` builds
one PrimFunc in which the pad is the conv's data producer; the CPU kernel then reads it in place
(depthwise) or writes it as one parallel stage of the same kernel
(:func:`tvm_mpq.kernels.cpu_mac._prepare_data`), like the float conv's own padding.
Visits every Relax function of the module; usable in a ``Sequential``.
"""

from __future__ import annotations

import tvm
from tvm import relax, s_tir
from tvm.ir.expr import Constant

OUT_EWISE_FUSABLE = 4
"""``op_pattern`` of a PrimFunc computing a conv / matmul (TVM's ``kOutEWiseFusable``)."""
INJECTIVE = 2
"""``op_pattern`` of an injective PrimFunc such as a pad (TVM's ``kInjective``; elementwise 0 and
broadcast 1 below it)."""


def _function(mod: tvm.IRModule, gv: relax.Expr) -> tvm.ir.BaseFunc | None:
    """The function ``gv`` names in ``mod`` (None: not a global of it)."""
    return mod[gv] if isinstance(gv, relax.GlobalVar) and gv in mod.get_global_vars() else None


def _pattern(mod: tvm.IRModule, gv: relax.Expr) -> int | None:
    func = _function(mod, gv)
    if not isinstance(func, tvm.tirx.PrimFunc) or func.attrs is None or "op_pattern" not in func.attrs:
        return None
    return int(func.attrs["op_pattern"])


def _is_pad(mod: tvm.IRModule, gv: relax.Expr) -> bool:
    """An injective PrimFunc of one block storing ``if_then_else(in bounds, x[...], value)``:
    a constant pad (only a pad: a transpose inlined into a dot-product conv's reads would
    break its in-place 32-bit loads)."""
    pattern = _pattern(mod, gv)
    if pattern is None or pattern > INJECTIVE:  # (a pad of the last axis alone is annotated elementwise)
        return False
    sch = s_tir.Schedule(mod[gv])
    blocks = list(sch.get_child_blocks(sch.get_sblock("root")))
    if len(blocks) != 1:
        return False
    body = sch.get(blocks[0]).body
    return (isinstance(body, tvm.tirx.stmt.BufferStore) and isinstance(body.value, tvm.ir.expr.Call)
            and getattr(body.value.op, "name", "") == "prim.if_then_else")


def _call_tir_callee(expr: relax.Expr) -> relax.GlobalVar | None:
    if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name == "relax.call_tir":
        return expr.args[0]
    return None


def _is_group(mod: tvm.IRModule, gv: relax.Expr) -> bool:
    func = _function(mod, gv)
    return isinstance(func, relax.Function) and func.attrs is not None and bool(func.attrs.get("Primitive"))


def _feeds_a_mac(mod: tvm.IRModule, group: relax.Function, param: relax.Var) -> bool:
    """True when ``param`` of the fused ``group`` is read by the group's conv / matmul call_tir."""
    for block in group.body.blocks:
        for binding in block.bindings:
            callee = _call_tir_callee(binding.value)
            if callee is not None and _pattern(mod, callee) == OUT_EWISE_FUSABLE \
                    and any(a.same_as(param) for a in binding.value.args[1].fields):
                return True
    return False


@relax.expr_functor.mutator
class _PadMerger(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, func: relax.Function) -> None:
        super().__init__(mod)
        self.mod_ = mod
        self.pads: dict[relax.Var, relax.Call] = {}
        read_otherwise: set[relax.Var] = set()  # read by anything but a conv group's MAC data
        for block in func.body.blocks:
            for binding in block.bindings:
                value = binding.value
                operands = [value]
                if isinstance(value, relax.Call) and _is_group(mod, value.op):
                    group = mod[value.op]
                    operands = [arg for arg, param in zip(value.args, group.params)
                                if not (arg in self.pads and _feeds_a_mac(mod, group, param))]
                for operand in operands:
                    read_otherwise.update([operand] if isinstance(operand, relax.Var)
                                          else relax.analysis.free_vars(operand))
                callee = _call_tir_callee(value)
                if (callee is not None and _is_pad(mod, callee) and isinstance(binding.var, relax.DataflowVar)
                        and isinstance(value.args[1].fields[0], relax.Var)
                        and all(isinstance(a, Constant) for a in value.args[1].fields[1:])):
                    self.pads[binding.var] = value
        # every read of the pad is a conv group's data: each group gets a copy (one pad read by
        # two convs, as common-subexpression elimination leaves two equal zero-point pads)
        self.pads = {var: call for var, call in self.pads.items() if var not in read_otherwise}
        self.n_merged = 0

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        value = binding.value
        if isinstance(value, relax.Call) and _is_group(self.mod_, value.op):
            group = self.mod_[value.op]
            merged = [i for i, arg in enumerate(value.args)
                      if arg in self.pads and _feeds_a_mac(self.mod_, group, group.params[i])]
            if merged:
                new_call = self._merge(value, group, merged)
                self.set_var_remap(binding.var, self.builder_.emit(new_call, binding.var.name)
                                   if isinstance(binding.var, relax.DataflowVar)
                                   else self.builder_.emit_output(new_call, binding.var.name))
                return
        super().visit_var_binding_(binding)

    def _merge(self, call: relax.Call, group: relax.Function, merged: list[int]) -> relax.Call:
        """The group with each pad in ``merged`` (argument positions) moved inside it."""
        params, args, pad_bindings = [], [], []
        extra_params: list[relax.Var] = []
        extra_args: list[relax.Expr] = []
        for i, (param, arg) in enumerate(zip(group.params, call.args)):
            if i not in merged:
                params.append(param)
                args.append(self.visit_expr(arg))
                continue
            pad = self.pads[arg]
            source, *constants = pad.args[1].fields
            new_param = relax.Var(param.name + "_unpadded", source.ty)
            params.append(new_param)
            args.append(self.visit_expr(source))
            const_params = [relax.Var(f"{param.name}_pad_value{k}", c.ty) for k, c in enumerate(constants)]
            extra_params += const_params  # (a per-channel pad's zero points: relay_passes.channel_pad)
            extra_args += constants
            inner = relax.Call(pad.op, [pad.args[0], relax.Tuple([new_param, *const_params]), *pad.args[2:]],
                               pad.attrs, pad.ty_args)
            pad_bindings.append(relax.VarBinding(param, inner))
        blocks = list(group.body.blocks)
        first = blocks[0]
        blocks[0] = relax.DataflowBlock(pad_bindings + list(first.bindings)) if isinstance(first, relax.DataflowBlock) \
            else relax.BindingBlock(pad_bindings + list(first.bindings))
        body = relax.SeqExpr(blocks, group.body.body)
        func = relax.Function(params + extra_params, body, group.ret_ty, group.is_pure, group.attrs)
        gv = self.builder_.add_func(func, call.op.name_hint + "_padded")
        self.n_merged += len(merged)
        return relax.Call(gv, args + extra_args)


@tvm.transform.module_pass(opt_level=0, name="FusePadIntoMac")
class FusePadIntoMac:
    """Move a pad ``call_tir`` read only by fused conv groups into
    each of them (see the module docstring). Run after ``FuseOps``, before ``FuseTIR``."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        out = mod
        for gv, func in mod.functions_items():
            if not isinstance(func, relax.Function) or (func.attrs is not None and func.attrs.get("Primitive")):
                continue
            merger = _PadMerger(out, func)
            if not merger.pads:
                continue
            new_func = merger.visit_expr(func)
            if merger.n_merged:
                merger.builder_.update_func(gv, new_func)
                out = merger.builder_.get()
        return relax.transform.DeadCodeElimination()(out) if out is not mod else mod
