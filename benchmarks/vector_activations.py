"""Fused activations on vectors (``nn.gelu``, ``gelu_tanh``, ``silu``, ``selu``, ``softplus``,
``log``, ``log_softmax`` rewritten by ``relay_passes.fast_exp.VectorExp`` and
``relay_passes.lane_softmax.LaneSoftmax``) against TVM's own lowering of them (one ``erff`` /
``expf`` / ``logf`` call per element), in one process, interleaved.

    python benchmarks/vector_activations.py [--models minilm] [--rates 0,100]
        [--rounds 7] [--runs 10] [-o out/bench/vector_activations]
    python benchmarks/vector_activations.py --ops [--rounds 7] [--runs 10]

Each config is compiled twice for this host: "vector" (the pipeline) and "libm" (VectorExp
rewriting only the ops it rewrote before these activations were added: ``exp``, ``sigmoid``,
``tanh``, ``erf``; LaneSoftmax only softmax, not log-softmax). Both builds take turns in every
round (each runner's minimum of ``--runs`` runs per round; medians over rounds, the ratio taken
within rounds), with the largest output difference between them. minilm's encoder (the zoo's,
through ``torch.export``) has six ``nn.gelu``; ONNX ``Gelu`` (PyTorch's default exporter at
opset 20) imports as the same op; pyannote-segmentation (corpus) ends in a log-softmax.
``--ops``: each activation alone on a 128 x 1536 float32 tensor (minilm's feed-forward width),
both builds, with the libm functions each library still calls (``objdump``). Prints and saves
``report.json`` / ``report.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

HOWS = ("vector", "libm")
EARLIER_FORMS = ("relax.exp", "relax.sigmoid", "relax.tanh", "relax.erf")
"""What VectorExp rewrote before the fused activations."""
LIBM_FUNCTIONS = ("expf", "logf", "tanhf", "erff", "powf", "sinf", "cosf")
OP_SHAPE = (128, 1536)


def _op_modules() -> dict:
    from tvm import relax

    ops = {"gelu": relax.op.nn.gelu, "gelu_tanh": relax.op.nn.gelu_tanh, "silu": relax.op.nn.silu,
           "selu": relax.op.nn.selu, "softplus": relax.op.nn.softplus, "log": lambda x: relax.op.log(relax.op.abs(x)),
           "log_softmax": lambda x: relax.op.nn.log_softmax(x, axis=-1),
           "softmax (before and after)": lambda x: relax.op.nn.softmax(x, axis=-1),
           "erf (before and after)": relax.op.erf}
    modules = {}
    for name, make in ops.items():
        bb = relax.BlockBuilder()
        x = relax.Var("x", relax.TensorType(OP_SHAPE, "float32"))
        with bb.function("main", [x]):
            with bb.dataflow():
                y = bb.emit_output(make(x))
            bb.emit_func_output(y)
        modules[name] = bb.get()
    return modules


def _libm_calls(executable, directory: Path) -> list[str]:
    import subprocess

    path = directory / "op.so"
    executable.export_library(str(path))
    asm = subprocess.run(["objdump", "-d", str(path)], capture_output=True, text=True, check=True).stdout
    return [name for name in LIBM_FUNCTIONS if f"<{name}@" in asm]


def time_ops(args, info: dict, earlier_forms) -> None:
    import statistics
    import tempfile

    import numpy as np
    import tvm
    from tvm import relax

    from benchkit.machine import flags_text
    from benchkit.timing import interleaved_min
    from benchkit.two_builds import write_report
    from tvm_mpq.compiler.build import build_module
    from tvm_mpq.runtime.executor import host_target

    target = host_target()
    data = tvm.runtime.tensor((np.random.default_rng(0).normal(size=OP_SHAPE) * 2 + 0.1).astype(np.float32))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, mod in _op_modules().items():
            runners, outputs, calls = {}, {}, {}
            for how in HOWS:
                with earlier_forms(how == "libm"):
                    executable, _info = build_module(mod, target)
                calls[how] = _libm_calls(executable, Path(tmp))
                run = relax.VirtualMachine(executable, tvm.cpu())["main"]
                outputs[how] = run(data).numpy()
                runners[how] = (lambda run=run: run(data))
            times = interleaved_min(runners, args.rounds, args.runs)
            # the largest difference relative to the largest value (as the model rows)
            diff = float(np.abs(outputs["vector"] - outputs["libm"]).max() / np.abs(outputs["libm"]).max())
            rows.append({"op": name, "vector_ms": round(statistics.median(times["vector"]), 4),
                         "libm_ms": round(statistics.median(times["libm"]), 4),
                         "ratio": round(statistics.median(a / b for a, b in zip(times["vector"], times["libm"])), 3),
                         "libm_calls": calls, "max_rel_diff": diff})
            r = rows[-1]
            print(f"{name}: vector {r['vector_ms']:.3f} ms {calls['vector']}, libm {r['libm_ms']:.3f} ms {calls['libm']}, "
                  f"ratio {r['ratio']:.3f}, max rel diff {diff:.1e}", flush=True)
    lines = [f"# Activations alone ({OP_SHAPE[0]} x {OP_SHAPE[1]} float32): on vectors vs TVM's libm calls", "",
             f"{flags_text(info)}; {args.threads} threads; {args.rounds} rounds x {args.runs} runs, interleaved", "",
             "| op | vector ms | libm ms | vector / libm | libm calls (vector / libm build) | max rel. output diff |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['op']} | {r['vector_ms']:.3f} | {r['libm_ms']:.3f} | {r['ratio']:.3f} | "
              f"{', '.join(r['libm_calls']['vector']) or 'none'} / {', '.join(r['libm_calls']['libm']) or 'none'} | "
              f"{r['max_rel_diff']:.1e} |" for r in rows]
    write_report(args.out, info, rows, lines)


def main() -> None:
    import contextlib

    from benchkit.machine import machine_info
    from benchkit.two_builds import compare_two_builds, constants_set, parse_args

    args = parse_args(__doc__, "0,100", "out/bench/vector_activations", models="minilm",
                      ops="each activation alone, both builds")
    from relay_passes import fast_exp, lane_softmax
    from tvm_mpq.compiler import compile_model
    from tvm_mpq.runtime.executor import host_target

    target = host_target()
    earlier = {op: form for op, form in fast_exp._FAST_FORMS.items() if op in EARLIER_FORMS}
    softmax_only = {op: form for op, form in lane_softmax._LANE_FORMS.items() if op == "relax.nn.softmax"}

    @contextlib.contextmanager
    def earlier_forms(active: bool):
        """The two passes as they were before the fused activations (while ``active``)."""
        if not active:
            yield
            return
        with constants_set(fast_exp, _FAST_FORMS=earlier), constants_set(lane_softmax, _LANE_FORMS=softmax_only):
            yield

    info = machine_info(args.threads, target)
    if args.ops:
        if args.out == Path("out/bench/vector_activations"):
            args.out = Path("out/bench/vector_activations_ops")
        time_ops(args, info, earlier_forms)
        return

    def compile_point(point, how: str):
        with earlier_forms(how == "libm"):
            return compile_model(point.graph, point.config, target)

    compare_two_builds(args, info, HOWS, compile_point,
                       "Fused activations on vectors (VectorExp, LaneSoftmax) vs one libm call per element")


if __name__ == "__main__":
    main()
