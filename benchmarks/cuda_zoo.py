"""CUDA builds of zoo models at BOPs reduction rates: does each compile, and do its int8 MACs run
on ``dp4a``? Compile-only (no GPU needed; the run needs a GPU host's RPC server).

    python benchmarks/cuda_zoo.py [--models efficientnet-lite0,resnet18,mobilenetv2,mtcnn-rnet]
                                  [--rates 0,50,100] [--arch sm_80]

Per model: one QuantuneV2 analysis on the zoo's calibration set, then for each rate the config
``tvm-mpq compile --rate`` would build (layers without an integer kernel kept fp32) is compiled
with :func:`tvm_mpq.compiler.compile_model` for ``--target cuda`` and exported. A row records
whether it built (or the error, one line), the seconds, the int8 layers, the MAC kernels and
which rule scheduled them, how many int8 MAC kernels call ``__dp4a`` in their CUDA C, the
``dp4a`` instructions of the PTX ``nvcc`` makes of the library's kernels, and whether the
library holds a cubin. Writes ``out/bench/cuda_zoo.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

from benchkit.progress import log

MAC_MARKERS = ("conv2d", "matmul")


def cuda_kernels(source: str) -> dict[str, tuple[str, str]]:
    """CUDA kernel name -> (parameter list, body), from a module's CUDA C (definitions only)."""
    out = {}
    for part in source.split('extern "C" __global__ ')[1:]:
        head, _, body = part.partition("{")
        match = re.match(r"void (?:__launch_bounds__\(\d+\) )?(\w+)\((.*)\)", head.strip())
        if body and match:
            out[match.group(1)] = (match.group(2), body)
    return out


def int8_mac_kernels(mac_names: list[str], source: str) -> dict[str, bool]:
    """int8 MAC kernel (a ``signed char*`` weight among its CUDA parameters) -> calls ``__dp4a``."""
    kernels = cuda_kernels(source)
    out = {}
    for name in mac_names:
        own = [(params, body) for kernel, (params, body) in kernels.items() if kernel.startswith(f"{name}_kernel")]
        if any("signed char*" in params for params, _ in own):
            out[name] = any("__dp4a(" in body for _, body in own)
    return out


def build_row(graph, config, target, rate: float, out_dir: Path) -> dict:
    """Compile and export one config for CUDA; the table row (errors become one line)."""
    from targets.cuda import compile_ptx, kernel_source
    from targets.elf import EM_CUDA, embedded_elf_machines
    from tvm_mpq.compiler import compile_model

    row: dict = {"model": graph.name, "rate": rate, "fp32_layers": len(config.fp32_layers())}
    start = time.perf_counter()
    try:
        with target.build_context():
            compiled = compile_model(graph, config, target.tvm_target)
        path = target.export(compiled, out_dir / f"{graph.name}.r{rate:g}.so")
    except Exception as err:  # noqa: BLE001 - a failed build is a row of the table
        row.update(status="failed", error=f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
                   seconds=round(time.perf_counter() - start, 1))
        return row
    row["seconds"] = round(time.perf_counter() - start, 1)
    kernels = compiled.stats["build"]["kernels"]
    macs = {name: rule for name, rule in kernels.items() if any(m in name for m in MAC_MARKERS)}
    source = kernel_source(compiled.executable.mod)
    int8_macs = int8_mac_kernels(list(macs), source)
    ptx = compile_ptx(source, target.arch)
    row.update(status="ok", int8_layers=compiled.stats["int8_layers"], mac_kernels=len(macs),
               rules=compiled.stats["build"]["rules"],
               mac_rules={rule: sum(r == rule for r in macs.values()) for rule in sorted(set(macs.values()))},
               int8_mac_kernels=len(int8_macs), int8_mac_kernels_with_dp4a=sum(int8_macs.values()),
               ptx_dp4a=len(re.findall(r"\bdp4a\.[us]32\.[us]32\b", ptx)),
               library_mb=round(Path(path).stat().st_size / 2**20, 2),
               cubin=EM_CUDA in embedded_elf_machines(Path(path).read_bytes()))
    return row


def markdown(rows: list[dict], arch: str) -> str:
    lines = [f"CUDA builds (`--target cuda`, arch {arch}, compile only)", "",
             "| model | rate | built | s | fp32 layers | int8 layers | MAC kernels (by rule) | int8 MAC kernels "
             "calling dp4a | PTX dp4a | cubin | MB |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['model']} | {r['rate']:g} | no: {r['error']} | {r['seconds']} | {r['fp32_layers']} "
                         "| | | | | | |")
            continue
        lines.append(f"| {r['model']} | {r['rate']:g} | yes | {r['seconds']} | {r['fp32_layers']} | {r['int8_layers']} "
                     f"| {r['mac_kernels']} ({', '.join(f'{k} {v}' for k, v in r['mac_rules'].items())}) "
                     f"| {r['int8_mac_kernels_with_dp4a']}/{r['int8_mac_kernels']} "
                     f"| {r['ptx_dp4a']} | {'yes' if r['cubin'] else 'no'} | {r['library_mb']} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="efficientnet-lite0,resnet18,mobilenetv2,mtcnn-rnet")
    parser.add_argument("--rates", default="0,50,100")
    parser.add_argument("--arch", default="sm_80", help="CUDA arch to build for (sm_XY)")
    parser.add_argument("-o", "--out", type=Path, default=Path("out/bench/cuda_zoo.json"))
    args = parser.parse_args()

    from targets import get_target
    from tvm_mpq.api import config_for_rate
    from tvm_mpq.calibration import CalibrationCache, load_calibration
    from tvm_mpq.compiler.validate import keep_unsupported_fp32
    from tvm_mpq.graph import build_layer_table
    from tvm_mpq.zoo import load_model

    target = get_target("cuda", arch=args.arch)
    target.check_toolchain()
    rates = [float(r) for r in args.rates.split(",")]
    rows: list[dict] = []
    libraries = Path(tempfile.mkdtemp(prefix="tvm-mpq-cuda-zoo-"))
    for model in args.models.split(","):
        graph = load_model(model, {})
        feeds = load_calibration(graph, None, 16, 0.0, 1.0)
        report = None
        for rate in rates:
            log(f"{model} rate {rate:g}: analysis / allocation")
            config, report = config_for_rate(graph, feeds, rate, "quantunev2", cache=CalibrationCache(None),
                                             report=report)
            keep_unsupported_fp32(config, build_layer_table(graph))
            row = build_row(graph, config, target, rate, libraries)
            log(f"{model} rate {rate:g}: {row['status']} in {row['seconds']} s"
                + (f", {row['int8_mac_kernels_with_dp4a']}/{row['int8_mac_kernels']} int8 MAC kernels on dp4a, "
                   f"{row['ptx_dp4a']} dp4a in the PTX" if row["status"] == "ok" else f": {row['error']}"))
            rows.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"arch": args.arch, "rows": rows}, indent=1))
    table = markdown(rows, args.arch)
    args.out.with_suffix(".md").write_text(table)
    print(table)
    ok = all(r["status"] == "ok" and r["int8_mac_kernels_with_dp4a"] == r["int8_mac_kernels"]
             and (r["int8_mac_kernels"] > 0) == (r["int8_layers"] > 0) for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
