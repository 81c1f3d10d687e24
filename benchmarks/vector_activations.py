"""Fused activations on vectors (``nn.gelu``, ``gelu_tanh``, ``silu``, ``selu``, ``softplus``,
``log``, ``log_softmax`` rewritten by ``relay_passes.fast_exp.VectorExp``) against TVM's own
lowering of them (one ``erff`` / ``expf`` / ``logf`` call per element), in one process, interleaved.

    python benchmarks/vector_activations.py [--models minilm] [--rates 0,100]
        [--rounds 7] [--runs 10] [-o out/bench/vector_activations]

Each config is compiled twice for this host: "vector" (the pipeline) and "libm" (VectorExp
rewriting only the ops it rewrote before these activations were added: ``exp``, ``sigmoid``,
``tanh``, ``erf``). Both builds take turns in every round (each runner's minimum of ``--runs``
runs per round; medians over rounds, the ratio taken within rounds), with the largest output
difference between them. minilm's encoder (the zoo's, through ``torch.export``) has six
``nn.gelu``; ONNX ``Gelu`` (PyTorch's default exporter at opset 20) imports as the same op.
Prints and saves ``report.json`` / ``report.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

HOWS = ("vector", "libm")
EARLIER_FORMS = ("relax.exp", "relax.sigmoid", "relax.tanh", "relax.erf")
"""What VectorExp rewrote before the fused activations."""


def main() -> None:
    from benchkit.machine import machine_info
    from benchkit.two_builds import compare_two_builds, parse_args, with_constant

    args = parse_args(__doc__, "0,100", "out/bench/vector_activations", models="minilm")
    from relay_passes import fast_exp
    from tvm_mpq.runtime.executor import host_target

    target = host_target()
    earlier = {op: form for op, form in fast_exp._FAST_FORMS.items() if op in EARLIER_FORMS}
    compare_two_builds(args, machine_info(args.threads, target), HOWS,
                       with_constant(fast_exp, "_FAST_FORMS", earlier, "libm", target),
                       "Fused activations on vectors (VectorExp) vs one libm call per element")


if __name__ == "__main__":
    main()
