"""Float32 pointwise (1x1) convs over >= 128 pixels split among threads by rows while their
weight is up to 1 MiB (``tvm_mpq.kernels.cpu_mac.rows_outer`` since 2026-12-05) against the rule
before (every conv by rows only up to 256 KiB), whole models, both builds in one process::

    python benchmarks/pointwise_rows_split.py ppocrv6-rec-small,efficientnet-lite0,resnet18:100

Each name is a corpus model (``tvm_mpq.corpus.catalog``) or a zoo model, ``:100`` for its fully
int8 QuantuneV2 config (default fp32). Both builds must give identical outputs (only the order
of tiles changes); they take turns for 9 rounds (order reversed every other round), each the
best of 10 runs; the rule's build is timed twice per round, its second copy ("again") showing
the spread of the VM. Prints per model the medians and the median of the within-round ratios;
nothing is saved (docs/results.md, 2026-12-05).
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    os.environ.setdefault("TVM_NUM_THREADS", "2")
    import tvm_mpq.kernels.cpu_mac as cpu_mac
    from tvm_mpq import zoo
    from tvm_mpq.api import config_for_rate
    from tvm_mpq.compiler import compile_model
    from tvm_mpq.compiler.pipeline import fp32_config
    from tvm_mpq.compiler.validate import keep_unsupported_fp32
    from tvm_mpq.corpus.catalog import CATALOG, by_name
    from tvm_mpq.corpus.fetch import fetch
    from tvm_mpq.corpus.inputs import feeds
    from tvm_mpq.runtime.executor import host_target, host_tensor
    from tvm_mpq.zoo import load_model

    rule = cpu_mac.rows_outer

    def before(info) -> bool:  # the rule before 2026-12-05: convs by rows up to 256 KiB
        if info.kind == "conv2d":
            return cpu_mac.weight_bytes(info) <= cpu_mac.ROWS_OUTER_MAX_WEIGHT_BYTES
        return rule(info)

    for item in sys.argv[1].split(","):
        name, _, rate = item.partition(":")
        if name in {m.name for m in CATALOG}:
            model = by_name(name)
            graph = load_model(str(fetch(model)), model.shapes)
            calib = feeds(model, graph, 8)
        else:
            graph = load_model(name)
            calib = zoo.get(name).calibration(8)
        config = fp32_config(graph)
        if rate:
            config, report = config_for_rate(graph, calib, float(rate), "quantunev2")
            keep_unsupported_fp32(config, report.table)
        inputs = [host_tensor(calib[0][s.name]) for s in graph.inputs]
        runs, outputs = {}, {}
        for label, split in (("rule", rule), ("before", before)):
            cpu_mac.rows_outer = split
            try:
                vm = compile_model(graph, config, host_target()).vm()
            finally:
                cpu_mac.rows_outer = rule
            runs[label] = lambda vm=vm: vm["main"](*inputs)
            out = runs[label]()
            outputs[label] = (out if hasattr(out, "numpy") else out[0]).numpy()
        assert np.array_equal(*outputs.values()), f"{item}: the two builds' outputs differ"
        runs["rule again"] = runs["rule"]
        order = list(runs)
        best: dict[str, list[float]] = {k: [] for k in order}
        for r in range(9):
            for label in order if r % 2 == 0 else order[::-1]:
                fastest = float("inf")
                for _ in range(10):
                    start = time.perf_counter()
                    runs[label]()
                    fastest = min(fastest, time.perf_counter() - start)
                best[label].append(fastest * 1e3)
        ratio = np.median([a / b for a, b in zip(best["rule"], best["before"])])
        print(f"{item}: " + ", ".join(f"{k} {np.median(v):.3f} ms" for k, v in best.items())
              + f"; rule / before {ratio:.3f} (median of within-round ratios)", flush=True)


if __name__ == "__main__":
    main()
