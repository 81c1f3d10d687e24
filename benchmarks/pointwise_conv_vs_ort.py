"""One 1x1 conv (+ bias, optionally + erf GELU) on tvm-mpq's kernel against onnxruntime, with
kernel plans of one's own beside the rule's::

    python benchmarks/pointwise_conv_vs_ort.py 192 384 6 80 [--gelu] [--threads 2] \\
        [--plan nf=2,nx=12] [--plan nf=4,nx=6,rows_outer=1] ...

The conv is an ONNX file (C input channels -> F output channels at H x W, float32, random
weights) that both run: onnxruntime (its NCHWc conv) and tvm-mpq's fp32 build, once with the
kernel rule's :class:`~tvm_mpq.kernels.cpu_mac.KernelPlan` and once per ``--plan`` (fields of
the plan replaced: ``nf``, ``nx``, ``rows_outer``, ``k_block``). Each build's output is checked
against onnxruntime's. A build's time includes the layout transposes of the NCHW input and
output around the channels-last conv (a model pays them once, at its borders), so the conv
kernel's own time is printed beside it (``profile_kernels_isolated``). Timing:
:func:`benchkit.timing.interleaved_min` (the runners take turns for ``--rounds`` rounds, each
its best of 10 runs per round; the best over rounds is printed); onnxruntime's intra-op
threads do not spin between runs (``session.intra_op.allow_spinning`` 0; ``--ort-spinning``: its default, under which its
idle threads take a core from the runner after it). Prints ms, GMAC/s and the ratio to
onnxruntime; nothing is saved.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchkit.machine import flags_text, machine_info
from benchkit.timing import interleaved_min


def conv_model(c: int, f: int, h: int, w: int, gelu: bool, path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    const = lambda name, value: numpy_helper.from_array(np.asarray(value, np.float32), name)  # noqa: E731
    inits = [const("w", rng.standard_normal((f, c, 1, 1)) * 0.05), const("b", rng.standard_normal(f))]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"])]
    if gelu:  # y * (erf(y / sqrt 2) + 1) / 2, as exporters write it
        inits += [const("r2", 0.70710678), const("one", 1.0), const("half", 0.5)]
        nodes += [helper.make_node("Mul", ["y", "r2"], ["t1"]), helper.make_node("Erf", ["t1"], ["t2"]),
                  helper.make_node("Add", ["t2", "one"], ["t3"]), helper.make_node("Mul", ["y", "t3"], ["t4"]),
                  helper.make_node("Mul", ["t4", "half"], ["out"])]
    out = "out" if gelu else "y"
    graph = helper.make_graph(nodes, "pointwise", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, h, w])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, f, h, w])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def plan_fields(text: str) -> dict:
    fields = dict(item.split("=") for item in text.split(","))
    return {k: v == "1" if k == "rows_outer" else int(v) for k, v in fields.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in ("channels", "filters", "height", "width"):
        parser.add_argument(name, type=int)
    parser.add_argument("--gelu", action="store_true", help="an erf GELU after the conv")
    parser.add_argument("--plan", action="append", default=[], help="plan fields to replace, e.g. nf=2,nx=12")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--ort-spinning", action="store_true",
                        help="onnxruntime's default: its threads spin between runs (and take a core from the next runner)")
    args = parser.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)

    import onnxruntime as ort

    import tvm_mpq.kernels.cpu_mac as cpu_mac
    from tvm_mpq.compiler import compile_model
    from tvm_mpq.compiler.pipeline import fp32_config
    from tvm_mpq.runtime.executor import host_target, host_tensor
    from tvm_mpq.runtime.profiler import profile_kernels_isolated
    from tvm_mpq.zoo import load_model

    c, f, h, w = args.channels, args.filters, args.height, args.width
    x = np.random.default_rng(1).standard_normal((1, c, h, w)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "conv.onnx"
        conv_model(c, f, h, w, args.gelu, path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = args.threads, 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if args.ort_spinning else "0")
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        reference = sess.run(None, {"x": x})[0]
        graph = load_model(str(path), {})
    runners = {"onnxruntime": lambda: sess.run(None, {"x": x})}
    rule_plan = cpu_mac.plan_kernel
    plans: dict[str, object] = {}
    conv_ms: dict[str, float] = {}
    for label in ["rule", *args.plan]:
        def plan(info, isa, label=label):
            chosen = rule_plan(info, isa)
            if chosen is not None and info.kind == "conv2d":
                chosen = chosen if label == "rule" else replace(chosen, **plan_fields(label))
                plans[label] = chosen
            return chosen
        cpu_mac.plan_kernel = plan
        try:
            built = compile_model(graph, fp32_config(graph), host_target())
        finally:
            cpu_mac.plan_kernel = rule_plan
        vm = built.vm()
        kernels = profile_kernels_isolated(built.executable, [x], built.stats["build"]["kernels"])
        conv_ms[label] = sum(k.ms for k in kernels if "conv2d" in k.name)
        data = host_tensor(x)
        got = vm["main"](data)
        got = (got[0] if not hasattr(got, "numpy") else got).numpy()
        error = float(np.abs(got - reference).max() / np.abs(reference).max())
        assert error < 1e-4, f"{label}: output differs from onnxruntime's by {error:.2e} of its range"
        runners[label] = lambda vm=vm, data=data: vm["main"](data)
    best = {name: min(ms) for name, ms in interleaved_min(runners, args.rounds).items()}
    print(f"1x1 conv {c} -> {f} at {h}x{w}{' + GELU' if args.gelu else ''}: CPU flags "
          f"{flags_text(machine_info(args.threads, host_target()))}, {args.threads} thread(s)")
    for name, ms in best.items():
        p = plans.get(name)
        how = (f"  (conv kernel alone {conv_ms[name]:.4f} ms; nf {p.nf} nx {p.nx} rows_outer {p.rows_outer} "
               f"k_block {p.k_block})" if p is not None else "")
        print(f"  {name:28s} {ms:.4f} ms  {c * f * h * w / ms / 1e6:6.1f} GMAC/s  x onnxruntime "
              f"{ms / best['onnxruntime']:.2f}{how}")


if __name__ == "__main__":
    main()
