"""int8 convs on AMX tiles (``tvm_mpq.kernels.cpu_amx``) against the same build with
``vpdpbusd`` only, in one process, interleaved.

    python benchmarks/amx_tiles.py [--models efficientnet-lite0,resnet18,mobilenetv2]
        [--rates 50,100] [--rounds 7] [--runs 10] [-o out/bench/amx_tiles]

Each model's QuantuneV2 config at each rate (default quantizers) is compiled twice for this
host: with its target as every build gets it (``host_target``: AMX where the machine has it,
"amx") and with ``-amx-tile,-amx-int8`` added ("vector": the AVX-512 VNNI kernels). Both take
turns in every round (each runner's minimum of ``--runs`` runs per round; medians over rounds,
the ratio taken within rounds). Also counts the kernels that use tiles and checks the outputs
are identical (integer accumulation: only the instructions change). On a CPU without AMX it
says so and stops. Prints and saves ``report.json`` / ``report.md``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def tile_kernels(executable) -> int:
    """Functions of the built host code that run ``tdpbusd`` (AMX tile kernels)."""
    module = executable.mod if hasattr(executable, "mod") else executable
    count = 0
    for mod in module._collect_dso_modules():
        for body in re.split(r"\.type\t[^\n]*@function", mod.inspect_source("asm"))[1:]:
            count += "tdpbusd" in body
    return count


def main() -> None:
    from benchkit.two_builds import parse_args, time_two_builds, write_report, zoo_points

    args = parse_args(__doc__, "50,100", "out/bench/amx_tiles")
    import tvm

    from benchkit.machine import flags_text, machine_info
    from tvm_mpq.compiler import compile_model
    from tvm_mpq.kernels.cpu_amx import AMX_FEATURES
    from tvm_mpq.kernels.cpu_isa import cpu_isa
    from tvm_mpq.runtime.executor import host_target

    target = host_target()
    info = machine_info(args.threads, target)
    if not cpu_isa(target).amx:
        print(f"this CPU has no AMX int8 tiles for tvm-mpq ({flags_text(info)}; target {target}): nothing to compare")
        return
    config = dict(target.export())
    config["mattr"] = [*config.get("mattr", []), *(f"-{f}" for f in AMX_FEATURES)]
    vector = tvm.target.Target(config)
    targets = {"amx": target, "vector": vector}

    def compile_point(point, how: str):
        return compile_model(point.graph, point.config, targets[how])

    rows = []
    points = zoo_points(args.models, args.rates)
    for timed in time_two_builds(points, ("amx", "vector"), compile_point, args.rounds, args.runs):
        rows.append({"model": timed["model"], "rate": timed["rate"], "amx_ms": timed["ms"]["amx"],
                     "vector_ms": timed["ms"]["vector"], "amx_over_vector": timed["ratio"],
                     "tile_kernels": tile_kernels(timed["compiled"]["amx"].executable),
                     "identical": timed["max_rel_diff"] == 0.0})
        r = rows[-1]
        print(f"{r['model']} rate {r['rate']:g}: amx {r['amx_ms']:.2f} ms, vector {r['vector_ms']:.2f} ms, "
              f"ratio {r['amx_over_vector']:.3f}, {r['tile_kernels']} tile kernels, identical outputs {r['identical']}",
              flush=True)
    lines = ["# int8 convs on AMX tiles vs vpdpbusd", "",
             f"{flags_text(info)}; target `{target}`; {args.threads} threads; {args.rounds} rounds x {args.runs} runs, "
             "interleaved", "",
             "| model | rate | AMX ms | vpdpbusd ms | AMX / vpdpbusd | tile kernels | identical outputs |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['rate']:g} | {r['amx_ms']:.2f} | {r['vector_ms']:.2f} | {r['amx_over_vector']:.3f} | "
              f"{r['tile_kernels']} | {'yes' if r['identical'] else 'NO'} |" for r in rows]
    write_report(args.out, info, rows, lines)


if __name__ == "__main__":
    main()
