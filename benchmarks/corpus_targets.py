"""Every corpus model on every target: the real ONNX models of :mod:`tvm_mpq.corpus` built for
aarch64 (dot-product) and CUDA, and the aarch64 builds run.

Per model: import, QuantuneV2 on the calibration inputs, and at each rate the config ``tvm-mpq
compile --rate`` builds (layers with no integer kernel kept fp32), compiled and exported for

* ``x86`` (this host): the reference, run here on held-out inputs;
* ``aarch64-dotprod``: exported with the cross toolchain, uploaded to an aarch64 RPC server
  under QEMU (:class:`targets.rpc.LocalRpcServer`) and run on the same inputs; its output is
  compared with the x86 build of the same config (output SQNR, dB: the integer arithmetic is the
  same on both ISAs, so a fully int8 build differs only where fp32 parts round differently);
* ``cuda`` (``--arch``): compiled and exported (running it needs a GPU host).

A build that fails is one line in its cell; the other cells are still attempted::

    python benchmarks/corpus_targets.py                         # every model, rates 0,100
    python benchmarks/corpus_targets.py --smallest 3 --targets aarch64-dotprod
    python benchmarks/corpus_targets.py --models khmersm --int8-attention   # attention's products int8 too

Writes ``out/bench/corpus_targets/report.json`` and ``report.md`` (``-o DIR``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchkit.machine import flags_text, machine_info
from benchkit.progress import log

#: ``aarch64-dotprod`` builds whose output differs from the x86 build of the same config by more
#: than this (output SQNR, dB) are marked ``differs`` in the table.
AGREE_DB = 40.0


def _one_line(err: BaseException) -> str:
    from tvm_mpq.errors import last_line

    return f"{type(err).__name__}: {last_line(err)}"[:300]


def _build(graph, config, target_name: str, arch: str, path: Path) -> tuple[dict, Path | None]:
    """Compile + export one config for one target; the cell and the library (None on failure)."""
    from targets import get_target
    from tvm_mpq.compiler import compile_model

    target = get_target(target_name, arch=arch) if target_name == "cuda" else get_target(target_name)
    start = time.perf_counter()
    try:
        target.check_toolchain()
        with target.build_context():
            compiled = compile_model(graph, config, target.tvm_target)
        library = target.export(compiled, path)
    except Exception as err:  # noqa: BLE001 - a failed build is a cell of the table
        return {"built": False, "error": _one_line(err), "seconds": round(time.perf_counter() - start, 1)}, None
    return {"built": True, "seconds": round(time.perf_counter() - start, 1), "n_qdq": compiled.n_qdq,
            "int8_layers": compiled.stats["int8_layers"], "mb": round(library.stat().st_size / 2**20, 2)}, library


def _run_aarch64(server, library: Path, graph, feeds: list, reference: list) -> dict:
    """Run an aarch64 library on the QEMU server; output SQNR against the x86 build's outputs."""
    import gc

    from targets import get_target
    from targets.rpc import RemoteModel
    from tvm_mpq.metrics.task_metrics import output_sqnr_db

    start = time.perf_counter()
    try:
        session = server.connect()
        with RemoteModel(session, library, get_target("aarch64-dotprod"),
                         input_names=[s.name for s in graph.inputs]) as model:
            outputs = [model.run(feed) for feed in feeds]
        del session
        gc.collect()
    except Exception as err:  # noqa: BLE001
        return {"ran": False, "error": _one_line(err), "run_seconds": round(time.perf_counter() - start, 1)}
    sqnr = float(output_sqnr_db(outputs, reference))
    diff = max(float(np.max(np.abs(np.asarray(o, np.float64) - np.asarray(r, np.float64))))
               for out, ref in zip(outputs, reference) for o, r in zip(out, ref))
    return {"ran": True, "sqnr_vs_x86_db": round(sqnr, 1), "max_abs_diff": diff, "agrees": sqnr >= AGREE_DB,
            "run_seconds": round(time.perf_counter() - start, 1)}


def run_model(model, args, server, out_dir: Path) -> dict:
    """One corpus model through every target at every rate; never raises."""
    from tvm_mpq.api import config_for_rate
    from tvm_mpq.compiler import compile_model
    from tvm_mpq.compiler.validate import keep_unsupported_fp32
    from tvm_mpq.corpus.fetch import fetch
    from tvm_mpq.corpus.inputs import feeds
    from tvm_mpq.runtime.executor import host_target
    from tvm_mpq.zoo import load_model

    row: dict = {"name": model.name, "cells": {}}
    try:
        graph = load_model(str(fetch(model)), model.shapes)
        calib = feeds(model, graph, args.calib_size)
        held_out = feeds(model, graph, args.eval_size, offset=args.calib_size)
    except Exception as err:  # noqa: BLE001
        row["failure"] = f"import: {_one_line(err)}"
        return row
    report = None
    for rate in args.rates:
        try:
            config, report = config_for_rate(graph, calib, rate, "quantunev2", report=report)
            keep_unsupported_fp32(config, report.table, args.int8_attention)
            host = compile_model(graph, config, host_target())
            vm = host.vm()
            reference = [host.run(feed, vm) for feed in held_out]
        except Exception as err:  # noqa: BLE001
            row["cells"][f"{rate:g}"] = {"x86": {"built": False, "error": _one_line(err)}}
            continue
        cells = {"x86": {"built": True, "int8_layers": host.stats["int8_layers"]}}
        for target_name in args.targets:
            log(f"{model.name} rate {rate:g}: {target_name}")
            cell, library = _build(graph, config, target_name, args.arch,
                                   out_dir / f"{model.name}.r{rate:g}.{target_name}.so")
            if library is not None and target_name == "aarch64-dotprod" and server is not None:
                cell.update(_run_aarch64(server, library, graph, held_out, reference))
            cells[target_name] = cell
        row["cells"][f"{rate:g}"] = cells
    return row


