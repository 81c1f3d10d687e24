"""One config's fidelity from the three tools that report it: identical, or exit 1.

For a zoo model and one BOPs reduction rate (QuantuneV2, default observer, 16 calibration
samples), on the named held-out sample set (``tvm_mpq.evaluation.sample_set.held_out``):

* ``tvm-mpq sweep`` (x86, local RPC server): the point's ``fidelity`` and ``accuracy``;
* ``benchmarks/precision_pass.py``: the row's ``fidelity`` and ``accuracy`` (integer model);
* ``tvm-mpq eval``'s integer check (``integer_figures``) of the same config.

All three build the same config (same calibration, same analysis), run the integer model on
the same samples and score it with ``tvm_mpq.evaluation.fidelity`` against the same fp32
reference, so the figures must be equal to the last bit.

    python benchmarks/fidelity_paths.py [--model efficientnet-lite0] [--rate 100] [--eval-size 32]

Writes out/bench/fidelity_paths/<model>-rate<rate>.json and prints the three figure sets.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from benchkit.precision_rows import CALIB, run_model

METHOD = "quantunev2"


def _sweep(model: str, rate: float, eval_size: int, cache: Path, out: Path) -> tuple[dict, str]:
    from tvm_mpq.sweep import SweepOptions, run_sweep

    options = SweepOptions(model, "x86", rates=[rate], methods=[METHOD], eval_size=eval_size, calib_size=CALIB,
                           rounds=1, repeat=3, max_seconds=1.0, cache_dir=cache)
    report = run_sweep(options, out / "sweep" / "report.json", log=lambda _line: None)
    (point,) = report["points"]
    return {**point["fidelity"], **point["accuracy"]}, report["eval"]["name"]


def _precision_pass_row(model: str, rate: float, eval_size: int) -> tuple[dict, str]:
    result = run_model(model, [rate], [], eval_size)
    (row,) = result["points"]
    return {**row["fidelity"], **row.get("accuracy", {})}, result["samples"]["name"]


def _eval(model: str, rate: float, eval_size: int, cache: Path) -> tuple[dict, str]:
    from tvm_mpq.api import config_for_rate
    from tvm_mpq.calibration import CalibrationCache
    from tvm_mpq.evaluation.experiment import integer_figures
    from tvm_mpq.evaluation.model_data import counts_for, load_model_data

    data = load_model_data(model, counts_for(model, calib=CALIB, eval=eval_size))
    config, _ = config_for_rate(data.graph, data.calib, rate, METHOD, cache=CalibrationCache(cache))
    figures, _ = integer_figures(data, config, stage="A->C")
    return figures, data.samples.name


def compare(model: str, rate: float, eval_size: int, out: Path) -> dict:
    """The three tools' figures for ``model`` at ``rate`` and whether they are identical."""
    with tempfile.TemporaryDirectory(prefix="tvm-mpq-fidelity-paths-") as tmp:
        cache = Path(tmp)
        runs = {"sweep": _sweep(model, rate, eval_size, cache, out),
                "precision_pass": _precision_pass_row(model, rate, eval_size),
                "eval": _eval(model, rate, eval_size, cache)}
    figures = {tool: fig for tool, (fig, _) in runs.items()}
    samples = {tool: name for tool, (_, name) in runs.items()}
    first = next(iter(figures.values()))
    return {"model": model, "rate": rate, "method": METHOD, "samples": samples, "figures": figures,
            "identical": all(f == first for f in figures.values()) and len(set(samples.values())) == 1}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--eval-size", type=int, default=32)
    parser.add_argument("-o", "--out", type=Path, default=Path("out/bench/fidelity_paths"))
    args = parser.parse_args()
    os.environ.setdefault("TVM_MPQ_NO_PROGRESS", "1")
    result = compare(args.model, args.rate, args.eval_size, args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{args.model}-rate{args.rate:g}.json"
    path.write_text(json.dumps(result, indent=1))
    for tool, fig in result["figures"].items():
        print(f"{tool:15s} {result['samples'][tool]}: " + ", ".join(f"{k} {v!r}" for k, v in fig.items()))
    print(("identical" if result["identical"] else "DIFFERENT") + f"; written {path}")
    return 0 if result["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
