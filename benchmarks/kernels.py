"""Kernel benchmark on the local x86 CPU: TVM fp32 vs int8 (untuned / kernel rules / tuned) vs onnxruntime.

Two parts, both on this machine's CPU with the same thread count for TVM and onnxruntime
(``--threads``, default all cores: ``TVM_NUM_THREADS`` and ORT ``intra_op_num_threads``):

1. **Op level.** The distinct conv2d / depthwise conv2d / dense shapes of the models' layer
   tables (default: per model and category -- conv kxk, pointwise 1x1, depthwise, dense -- the
   ``--shapes`` shapes with the most MACs in the model; ``--all-shapes``: every distinct shape).
   Each shape is timed

   * fp32 on TVM: ``conv2d + bias + relu`` / ``matmul + bias``;
   * int8 on TVM as the product lowers it (``relay_passes.quantized_arith.IntegerArith``, the
     precision pass's arithmetic): uint8 x int8 -> int32 (zero-point padding, bias folded into
     the accumulator), requantize epilogue ``* s -> relu -> quantize -> uint8`` (dense: the
     classifier's dequantized fp32 logits);

   each built (a) untuned (``TuningOptions(kernels=False)``: TVM's default loops), (b) with our
   kernel rules (the default build, :mod:`tvm_mpq.kernels.cpu_mac`), (c) with ``--tune-trials N > 0``
   MetaSchedule-tuned without our rules (``kernels=False, trials=N``: our rules vs MetaSchedule);
   and on onnxruntime: fp32 ``Conv+Relu`` / ``Gemm``, and the QDQ int8 version (uint8 input ->
   ``DequantizeLinear`` -> op with per-channel int8 ``DequantizeLinear`` weights and int32 bias ->
   ``Relu -> QuantizeLinear`` -> uint8), which onnxruntime fuses into ``QLinearConv`` / ``QGemm``
   (the fused op types are recorded). Input zero point 0 (post-ReLU activations), 128 for a
   3-channel image input.

2. **Whole model** (``--models``, default resnet18 and efficientnet-lite0): the precision config
   for each BOPs reduction rate (``--rates``, default 0,25,50,75,100: fp32 ... fully int8;
   ``config_for_rate`` with the QuantuneV2 sensitivity on ``--calib-size`` samples, as
   ``tvm-mpq compile --rate`` makes it), compiled (stage A->C) untuned and with the kernel rules
   (and, with ``--tune-trials N``, rules + MetaSchedule for the kernels no rule covers, which is
   ``tvm-mpq compile --tune-trials N``), next to onnxruntime on the model's fp32 ONNX (rate 0) and
   on the exported QDQ ONNX of the same config (:mod:`tvm_mpq.export`). Whether latency falls
   monotonically with the rate is checked per build.

Timing: TVM with the VM's ``time_evaluator``, onnxruntime with the same loop in Python
(``perf_counter``): after a warm-up, ``number`` runs per repeat (each repeat at least
``--min-repeat-ms``), ``--repeat`` repeats per op / ``--model-repeat`` per model (fewer, >= 2,
when a slow untuned build would exceed ``--max-seconds`` per measurement); the median of the
per-repeat means is reported. Untuned and rule builds use an empty tuning database, so no
MetaSchedule record leaks into them; tuned builds use the persistent per-target database
(``--tuning-root``, default the product's ``~/.cache/tvm-mpq/tuning``), so a rerun reuses records.
A build or export that fails is recorded (``error``; ``err`` in the tables) and the run goes on.

Durations measured on the 2-core development machine (AMD EPYC znver3, under load):

    python benchmarks/kernels.py                 # defaults: ~12-15 min (op level 7 of 45 shapes
                                                 # ~1 min; per model ~1.5 min analysis + ~45 s per rate)
    python benchmarks/kernels.py --models mtcnn-rnet --shapes 2 --repeat 2   # smoke test, ~2 min
    python benchmarks/kernels.py --all-shapes --repeat 10 --model-repeat 5   # all 45 shapes: ~25-30 min
    python benchmarks/kernels.py --tune-trials 64  # + MetaSchedule: 2 tasks per op shape + the model
                                                 # kernels no rule covers; each task took 4-5 min on the
                                                 # loaded 2-core machine even at 2 trials (builder and
                                                 # runner start-up): ~1 h+ for the default shapes, many
                                                 # hours with --all-shapes; the persistent database
                                                 # makes reruns cheap

Writes ``out/bench/kernels/report.json`` (all numbers + machine info), ``report.md`` (the tables)
and ``latency_vs_rate.png`` (whole-model latency vs achieved BOPs reduction rate per model and build).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f}s] {msg}", flush=True)


# ---------------------------------------------------------------------------------- op shapes
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


# ---------------------------------------------------------------------------------- op modules
def _weights(spec: OpSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
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
    w, b = _weights(spec, rng)
    image = spec.kind == "conv2d" and spec.data_shape[1] == 3
    qp_in = ActQParams(2.0 / 255 if image else 4.0 / 255, 128 if image else 0, 8)
    qp_out = ActQParams(6.0 / 255, 0, 8)
    x_u8 = rng.integers(0, 256, size=spec.data_shape).astype("uint8")
    x_f32 = ((x_u8.astype("float32") - qp_in.zero_point) * np.float32(qp_in.scale)).astype("float32")
    return OpCase(spec, w, b, qp_in, qp_out, x_f32, x_u8)


def tvm_fp32_module(case: OpCase):
    from tvm import relax

    s = case.spec
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(s.data_shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            if s.kind == "conv2d":
                acc = bb.emit(relax.op.nn.conv2d(x, relax.const(case.w), strides=s.strides, padding=s.padding,
                                                 groups=s.groups))
                y = relax.op.nn.relu(relax.op.add(acc, relax.const(case.bias.reshape(1, -1, 1, 1))))
            else:
                y = relax.op.add(bb.emit(relax.op.matmul(x, relax.const(case.w))), relax.const(case.bias))
            y = bb.emit_output(y)
        bb.emit_func_output(y)
    return bb.get()


def tvm_int8_module(case: OpCase):
    """The int8 op as :class:`relay_passes.lower_to_integer.LowerToInteger` emits it (its
    :class:`~relay_passes.quantized_arith.IntegerArith`): uint8 in, int32 accumulate, bias folded,
    epilogue requantized to uint8 (dense: dequantized fp32 logits)."""
    from tvm import relax

    from relay_passes.quantized_arith import IntegerArith

    s = case.spec
    arith = IntegerArith()
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(s.data_shape, "uint8"))
    template_in = relax.Var("xf", relax.TensorType(s.data_shape, "float32"))
    if s.kind == "conv2d":
        template = relax.op.nn.conv2d(template_in, relax.const(case.w), strides=s.strides, padding=s.padding,
                                      groups=s.groups)
        axis = 0
    else:
        template = relax.op.matmul(template_in, relax.const(case.w))
        axis = 1
    with bb.function("main", [x]):
        with bb.dataflow():
            def emit(expr, name):
                return bb.emit(expr, name)

            call = bb.normalize(template)
            acc = arith.mac(emit, call, x, case.qp_in, case.w, 8, axis, "mac")
            acc = arith.add_bias(emit, acc, case.bias, "mac")
            y = arith.acc_to_float(emit, acc, "mac")
            if s.kind == "conv2d":
                y = arith.quantize(emit, emit(relax.op.nn.relu(y), "relu"), case.qp_out, "out")
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


# ---------------------------------------------------------------------------------- onnx ops
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


# ---------------------------------------------------------------------------------- timing
@dataclass
class Timing:
    """``repeat`` measurements of ``number`` runs each, ``number`` chosen so that one lasts at
    least ``min_repeat_ms``; ``repeat`` shrinks (to no fewer than 2) when the measurements of a
    slow (untuned) build would take more than ``max_seconds``."""

    repeat: int
    min_repeat_ms: float
    max_seconds: float = 30.0

    def plan(self, one_s: float) -> tuple[int, int]:
        """(number, repeat) for a run that takes ``one_s`` seconds."""
        one_s = max(one_s, 1e-7)
        number = max(1, int(np.ceil(self.min_repeat_ms / 1e3 / one_s)))
        repeat = max(min(2, self.repeat), min(self.repeat, int(self.max_seconds / (number * one_s))))
        return number, repeat


def _stats(per_run_s: list[float], number: int) -> dict:
    ms = sorted(t * 1e3 for t in per_run_s)
    return {"median_ms": statistics.median(ms), "min_ms": ms[0], "max_ms": ms[-1], "repeats": len(ms), "number": number}


def time_tvm(executable, inputs: list[np.ndarray], timing: Timing) -> dict:
    import tvm
    from tvm import relax

    dev = tvm.cpu()
    vm = relax.VirtualMachine(executable, dev)
    args = [tvm.runtime.tensor(np.ascontiguousarray(x), dev) for x in inputs]
    start = time.perf_counter()
    vm["main"](*args)  # warm-up + estimate
    one = time.perf_counter() - start
    number, repeat = timing.plan(one)
    res = vm.time_evaluator("main", dev, number=number, repeat=repeat)(*args)
    return _stats(list(res.results), number)


def ort_session(model, threads: int, optimized_path: Path | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if optimized_path is not None:
        opts.optimized_model_filepath = str(optimized_path)
    data = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def time_ort(sess, feed: dict[str, np.ndarray], timing: Timing) -> dict:
    sess.run(None, feed)
    start = time.perf_counter()
    sess.run(None, feed)
    number, repeat = timing.plan(time.perf_counter() - start)
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            sess.run(None, feed)
        runs.append((time.perf_counter() - start) / number)
    return _stats(runs, number)


def ort_fused_ops(model, threads: int) -> list[str]:
    """The op types onnxruntime runs after its graph optimizations (e.g. QLinearConv)."""
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "opt.onnx"
        ort_session(model, threads, path)
        return [n.op_type for n in onnx.load(str(path)).graph.node]


# ---------------------------------------------------------------------------------- builds
@dataclass
class Build:
    name: str
    options: object  # TuningOptions


def builds(tune_trials: int, tuning_root: Path, empty_root: Path, op_level: bool) -> list[Build]:
    from tvm_mpq.compiler.build import TuningOptions

    out = [Build("untuned", TuningOptions(trials=0, root=empty_root, kernels=False, verbose=False)),
           Build("rules", TuningOptions(trials=0, root=empty_root, kernels=True, verbose=False))]
    if tune_trials > 0:
        if op_level:  # MetaSchedule alone against our rules
            out.append(Build("tuned", TuningOptions(trials=tune_trials, root=tuning_root, kernels=False, verbose=True)))
        else:  # the product's --tune-trials: rules, MetaSchedule for the rest
            out.append(Build("rules+tuned", TuningOptions(trials=tune_trials, root=tuning_root, kernels=True,
                                                          verbose=True)))
    return out


def rules_fired(mod, target) -> list[str]:
    """Which kernel rule schedules each MAC PrimFunc of ``mod`` (None: TVM's default)."""
    import tvm

    from tvm_mpq.compiler.build import MAC_TASK_MARKERS, fuse
    from tvm_mpq.kernels.cpu_mac import rule_for

    with target, tvm.transform.PassContext(opt_level=3):
        fused = fuse(mod, target)
    return sorted(str(rule_for(f, target)) for gv, f in fused.functions_items()
                  if isinstance(f, tvm.tirx.PrimFunc) and any(m in gv.name_hint for m in MAC_TASK_MARKERS))


# ---------------------------------------------------------------------------------- part 1
def bench_ops(specs: list[OpSpec], target, args, build_list: list[Build]) -> list[dict]:
    from tvm_mpq.compiler.build import build_module

    timing = Timing(args.repeat, args.min_repeat_ms, args.max_seconds)
    rows = []
    for i, spec in enumerate(specs):
        case = make_case(spec, seed=i)
        row = {"label": spec.label, "category": spec.category, "kind": spec.kind, "data_shape": spec.data_shape,
               "weight_shape": spec.weight_shape, "strides": spec.strides, "padding": spec.padding,
               "groups": spec.groups, "macs": spec.macs, "models": spec.models, "layers": spec.layers[:4],
               "count": spec.count, "tvm": {}, "ort": {}, "rules_fired": {}}
        log(f"op {i + 1}/{len(specs)}: {spec.label} ({spec.macs / 1e6:.1f} MMACs; {', '.join(spec.models)} x{spec.count})")
        for prec, mod, x in (("fp32", tvm_fp32_module(case), case.x_f32), ("int8", tvm_int8_module(case), case.x_u8)):
            row["rules_fired"][prec] = rules_fired(mod, target)
            for b in build_list:
                start = time.perf_counter()
                try:
                    exe, info = build_module(mod, target, b.options)
                    build_s = time.perf_counter() - start
                    t = time_tvm(exe, [x], timing)
                except Exception as err:  # keep going: one failing build should not lose the run
                    log(f"  tvm {prec} {b.name}: FAILED {type(err).__name__}: {str(err).splitlines()[0][:200]}")
                    row["tvm"][f"{prec}/{b.name}"] = {"error": str(err).splitlines()[0][:300]}
                    continue
                t.update(build_seconds=round(build_s, 1), scheduled_by=info.get("scheduled_by"))
                row["tvm"][f"{prec}/{b.name}"] = t
                log(f"  tvm {prec:4s} {b.name:8s} {t['median_ms']:9.3f} ms  (build {build_s:.1f} s)")
        fp32_onnx, qdq_onnx = ort_models(case)
        for prec, model, x in (("fp32", fp32_onnx, case.x_f32), ("int8", qdq_onnx, case.x_u8)):
            try:
                sess = ort_session(model, args.threads)
                t = time_ort(sess, {"x": x}, timing)
                t["ops"] = ort_fused_ops(model, args.threads)
            except Exception as err:
                log(f"  ort {prec}: FAILED {type(err).__name__}: {str(err).splitlines()[0][:200]}")
                row["ort"][prec] = {"error": str(err).splitlines()[0][:300]}
                continue
            row["ort"][prec] = t
            log(f"  ort {prec:4s}          {t['median_ms']:9.3f} ms  ({'+'.join(t['ops'])})")
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------- part 2
def bench_models(models: list[str], rates: list[float], target, args, build_list: list[Build]) -> list[dict]:
    from tvm_mpq import zoo
    from tvm_mpq.calibration import CalibrationCache
    from tvm_mpq.compiler import compile_model
    from tvm_mpq.compiler.validate import keep_unsupported_fp32
    from tvm_mpq.config.for_rate import config_for_rate
    from tvm_mpq.export import build_qdq_onnx
    from tvm_mpq.export.fp32_onnx import input_feed_names
    from tvm_mpq.graph import build_layer_table

    timing = Timing(args.model_repeat, args.min_repeat_ms, args.max_seconds)
    results = []
    for name in models:
        graph, fp32_model = _load(name)
        table = build_layer_table(graph)
        feeds = zoo.get(name).calibration(args.calib_size) if name in zoo.names() else None
        if feeds is None:
            raise SystemExit(f"{name}: whole-model part needs a zoo model (calibration data)")
        feed = feeds[0]
        inputs = [feed[s.name] for s in graph.inputs]
        log(f"{name}: {len(table)} MAC layers; analysis ({args.method}) on {len(feeds)} samples")
        cache, report = CalibrationCache(), None
        result = {"model": name, "points": [], "method": args.method, "calib_size": len(feeds)}
        onnx_names = input_feed_names(fp32_model)
        ort_feed = {n: feed[s.name] for n, s in zip(onnx_names, graph.inputs)}
        for rate in rates:
            start = time.perf_counter()
            config, report = config_for_rate(graph, feeds, rate, args.method, cache=cache, report=report)
            keep_unsupported_fp32(config, table)
            achieved = float(config.provenance["bops_reduction_rate"])
            point = {"requested_rate": rate, "bops_reduction_rate": round(achieved, 2),
                     "bops_ratio": round(float(config.provenance["bops_ratio"]), 4),
                     "fp32_layers": len(config.fp32_layers()), "int8_layers": len(table) - len(config.fp32_layers()),
                     "tvm": {}, "ort": {}}
            log(f"{name} rate {rate:g}: achieved {achieved:.1f}%, {point['int8_layers']} int8 / "
                f"{point['fp32_layers']} fp32 layers (config {time.perf_counter() - start:.1f} s)")
            for b in build_list:
                start = time.perf_counter()
                try:
                    cm = compile_model(graph, config, target, tuning=b.options)
                    build_s = time.perf_counter() - start
                    t = time_tvm(cm.executable, inputs, timing)
                except Exception as err:
                    log(f"  tvm {b.name}: FAILED {type(err).__name__}: {str(err).splitlines()[0][:200]}")
                    point["tvm"][b.name] = {"error": str(err).splitlines()[0][:300]}
                    continue
                t.update(build_seconds=round(build_s, 1), n_qdq=cm.n_qdq, scheduled_by=cm.stats["build"].get("scheduled_by"))
                if "tuning" in cm.stats["build"]:
                    t["tuning"] = cm.stats["build"]["tuning"]
                point["tvm"][b.name] = t
                log(f"  tvm {b.name:11s} {t['median_ms']:9.2f} ms  (build {build_s:.1f} s, {t['scheduled_by']})")
            try:
                if point["int8_layers"] == 0:
                    ort_model, kind = fp32_model, "fp32 onnx"
                else:
                    export = build_qdq_onnx(graph, config, fp32_model)
                    ort_model, kind = export.model, "qdq onnx"
                    if args.save_onnx:
                        export.save(args.out / "onnx" / f"{name}_rate{rate:g}.onnx")
                sess = ort_session(ort_model, args.threads)
                t = time_ort(sess, ort_feed, timing)
                t["model"] = kind
                point["ort"] = t
                log(f"  ort ({kind})  {t['median_ms']:9.2f} ms")
            except Exception as err:
                log(f"  ort: FAILED {type(err).__name__}: {str(err).splitlines()[0][:200]}")
                point["ort"] = {"error": str(err).splitlines()[0][:300]}
            result["points"].append(point)
        result["monotonic"] = monotonic(result["points"], [b.name for b in build_list] + ["ort"], args.tolerance)
        for build, m in result["monotonic"].items():
            log(f"{name} {build}: latency {monotonic_text(m)}")
        results.append(result)
    return results


_LOADED: dict = {}


def _load(name: str):
    """(stage-A graph, fp32 ONNX) of a model spec, loaded once."""
    from tvm_mpq.export.fp32_onnx import load_with_source

    if name not in _LOADED:
        _LOADED[name] = load_with_source(name)
    return _LOADED[name]


def _latency(point: dict, build: str) -> float | None:
    t = point["ort"] if build == "ort" else point["tvm"].get(build, {})
    return t.get("median_ms")


def monotonic(points: list[dict], build_names: list[str], tolerance_pct: float = 5.0) -> dict:
    """Per build: does latency fall as the achieved rate rises? Points with the same achieved
    rate (the same config: requested rates that allocate alike) are one point, their best time.
    ``violations``: every rise; ``monotonic_within_tolerance``: no rise above ``tolerance_pct``."""
    out = {}
    for build in build_names:
        best: dict[float, float] = {}
        for p in points:
            t = _latency(p, build)
            if t is not None:
                r = round(p["bops_reduction_rate"], 1)
                best[r] = min(t, best.get(r, t))
        series = sorted(best.items())
        rises = [(r0, t0, r1, t1) for (r0, t0), (r1, t1) in zip(series, series[1:]) if t1 > t0]
        out[build] = {"monotonic": not rises and len(series) > 1,
                      "monotonic_within_tolerance": len(series) > 1
                      and all(100 * (t1 / t0 - 1) <= tolerance_pct for _, t0, _, t1 in rises),
                      "tolerance_pct": tolerance_pct, "distinct_rates": len(series),
                      "violations": [f"{r0:g}% {t0:.2f} ms -> {r1:g}% {t1:.2f} ms (+{100 * (t1 / t0 - 1):.1f}%)"
                                     for r0, t0, r1, t1 in rises]}
    return out


def monotonic_text(m: dict) -> str:
    if m["distinct_rates"] < 2:
        return "fewer than two distinct achieved rates: nothing to check"
    if m["monotonic"]:
        return f"falls monotonically with the rate ({m['distinct_rates']} distinct achieved rates)"
    verdict = (f"falls monotonically within the {m['tolerance_pct']:g}% noise tolerance"
               if m["monotonic_within_tolerance"] else "does NOT fall monotonically with the rate")
    return f"{verdict}: " + "; ".join(m["violations"])


# ---------------------------------------------------------------------------------- report
def machine_info(threads: int, target) -> dict:
    import onnxruntime as ort
    import tvm

    cpu, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not cpu:
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    cpu = cpu or platform.processor() or "unknown"
    return {"cpu": cpu, "machine": platform.machine(), "cores": os.cpu_count(), "threads": threads,
            "flags": {f: f in flags for f in ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni")},
            "llvm_mcpu": str(target.attrs.get("mcpu", "generic")), "target": str(target),
            "tvm_version": tvm.__version__, "onnxruntime_version": ort.__version__, "python": sys.version.split()[0],
            "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def _ms(t: dict | None) -> str:
    if not t or "median_ms" not in t:
        return "err" if t else "-"
    v = t["median_ms"]
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


def _ratio(a: dict | None, b: dict | None) -> str:
    if not a or not b or "median_ms" not in a or "median_ms" not in b:
        return "-"
    return f"{a['median_ms'] / b['median_ms']:.2f}"


def ops_markdown(rows: list[dict], build_names: list[str]) -> list[str]:
    """One row per op shape: ms per build and runtime, then fp32/int8 and TVM/ORT ratios
    (for the rules build, and the tuned build where there is one)."""
    compared = [b for b in ("rules", "tuned") if b in build_names]
    head = ["op", "MMACs"]
    for prec in ("fp32", "int8"):
        head += [f"TVM {prec} {b}" for b in build_names] + [f"ORT {prec}"]
    for b in compared:
        head += [f"fp32/int8 TVM {b}"]
    head += ["fp32/int8 ORT"]
    for b in compared:
        head += [f"TVM {b}/ORT fp32", f"TVM {b}/ORT int8"]
    head += ["rule fp32 / int8", "ORT int8 kernels"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        tvm, ort = r["tvm"], r["ort"]
        cells = [r["label"], f"{r['macs'] / 1e6:.1f}"]
        for prec in ("fp32", "int8"):
            cells += [_ms(tvm.get(f"{prec}/{b}")) for b in build_names] + [_ms(ort.get(prec))]
        cells += [_ratio(tvm.get(f"fp32/{b}"), tvm.get(f"int8/{b}")) for b in compared]
        cells += [_ratio(ort.get("fp32"), ort.get("int8"))]
        for b in compared:
            cells += [_ratio(tvm.get(f"fp32/{b}"), ort.get("fp32")), _ratio(tvm.get(f"int8/{b}"), ort.get("int8"))]
        rules = [",".join(sorted(set(r["rules_fired"].get(p, [])))) or "-" for p in ("fp32", "int8")]
        cells += [" / ".join(rules), "+".join(ort.get("int8", {}).get("ops", [])) or "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def models_markdown(results: list[dict], build_names: list[str]) -> list[str]:
    lines = []
    for res in results:
        head = ["rate req.", "achieved", "int8 / fp32 layers"] + [f"TVM {b} ms" for b in build_names] + \
               ["ORT ms", "ORT model", "TVM rules / ORT"]
        lines += [f"### {res['model']} ({res['method']} sensitivity, {res['calib_size']} calibration samples)", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for p in res["points"]:
            cells = [f"{p['requested_rate']:g}", f"{p['bops_reduction_rate']:.1f}", f"{p['int8_layers']} / {p['fp32_layers']}"]
            cells += [_ms(p["tvm"].get(b)) for b in build_names]
            cells += [_ms(p["ort"]), p["ort"].get("model", "-"), _ratio(p["tvm"].get("rules"), p["ort"])]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        for build, m in res["monotonic"].items():
            lines.append(f"- {build}: latency {monotonic_text(m)}")
        for p in res["points"]:
            for build, t in [*p["tvm"].items(), ("ort", p["ort"])]:
                if isinstance(t, dict) and "error" in t:
                    lines.append(f"- error, rate {p['requested_rate']:g}, {build}: {t['error']}")
        lines.append("")
    return lines


def markdown(report: dict) -> str:
    m = report["machine"]
    flags = ", ".join(f for f, on in m["flags"].items() if on) or "none"
    lines = ["# Kernel benchmark: TVM fp32 vs int8 vs onnxruntime (local CPU)", "",
             f"CPU: {m['cpu']} ({m['machine']}, {m['cores']} cores; LLVM mcpu {m['llvm_mcpu']}; flags: {flags}); "
             f"threads: {m['threads']}; TVM {m['tvm_version']}, onnxruntime {m['onnxruntime_version']}; "
             f"load average at start {m['load_average_at_start']}.", "",
             "Latency: median of per-repeat means (TVM `time_evaluator`, ORT the same loop in Python). "
             "untuned: TVM's default schedules; rules: tvm_mpq.kernels; tuned: MetaSchedule "
             f"({report['options']['tune_trials']} trials/task).", ""]
    if report.get("ops"):
        lines += ["## Op level (fp32: conv+bias+relu / matmul+bias; int8: uint8 x int8 -> int32 + requantize "
                  "epilogue, as the precision pass lowers it; ORT int8: QDQ)", ""]
        lines += ops_markdown(report["ops"], report["op_builds"]) + [""]
    if report.get("models"):
        lines += ["## Whole model (stage A->C; ORT: fp32 ONNX at rate 0, exported QDQ ONNX otherwise)", ""]
        lines += models_markdown(report["models"], report["model_builds"])
    return "\n".join(lines)


def plot(results: list[dict], build_names: list[str], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.2), squeeze=False)
    for ax, res in zip(axes[0], results):
        pts = sorted(res["points"], key=lambda p: p["bops_reduction_rate"])
        for build in build_names + ["ort"]:
            xy = [(p["bops_reduction_rate"], _latency(p, build)) for p in pts]
            xy = [(x, y) for x, y in xy if y is not None]
            if not xy:
                continue
            best: dict[float, float] = {}
            for x, y in xy:  # requested rates that allocate alike: one point on the line (the best)
                best[x] = min(y, best.get(x, y))
            line, = ax.plot(*zip(*sorted(best.items())), marker="o",
                            label="onnxruntime (fp32 / QDQ)" if build == "ort" else f"TVM {build}")
            ax.scatter(*zip(*xy), s=12, color=line.get_color(), alpha=0.5)
        ax.set_yscale("log")
        ax.set_xlabel("BOPs reduction rate (%)")
        ax.set_ylabel("latency (ms, log)")
        ax.set_title(res["model"])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="resnet18,efficientnet-lite0",
                   help="zoo models: their op shapes (part 1) and whole-model latency (part 2)")
    p.add_argument("--rates", default="0,25,50,75,100", help="BOPs reduction rates for part 2")
    p.add_argument("--shapes", type=int, default=1,
                   help="op shapes per model and category (conv, pointwise, depthwise, dense), most MACs first")
    p.add_argument("--all-shapes", action="store_true", help="every distinct op shape of the models")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads for TVM and onnxruntime")
    p.add_argument("--repeat", type=int, default=5, help="timing repeats per op (median)")
    p.add_argument("--model-repeat", type=int, default=3, help="timing repeats per whole model")
    p.add_argument("--min-repeat-ms", type=float, default=50.0, help="minimum duration of one repeat")
    p.add_argument("--max-seconds", type=float, default=30.0,
                   help="time budget of one measurement: fewer repeats (>= 2) for slow untuned builds")
    p.add_argument("--tune-trials", type=int, default=0, help="MetaSchedule trials per task (0: skip tuned builds)")
    p.add_argument("--tuning-root", type=Path, default=None, help="tuning databases (default the product's)")
    p.add_argument("--tolerance", type=float, default=5.0,
                   help="percent rise between rates still counted as timing noise in the monotonicity check")
    p.add_argument("--method", default="quantunev2", help="sensitivity method for the rate configs")
    p.add_argument("--calib-size", type=int, default=8, help="calibration samples for the rate configs")
    p.add_argument("--skip-ops", action="store_true", help="skip part 1 (op level)")
    p.add_argument("--skip-models", action="store_true", help="skip part 2 (whole model)")
    p.add_argument("--save-onnx", action="store_true", help="also keep the exported QDQ ONNX models")
    p.add_argument("-o", "--out", type=Path, default=Path("out/bench/kernels"))
    args = p.parse_args(argv)
    if args.repeat < 1 or args.model_repeat < 1 or args.threads < 1:
        p.error("--repeat, --model-repeat and --threads must be >= 1")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    # Thread counts before TVM's runtime starts its pool.
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("TVM_MPQ_NO_PROGRESS", "1")
    import tvm  # noqa: F401

    from targets import get_target
    from tvm_mpq.compiler.build import DEFAULT_TUNING_ROOT

    target = get_target("x86", num_cores=args.threads).tvm_target
    models = [m for m in args.models.split(",") if m]
    rates = [float(r) for r in args.rates.split(",") if r]
    tuning_root = args.tuning_root or DEFAULT_TUNING_ROOT
    empty_root = Path(tempfile.mkdtemp(prefix="tvm-mpq-bench-nodb-"))
    op_builds = builds(args.tune_trials, tuning_root, empty_root, op_level=True)
    model_builds = builds(args.tune_trials, tuning_root, empty_root, op_level=False)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine_info(args.threads, target),
              "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "op_builds": [b.name for b in op_builds], "model_builds": [b.name for b in model_builds]}
    m = report["machine"]
    log(f"{m['cpu']} ({m['llvm_mcpu']}; avx2 {m['flags']['avx2']}, avx512f {m['flags']['avx512f']}, "
        f"vnni {m['flags']['avx512_vnni'] or m['flags']['avx_vnni']}), {args.threads} thread(s), TVM {m['tvm_version']}, "
        f"onnxruntime {m['onnxruntime_version']}")

    def save() -> None:
        (args.out / "report.json").write_text(json.dumps(report, indent=1, default=str))
        (args.out / "report.md").write_text(markdown(report))

    if not args.skip_ops:
        per_model = {}
        for name in models:
            log(f"{name}: reading the layer table")
            graph, _ = _load(name)
            per_model[name] = model_op_specs(graph, name)
        specs = distinct_specs(per_model, None if args.all_shapes else args.shapes)
        n_all = len(distinct_specs(per_model, None))
        log(f"op level: {len(specs)} of {n_all} distinct shapes; builds {', '.join(b.name for b in op_builds)}")
        report["ops"] = bench_ops(specs, target, args, op_builds)
        save()
        print("\n".join(ops_markdown(report["ops"], report["op_builds"])), flush=True)
    if not args.skip_models:
        report["models"] = bench_models(models, rates, target, args, model_builds)
        save()
        print("\n".join(models_markdown(report["models"], report["model_builds"])), flush=True)
        if plot(report["models"], report["model_builds"], args.out / "latency_vs_rate.png"):
            log(f"plot: {args.out / 'latency_vs_rate.png'}")
    report["seconds"] = round(time.perf_counter() - T0, 1)
    save()
    log(f"written: {args.out}/report.json, report.md (total {report['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