def _cell_text(cell: dict | None) -> str:
    if cell is None:
        return "-"
    if not cell.get("built"):
        return f"no: {cell.get('error', '')}"
    text = f"yes ({cell['seconds']} s)" if "seconds" in cell else "yes"
    if "ran" in cell:
        same = "output = x86's to the bit" if cell.get("max_abs_diff") == 0 else (
            f"{cell.get('sqnr_vs_x86_db')} dB vs x86, max diff {cell.get('max_abs_diff', 0):.1e}")
        text += (f", ran: {same}" + ("" if cell["agrees"] else " (differs)")
                 if cell["ran"] else f", run failed: {cell['error']}")
    return text


def markdown(rows: list[dict], meta: dict) -> str:
    head = " | ".join(f"{t} at {r:g}%" for r in meta["rates"] for t in meta["targets"])
    lines = [f"Corpus on every target: {len(rows)} models, rates {', '.join(f'{r:g}' for r in meta['rates'])}; "
             f"host CPU flags `{' '.join(meta['cpu_flags'])}`; aarch64 runs under QEMU "
             f"({meta['eval_size']} held-out inputs, output SQNR against the x86 build of the same config); "
             f"CUDA arch {meta['arch']}, compile only.", "",
             f"| model | {head} |", "|---|" + "---|" * (len(meta["rates"]) * len(meta["targets"]))]
    for row in rows:
        if "failure" in row:
            lines.append(f"| {row['name']} | {row['failure']} |")
            continue
        cells = [_cell_text(row["cells"].get(f"{r:g}", {}).get(t)) for r in meta["rates"] for t in meta["targets"]]
        lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def all_ok(rows: list[dict]) -> bool:
    """Every cell built, and every aarch64 run ran and agreed with x86."""
    return all("failure" not in row and all(cell.get("built") and cell.get("agrees", True) and cell.get("ran", True)
                                            for cells in row["cells"].values() for cell in cells.values())
               for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", help="comma-separated corpus names (default: all)")
    parser.add_argument("--smallest", type=int,
                        help="only the N smallest models (by file size, of those in the fast subset)")
    parser.add_argument("--rates", default="0,100")
    parser.add_argument("--targets", default="aarch64-dotprod,cuda")
    parser.add_argument("--arch", default="sm_80", help="CUDA arch to build for (sm_XY)")
    parser.add_argument("--no-run", action="store_true", help="build only; do not run the aarch64 builds under QEMU")
    parser.add_argument("--int8-attention", action="store_true", help="products of two activations int8 too")
    parser.add_argument("--calib-size", type=int, default=8)
    parser.add_argument("--eval-size", type=int, default=2)
    parser.add_argument("-o", "--out", type=Path, default=Path("out/bench/corpus_targets"))
    args = parser.parse_args(argv)
    args.rates = [float(r) for r in args.rates.split(",")]
    args.targets = [t for t in args.targets.split(",") if t]
    os.environ.setdefault("TVM_MPQ_NO_PROGRESS", "1")

    from model_corpus import select
    from targets.aarch64_sysroot import setup_aarch64
    from targets.rpc import LocalRpcServer
    from tvm_mpq.runtime.executor import host_target

    models = select(args.models, args.smallest)
    threads = int(os.environ.get("TVM_NUM_THREADS", os.cpu_count() or 1))
    meta = {"rates": args.rates, "targets": args.targets, "arch": args.arch, "eval_size": args.eval_size,
            "cpu_flags": flags_text(machine_info(threads, host_target())).split(), "agree_db": AGREE_DB,
            "command": "python benchmarks/corpus_targets.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    args.out.mkdir(parents=True, exist_ok=True)
    libraries = Path(tempfile.mkdtemp(prefix="tvm-mpq-corpus-targets-"))
    run_aarch64 = "aarch64-dotprod" in args.targets and not args.no_run
    rows: list[dict] = []
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        server = (stack.enter_context(LocalRpcServer("aarch64", sysroot=setup_aarch64()[1])) if run_aarch64
                  else None)
        for model in models:
            rows.append(run_model(model, args, server, libraries))
            report = {**meta, "seconds": round(time.perf_counter() - start, 1), "models": rows}
            (args.out / "report.json").write_text(json.dumps(report, indent=1))
            (args.out / "report.md").write_text(markdown(rows, meta))
    print(markdown(rows, meta))
    print(f"wrote {args.out / 'report.json'} and {args.out / 'report.md'} ({time.perf_counter() - start:.0f} s)")
    return 0 if all_ok(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
