"""TVM's Relax ONNX importer, taught the one op our own ONNX rewrites emit that ONNX lacks, and
``Einsum`` as the Relax op.

:func:`~tvm_mpq.frontends.onnx_frontend.prepare_static` writes an LSTM / GRU / RNN over a long
sequence as its input projections and one ``Recurrence`` node of the ``ai.tvm_mpq`` domain
(:mod:`tvm_mpq.frontends.onnx_recurrent`). TVM's importer looks ops up in a fixed table, so this
module subclasses it (:class:`ONNXGraphImporter`): ``Recurrence`` becomes one ``call_tir`` of the
loop kernel (:func:`tvm_mpq.kernels.recurrence.recurrence_te`); ``Einsum`` becomes
``relax.einsum`` (TVM's importer emits TOPI's einsum as a ``call_tir`` at once, a scalar loop nest
no pass can see as a matrix product: :mod:`relay_passes.einsum_as_matmul` rewrites the Relax op);
``Dropout`` at inference is its input (:func:`_inference_dropout`); every other op is TVM's.
"""

from __future__ import annotations

import onnx
import tvm
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import ONNXGraphImporter, _get_convert_map, get_constant

from tvm_mpq.frontends.onnx_recurrent import LOOP_DOMAIN, LOOP_OP, loop_attributes
from tvm_mpq.kernels.recurrence import Activation, RecurrenceSpec, recurrence_te

OWN_OPS = (LOOP_OP,)


def unsupported_ops(model: onnx.ModelProto) -> set[str]:
    """The op types of ``model`` neither TVM's importer nor this one takes."""
    return _unsupported(model.graph)


def _unsupported(graph: onnx.GraphProto) -> set[str]:
    convert_map = _get_convert_map()
    return {node.op_type for node in graph.node if node.op_type not in convert_map
            and node.op_type not in ("If", "Constant") and not _is_own(node)}  # (TVM takes If and Constant itself)


def _is_own(node: onnx.NodeProto) -> bool:
    return node.domain == LOOP_DOMAIN and node.op_type in OWN_OPS


class _Importer(ONNXGraphImporter):
    """TVM's importer plus ``Recurrence``, with ``Einsum`` as the Relax op (module docstring)."""

    def __init__(self, *args, loops: dict[str, onnx.NodeProto], **kwargs):
        super().__init__(*args, **kwargs)
        self._loops = loops

    def _check_for_unsupported_ops(self, graph) -> None:
        unsupported = _unsupported(graph)
        if unsupported:
            raise tvm.error.OpNotImplemented(
                "The following operators are not supported for frontend ONNX: " + ", ".join(sorted(unsupported)))

    def _convert_operator(self, op_name, inputs, attrs, opset):
        if op_name == LOOP_OP:
            node = self._loops[attrs["tvm_custom"]["name"]]
            return _convert_recurrence(self.bb, list(inputs), loop_attributes(node))
        if op_name == "Dropout" and not _training(inputs, [self._nodes, self._params]):
            return _inference_dropout(self.bb, inputs[0], attrs["tvm_custom"]["num_outputs"])
        if op_name == "Einsum":
            equation = attrs["equation"]
            equation = equation.decode("utf-8") if isinstance(equation, bytes) else str(equation)
            return self.bb.normalize(relax.op.einsum(relax.Tuple(list(inputs)), equation))
        return super()._convert_operator(op_name, inputs, attrs, opset)


def _training(inputs: list, params: list) -> bool:
    """Whether a ``Dropout`` node's ``training_mode`` input (opset 12 on) may be true: absent or
    a constant false (an initializer included) is inference."""
    mode = inputs[2] if len(inputs) > 2 else None
    if mode is None:
        return False
    mode = get_constant(mode, params)
    if isinstance(mode, relax.Constant):
        return bool(mode.data.numpy().any())
    return True


def _inference_dropout(bb: relax.BlockBuilder, x: relax.Expr, num_outputs: int) -> relax.Expr:
    """``Dropout`` at inference: its input, and where the node names it, an all-true mask.

    TVM's importer writes ``relax.op.nn.dropout`` (a tuple of output and mask) that only
    legalization makes an identity: until then every pass sees an op it has no rule for, and the
    precision annotation put an fp32 island around it (a dequantize before and a quantize after:
    SFace's ``Dropout`` before its ``Flatten`` and ``Gemm``)."""
    if num_outputs < 2:
        return x
    return relax.Tuple([x, bb.normalize(relax.op.ones_like(x, "bool"))])


def _convert_recurrence(bb: relax.BlockBuilder, inputs: list, attrs: dict) -> relax.Expr:
    """One ``call_tir`` of the loop kernel over a ``Recurrence`` node's inputs."""
    inputs = inputs + [None] * (6 - len(inputs))
    x, r_t, h0, c0, peepholes, rb_h = inputs[:6]
    reverse = {"forward": (False,), "reverse": (True,), "bidirectional": (False, True)}[attrs["direction"]]
    activations = tuple(Activation(name, alpha, beta)
                        for name, alpha, beta in zip(attrs["activations"], attrs["alpha"], attrs["beta"]))
    spec = RecurrenceSpec(attrs["kind"], reverse, activations, attrs["clip"], bool(attrs["linear_before_reset"]))
    present = [value for value in (h0, c0, peepholes, rb_h) if value is not None]

    def kernel(x, r_t, *given):
        tensors = iter(given)
        h0_te, c0_te, peep_te, rb_h_te = (next(tensors) if value is not None else None
                                          for value in (h0, c0, peepholes, rb_h))
        return recurrence_te(x, r_t, spec, attrs["batch"], h0_te, c0_te, peep_te, rb_h_te)

    return bb.emit_te(kernel, x, r_t, *present, primfunc_name_hint=f"{attrs['kind'].lower()}_recurrence")


def import_onnx(model: onnx.ModelProto, shape_dict: dict[str, list[int]], dtype_dict: dict[str, str]) -> tvm.IRModule:
    """``tvm.relax.frontend.onnx.from_onnx(model, shape_dict, dtype_dict, keep_params_in_input=True)``
    with ``Recurrence`` nodes taken (module docstring)."""
    loops = {node.name: node for node in model.graph.node if _is_own(node)}
    importer = _Importer(shape_dict, dtype_dict, keep_params_in_input=True, sanitize=True, loops=loops)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    return importer.from_onnx(model.graph, opset)


__all__ = ["OWN_OPS", "import_onnx", "unsupported_ops"]
