"""Winograd F(4x4, 3x3) against the direct kernel on resnet18's 3x3 stride-1 conv shapes.

Each shape is built twice through the product's build (``build_module``: graph passes, fusion,
the kernel rules), as ``conv2d + bias + relu`` on NHWC tensors: once as it is (the Winograd
pass rewrites it where eligible), once with ``Conv2dWinograd`` left out of the graph passes (the
direct ``Conv2dChannelsLast`` kernel, weight prepacked at compile time). The two are timed
interleaved (each round: every build's minimum of ``--runs`` runs), and their outputs compared::

    python benchmarks/winograd_ops.py --threads 1
    python benchmarks/winograd_ops.py --threads 2 --rounds 9

Prints a Markdown table (CPU flags and threads in its first line).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import numpy as np

SHAPES = ((56, 64, 64), (28, 128, 128), (14, 256, 256), (7, 512, 512))
"""(map size, input channels, output channels): resnet18's stride-1 3x3 convs."""


def conv_module(size: int, c: int, k: int, seed: int = 0):
    from tvm import relax

    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((3, 3, c, k)) / np.sqrt(9 * c)).astype("float32")
    b = rng.standard_normal(k).astype("float32")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, size, size, c), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            acc = bb.emit(relax.op.nn.conv2d(x, relax.const(w), padding=1, data_layout="NHWC", kernel_layout="HWIO"))
            y = bb.emit_output(relax.op.nn.relu(relax.op.add(acc, relax.const(b))))
        bb.emit_func_output(y)
    return bb.get(), rng.standard_normal((1, size, size, c)).astype("float32")


def build(mod, target, winograd: bool):
    """``(VM, rule of the conv kernel)``; without ``winograd`` the pass is left out of the build."""
    import tvm
    from tvm import relax

    from benchkit.graph_build import build_without

    executable, kernels = build_without(mod, target, None if winograd else "Conv2dWinograd")
    rule = next(r for name, r in kernels.items() if "conv2d" in name)
    return relax.VirtualMachine(executable, tvm.cpu()), rule


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=10, help="runs per build per round (its minimum is kept)")
    args = parser.parse_args(argv)
    os.environ["TVM_NUM_THREADS"] = str(args.threads)

    import tvm
    from benchkit.machine import flags_text, machine_info
    from benchkit.timing import interleaved_min

    from tvm_mpq.runtime.executor import host_target

    target = host_target()
    print(f"CPU flags `{flags_text(machine_info(args.threads, target))}`, {args.threads} thread(s), "
          f"{args.rounds} interleaved rounds x {args.runs} runs\n")
    print("| conv 3x3 s1 | direct kernel ms | Winograd ms | speed-up | max abs diff / max abs output |")
    print("|---|---|---|---|---|")
    for size, c, k in SHAPES:
        mod, x = conv_module(size, c, k)
        arg = tvm.runtime.tensor(x, tvm.cpu())
        (direct, direct_rule), (wino, wino_rule) = build(mod, target, False), build(mod, target, True)
        ref, got = direct["main"](arg).numpy(), wino["main"](arg).numpy()
        times = interleaved_min({"direct": lambda: direct["main"](arg), "winograd": lambda: wino["main"](arg)},
                                args.rounds, args.runs)
        ratio = statistics.median(d / w for d, w in zip(times["direct"], times["winograd"]))
        label = f"{c}->{k} @{size} ({direct_rule} / {wino_rule})"
        print(f"| {label} | {statistics.median(times['direct']):.3f} | {statistics.median(times['winograd']):.3f} | "
              f"{ratio:.2f}x | {np.abs(got - ref).max() / np.abs(ref).max():.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
