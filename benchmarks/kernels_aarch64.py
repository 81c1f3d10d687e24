"""aarch64 kernel benchmark under QEMU emulation: int8 (sdot / NEON) vs fp32, default schedule vs rules.

Two ops -- conv2d 64->64 3x3 pad 1 @56x56 and dense 512->1000 (``--conv``, ``--dense`` to
change) -- each in fp32 (``conv+bias+relu`` / ``matmul+bias``) and int8 as the product lowers it
(uint8 x int8 -> int32, requantize epilogue; the same modules as ``benchmarks/kernels.py``), built
for ``aarch64`` (NEON) and ``aarch64-dotprod`` (``+dotprod``: ``sdot``) with TVM's default
schedule (``kernels=False``) and with the kernel rules (:mod:`tvm_mpq.kernels.cpu_mac`, NEON widths), exported
with the cross compiler and timed on the QEMU-backed RPC server (``time_evaluator``). The int8
rules libraries are disassembled (``aarch64-linux-gnu-objdump``) to report whether the
``+dotprod`` kernel contains ``sdot`` (and the plain one does not).

QEMU times are EMULATION times (user-mode QEMU translating each instruction on this x86 host):
they say nothing about a real Cortex-A core's speed; compare only ratios between builds, and even
those loosely (QEMU does not model caches or the relative cost of SIMD instructions).

Needs ``tvm-mpq setup-aarch64`` (cross g++, qemu-user, arm64 sysroot).

    python benchmarks/kernels_aarch64.py [--repeat 3]     # ~1.5-3 min on 2 cores

Writes out/bench/kernels_aarch64/report.json and report.md.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


from benchkit.ops import OpSpec, make_case, tvm_fp32_module, tvm_int8_module  # noqa: E402
from benchkit.progress import log  # noqa: E402

OBJDUMP = "aarch64-linux-gnu-objdump"
TARGETS = ("aarch64", "aarch64-dotprod")


def count_instructions(library: Path, names: tuple[str, ...] = ("sdot", "udot", "smull", "smlal", "fmla")) -> dict:
    """How often each instruction occurs in the library's disassembly."""
    text = subprocess.run([OBJDUMP, "-d", str(library)], check=True, capture_output=True, text=True).stdout
    return {n: len(re.findall(rf"\t{n}2?\t", text)) for n in names}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--conv", default="64,64,3,56", help="conv C,F,K,HW (stride 1, pad K//2)")
    p.add_argument("--dense", default="512,1000", help="dense K,N")
    p.add_argument("--repeat", type=int, default=3, help="time_evaluator repeats (median)")
    p.add_argument("--min-repeat-ms", type=float, default=200.0)
    p.add_argument("-o", "--out", type=Path, default=Path("out/bench/kernels_aarch64"))
    args = p.parse_args()

    import tvm

    from targets import get_target
    from targets.aarch64_sysroot import Sysroot, find_cross_compiler, find_qemu, sysroot_dir
    from targets.rpc import LocalRpcServer, RemoteModel
    from tvm_mpq.compiler.build import TuningOptions, build_module

    sysroot = Sysroot(sysroot_dir())
    if find_cross_compiler() is None or find_qemu() is None or shutil.which(OBJDUMP) is None or not sysroot.is_ready():
        raise SystemExit("needs the aarch64 toolchain, qemu-user and the arm64 sysroot: run `tvm-mpq setup-aarch64`")
    c, f, k, hw = (int(v) for v in args.conv.split(","))
    kd, nd = (int(v) for v in args.dense.split(","))
    specs = [OpSpec("conv2d", (1, c, hw, hw), (f, c, k, k), (1, 1), (k // 2,) * 4, 1),
             OpSpec("dense", (1, kd), (kd, nd))]
    empty = Path(tempfile.mkdtemp(prefix="tvm-mpq-bench-nodb-"))
    builds = {"default": TuningOptions(trials=0, root=empty, kernels=False, verbose=False),
              "rules": TuningOptions(trials=0, root=empty, kernels=True, verbose=False)}
    libdir = Path(tempfile.mkdtemp(prefix="tvm-mpq-bench-aarch64-"))
    rows = []
    log(f"starting the QEMU RPC server (sysroot {sysroot.root})")
    with LocalRpcServer("aarch64", sysroot=sysroot) as server:
        for i, spec in enumerate(specs):
            case = make_case(spec, seed=i)
            row = {"op": spec.label, "macs": spec.macs, "times_ms": {}, "instructions": {}}
            for prec, mod, x in (("fp32", tvm_fp32_module(case), case.x_f32), ("int8", tvm_int8_module(case), case.x_u8)):
                for target_name in TARGETS:
                    target = get_target(target_name)
                    for build, options in builds.items():
                        key = f"{prec}/{target_name}/{build}"
                        path = libdir / (key.replace("/", "-") + f"-{i}.so")
                        start = time.perf_counter()
                        try:
                            exe, _ = build_module(mod, target.tvm_target, options)
                            exe.export_library(str(path), fcompile=target.fcompile())
                            build_s = time.perf_counter() - start
                            with RemoteModel(server.connect(), path, target) as model:
                                stats = model.time([x], repeat=args.repeat, min_repeat_ms=args.min_repeat_ms,
                                                   max_seconds=60.0)
                        except Exception as err:
                            log(f"  {spec.label} {key}: FAILED {type(err).__name__}: {str(err).splitlines()[0][:200]}")
                            row["times_ms"][key] = {"error": str(err).splitlines()[0][:300]}
                            continue
                        row["times_ms"][key] = {"median_ms": stats.median_ms, "p10_ms": stats.p10_ms,
                                                "p90_ms": stats.p90_ms, "repeat": stats.repeat, "number": stats.number,
                                                "build_seconds": round(build_s, 1)}
                        if build == "rules":
                            row["instructions"][f"{prec}/{target_name}"] = count_instructions(path)
                        log(f"  {spec.label:28s} {key:28s} {stats.median_ms:10.2f} ms (QEMU)")
            rows.append(row)
    report = {"note": "QEMU user-mode EMULATION times on an x86 host: compare ratios only",
              "tvm_version": tvm.__version__, "host": _host_cpu(), "ops": rows}
    for row in rows:
        for t in TARGETS:
            ins = row["instructions"].get(f"int8/{t}", {})
            row.setdefault("sdot_in_int8_rules_kernel", {})[t] = ins.get("sdot", 0) > 0
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=1))
    md = markdown(report)
    (args.out / "report.md").write_text(md)
    print(md)
    log(f"written: {args.out}/report.json, report.md")


def _host_cpu() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


def _ms(t: dict | None) -> str:
    if not t:
        return "-"
    if "median_ms" not in t:
        return "err"
    return f"{t['median_ms']:.3f}" if t["median_ms"] < 10 else f"{t['median_ms']:.1f}"


def _ratio(a: dict | None, b: dict | None) -> str:
    ok = a and b and "median_ms" in a and "median_ms" in b
    return f"{a['median_ms'] / b['median_ms']:.2f}" if ok else "-"


def markdown(report: dict) -> str:
    lines = ["# aarch64 kernels under QEMU (EMULATION times: compare ratios only)", "",
             f"Host: {report['host']}; TVM {report['tvm_version']}.", "",
             "| op | target | fp32 default ms | fp32 rules ms | int8 default ms | int8 rules ms | "
             "fp32/int8 (rules) | default/rules int8 | sdot in int8 rules kernel | int8 rules: sdot / smull | fp32 rules: fmla |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in report["ops"]:
        t = row["times_ms"]
        for target in TARGETS:
            g = {k: t.get(f"{k.split('/')[0]}/{target}/{k.split('/')[1]}") for k in
                 ("fp32/default", "fp32/rules", "int8/default", "int8/rules")}
            ins = row["instructions"].get(f"int8/{target}", {})
            fins = row["instructions"].get(f"fp32/{target}", {})
            lines.append(f"| {row['op']} | {target} | {_ms(g['fp32/default'])} | {_ms(g['fp32/rules'])} | "
                         f"{_ms(g['int8/default'])} | {_ms(g['int8/rules'])} | {_ratio(g['fp32/rules'], g['int8/rules'])} | "
                         f"{_ratio(g['int8/default'], g['int8/rules'])} | "
                         f"{'yes' if row['sdot_in_int8_rules_kernel'][target] else 'no'} | "
                         f"{ins.get('sdot', '-')} / {ins.get('smull', '-')} | {fins.get('fmla', '-')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
