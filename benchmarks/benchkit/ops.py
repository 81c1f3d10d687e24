"""Op-level benchmark cases: the distinct conv/dense shapes of a model, their weights and
quantizers, and the same op as a TVM Relax module (fp32; int8 as the precision pass emits it)
and as ONNX models for onnxruntime (fp32; QDQ int8)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class OpSpec:
    """One distinct MAC op shape of a model (NCHW data / OIHW weight; dense: [1, K] x [K, N])."""

    kind: str  # "conv2d" | "dense"
    data_shape: tuple[int, ...]
    weight_shape: tuple[int, ...]
    strides: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    groups: int = 1
    models: list[str] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)
    count: int = 0

    @property
    def key(self) -> tuple:
        return (self.kind, self.data_shape, self.weight_shape, self.strides, self.padding, self.groups)

    @property
    def category(self) -> str:
        if self.kind == "dense":
            return "dense"
        if self.groups > 1 and self.groups == self.data_shape[1]:
            return "depthwise"
        if self.weight_shape[2:] == (1, 1):
            return "pointwise"
        return "conv"

    @property
    def out_shape(self) -> tuple[int, ...]:
        if self.kind == "dense":
            return (self.data_shape[0], self.weight_shape[1])
        _, _, h, w = self.data_shape
        kh, kw = self.weight_shape[2:]
        t, l, b, r = self.padding
        return (1, self.weight_shape[0], (h + t + b - kh) // self.strides[0] + 1, (w + l + r - kw) // self.strides[1] + 1)

    @property
    def macs(self) -> int:
        if self.kind == "dense":
            return self.data_shape[0] * self.weight_shape[0] * self.weight_shape[1]
        o = self.out_shape
        return int(np.prod(o)) * int(np.prod(self.weight_shape[1:]))

    @property
    def label(self) -> str:
        if self.kind == "dense":
            return f"dense {self.weight_shape[0]}->{self.weight_shape[1]}"
        c, h = self.data_shape[1], self.data_shape[2]
        f, _, kh, kw = self.weight_shape
        s = f" s{self.strides[0]}" if self.strides[0] > 1 else ""
        p = f" p{self.padding[0]}" if any(self.padding) else ""
        dw = " dw" if self.category == "depthwise" else ""
        return f"conv{dw} {c}->{f} {kh}x{kw}{s}{p} @{h}"


def model_op_specs(graph, model: str) -> list[OpSpec]:
    """The conv2d / matmul ops of ``graph``'s main function (with their attributes)."""
    import tvm
    from tvm import relax

    from tvm_mpq.graph.layer_table import build_layer_table, iter_bindings

    names = {layer.var: layer.name for layer in build_layer_table(graph)}
    specs = []
    for b in iter_bindings(graph.mod["main"]):
        v = b.value
        if not (isinstance(v, relax.Call) and isinstance(v.op, tvm.ir.Op)):
            continue
        if v.op.name == "relax.nn.conv2d":
            a = v.attrs
            spec = OpSpec("conv2d", tuple(int(d) for d in v.args[0].ty.shape), tuple(int(d) for d in v.args[1].ty.shape),
                          tuple(int(s) for s in a.strides), tuple(int(p) for p in a.padding), int(a.groups))
            if any(int(d) != 1 for d in a.dilation) or str(a.data_layout) != "NCHW":
                continue
        elif v.op.name == "relax.matmul":
            ds, ws = [int(d) for d in v.args[0].ty.shape], [int(d) for d in v.args[1].ty.shape]
            if len(ds) != 2 or len(ws) != 2 or b.var.name not in names:
                continue  # activation x activation or batched matmul: not a dense layer
            spec = OpSpec("dense", tuple(ds), tuple(ws))
        else:
            continue
        spec.models, spec.layers, spec.count = [model], [names.get(b.var.name, b.var.name)], 1
        specs.append(spec)
    return specs


def distinct_specs(per_model: dict[str, list[OpSpec]], per_category: int | None) -> list[OpSpec]:
    """Distinct shapes over all models; ``per_category``: keep per model and category only the
    shapes with the most total MACs in the model (None: all)."""
    chosen: dict[tuple, OpSpec] = {}
    for model, specs in per_model.items():
        merged: dict[tuple, OpSpec] = {}
        for s in specs:
            if s.key in merged:
                merged[s.key].count += 1
                merged[s.key].layers += s.layers
            else:
                merged[s.key] = OpSpec(**{**s.__dict__, "models": [model], "layers": list(s.layers), "count": 1})
        keep = list(merged.values())
        if per_category is not None:
            by_cat: dict[str, list[OpSpec]] = {}
            for s in keep:
                by_cat.setdefault(s.category, []).append(s)
            keep = [s for cat in by_cat.values()
                    for s in sorted(cat, key=lambda s: -s.macs * s.count)[:per_category]]
        for s in keep:
            if s.key in chosen:
                chosen[s.key].models.append(model)
                chosen[s.key].count += s.count
                chosen[s.key].layers += s.layers
            else:
                chosen[s.key] = s
    order = {"conv": 0, "pointwise": 1, "depthwise": 2, "dense": 3}
    return sorted(chosen.values(), key=lambda s: (order[s.category], -s.macs))


def op_weights(spec: OpSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    fan_in = int(np.prod(spec.weight_shape[1:])) if spec.kind == "conv2d" else spec.weight_shape[0]
    w = (rng.standard_normal(spec.weight_shape) / np.sqrt(fan_in)).astype("float32")
    n_out = spec.weight_shape[0] if spec.kind == "conv2d" else spec.weight_shape[1]
    return w, (rng.standard_normal(n_out) * 0.1).astype("float32")


@dataclass
class OpCase:
    """Everything both runtimes need for one op: weights, quantizers, inputs."""

    spec: OpSpec
    w: np.ndarray
    bias: np.ndarray
    qp_in: object
    qp_out: object
    x_f32: np.ndarray
    x_u8: np.ndarray


def make_case(spec: OpSpec, seed: int = 0) -> OpCase:
    from tvm_mpq.quantization.quantizers import ActQParams

    rng = np.random.default_rng(seed)
    w, b = op_weights(spec, rng)
    image = spec.kind == "conv2d" and spec.data_shape[1] == 3
    qp_in = ActQParams(2.0 / 255 if image else 4.0 / 255, 128 if image else 0, 8)
    qp_out = ActQParams(6.0 / 255, 0, 8)
    x_u8 = rng.integers(0, 256, size=spec.data_shape).astype("uint8")
    x_f32 = ((x_u8.astype("float32") - qp_in.zero_point) * np.float32(qp_in.scale)).astype("float32")
    return OpCase(spec, w, b, qp_in, qp_out, x_f32, x_u8)


def _nhwc_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (shape[0], shape[2], shape[3], shape[1])


def channels_last_input(x: np.ndarray) -> np.ndarray:
    """An NCHW op input as the channels-last op module takes it."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if x.ndim == 4 else x


def tvm_fp32_module(case: OpCase, channels_last: bool = False):
    """``conv2d + bias + relu`` / ``matmul + bias``; ``channels_last``: the conv takes and gives
    NHWC tensors, as inside a model built for a channels-last target (no transposes left)."""
    from tvm import relax

    s = case.spec
    nhwc = channels_last and s.kind == "conv2d"
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(_nhwc_shape(s.data_shape) if nhwc else s.data_shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            data = bb.emit(relax.op.permute_dims(x, [0, 3, 1, 2])) if nhwc else x
            if s.kind == "conv2d":
                acc = bb.emit(relax.op.nn.conv2d(data, relax.const(case.w), strides=s.strides, padding=s.padding,
                                                 groups=s.groups))
                y = relax.op.nn.relu(relax.op.add(acc, relax.const(case.bias.reshape(1, -1, 1, 1))))
            else:
                y = relax.op.add(bb.emit(relax.op.matmul(data, relax.const(case.w))), relax.const(case.bias))
            if nhwc:
                y = relax.op.permute_dims(bb.emit(y), [0, 2, 3, 1])
            y = bb.emit_output(y)
        bb.emit_func_output(y)
    return bb.get()


def tvm_int8_module(case: OpCase, channels_last: bool = False):
    """The int8 op as :class:`relay_passes.lower_to_integer.LowerToInteger` emits it (its
    :class:`~relay_passes.quantized_arith.IntegerArith`): uint8 in, int32 accumulate, bias folded,
    epilogue requantized to uint8 (dense: dequantized fp32 logits); ``channels_last`` as in
    :func:`tvm_fp32_module`."""
    from tvm import relax

    from relay_passes.quantized_arith import IntegerArith
    from tvm_mpq.quantization.quantizers import weight_scales

    s = case.spec
    nhwc = channels_last and s.kind == "conv2d"
    arith = IntegerArith()
    bb = relax.BlockBuilder()
    x_in = relax.Var("x", relax.TensorType(_nhwc_shape(s.data_shape) if nhwc else s.data_shape, "uint8"))
    template_in = relax.Var("xf", relax.TensorType(s.data_shape, "float32"))
    if s.kind == "conv2d":
        template = relax.op.nn.conv2d(template_in, relax.const(case.w), strides=s.strides, padding=s.padding,
                                      groups=s.groups)
        axis = 0
    else:
        template = relax.op.matmul(template_in, relax.const(case.w))
        axis = 1
    with bb.function("main", [x_in]):
        with bb.dataflow():
            def emit(expr, name):
                return bb.emit(expr, name)

            x = emit(relax.op.permute_dims(x_in, [0, 3, 1, 2]), "x_nchw") if nhwc else x_in
            call = bb.normalize(template)
            acc = arith.mac(emit, call, x, case.qp_in, case.w, weight_scales(case.w, 8, axis), 8, axis, "mac")
            acc = arith.add_bias(emit, acc, case.bias, "mac")
            y = arith.acc_to_float(emit, acc, "mac")
            if s.kind == "conv2d":
                y = arith.quantize(emit, emit(relax.op.nn.relu(y), "relu"), case.qp_out, "out")
            if nhwc:
                y = emit(relax.op.permute_dims(y, [0, 2, 3, 1]), "y_nhwc")
            y = bb.emit_output(y)
        bb.emit_func_output(y)
    return bb.get()


def int8_weight_codes(case: OpCase) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(int8 weight, per-channel scales, int32 bias codes) exactly as IntegerArith makes them."""
    from tvm_mpq.quantization.quantizers import broadcast_scales, weight_scales

    axis = 0 if case.spec.kind == "conv2d" else 1
    scales = weight_scales(case.w, 8, axis)
    w_q = np.clip(np.round(case.w / broadcast_scales(scales, case.w.ndim, axis)), -127, 127).astype(np.int8)
    acc_scale = (np.float32(case.qp_in.scale) * scales).astype(np.float32)
    b_q = np.round(case.bias.astype(np.float64) / acc_scale.astype(np.float64)).astype(np.int32)
    return w_q, scales, b_q


ONNX_OPSET = 17


def ort_models(case: OpCase):
    """(fp32 ONNX model, QDQ int8 ONNX model) of the op."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    s = case.spec
    out = list(s.out_shape)
    if s.kind == "conv2d":
        attrs = {"strides": list(s.strides), "pads": [s.padding[0], s.padding[1], s.padding[2], s.padding[3]],
                 "group": s.groups, "kernel_shape": list(s.weight_shape[2:])}
        w_onnx = case.w
    else:
        attrs = {"transB": 1}
        w_onnx = np.ascontiguousarray(case.w.T)  # [N, K]
    op = "Conv" if s.kind == "conv2d" else "Gemm"

    def model(nodes, inits, in_type, out_type, name):
        g = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", in_type, list(s.data_shape))],
                              [helper.make_tensor_value_info("y", out_type, out)], inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])
        m.ir_version = 8
        onnx.checker.check_model(m)
        return m

    if s.kind == "conv2d":
        fp32_nodes = [helper.make_node(op, ["x", "w", "b"], ["acc"], **attrs), helper.make_node("Relu", ["acc"], ["y"])]
    else:
        fp32_nodes = [helper.make_node(op, ["x", "w", "b"], ["y"], **attrs)]
    fp32 = model(fp32_nodes, [numpy_helper.from_array(w_onnx, "w"), numpy_helper.from_array(case.bias, "b")],
                 TensorProto.FLOAT, TensorProto.FLOAT, "fp32")

    w_q, w_scales, b_q = int8_weight_codes(case)
    w_q_onnx = w_q if s.kind == "conv2d" else np.ascontiguousarray(w_q.T)
    acc_scale = (np.float32(case.qp_in.scale) * w_scales).astype(np.float32)
    inits = [numpy_helper.from_array(w_q_onnx, "w_q"), numpy_helper.from_array(w_scales, "w_s"),
             numpy_helper.from_array(np.zeros_like(w_scales, dtype=np.int8), "w_zp"),
             numpy_helper.from_array(b_q, "b_q"), numpy_helper.from_array(acc_scale, "b_s"),
             numpy_helper.from_array(np.zeros_like(b_q), "b_zp"),
             numpy_helper.from_array(np.array(case.qp_in.scale, np.float32), "x_s"),
             numpy_helper.from_array(np.array(case.qp_in.zero_point, np.uint8), "x_zp"),
             numpy_helper.from_array(np.array(case.qp_out.scale, np.float32), "y_s"),
             numpy_helper.from_array(np.array(case.qp_out.zero_point, np.uint8), "y_zp")]
    nodes = [helper.make_node("DequantizeLinear", ["x", "x_s", "x_zp"], ["x_dq"]),
             helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_zp"], ["w_dq"], axis=0),
             helper.make_node("DequantizeLinear", ["b_q", "b_s", "b_zp"], ["b_dq"], axis=0)]
    if s.kind == "conv2d":
        nodes += [helper.make_node(op, ["x_dq", "w_dq", "b_dq"], ["acc"], **attrs),
                  helper.make_node("Relu", ["acc"], ["r"]),
                  helper.make_node("QuantizeLinear", ["r", "y_s", "y_zp"], ["y"])]
        out_type = TensorProto.UINT8
    else:
        nodes += [helper.make_node(op, ["x_dq", "w_dq", "b_dq"], ["y"], **attrs)]
        out_type = TensorProto.FLOAT
    qdq = model(nodes, inits, TensorProto.UINT8, out_type, "qdq")
    return fp32, qdq
