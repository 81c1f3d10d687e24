"""CUDA builds run on a real GPU: built here, run on a GPU host that has only the TVM runtime.

This is how an edge or server team deploys a tvm-mpq CUDA build: the library is compiled on a
build machine (``nvcc`` is all the CUDA it needs) and loaded on the GPU host by TVM's runtime
alone (``TVM_USE_RUNTIME_LIB=1``: no compiler library, no tvm-mpq, no PyTorch). Three steps::

    python benchmarks/cuda_device.py prepare --dir .gpu [--models ...] [--arch sm_90]   # build host
    TVM_USE_RUNTIME_LIB=1 python benchmarks/cuda_device.py run --dir .gpu --out OUT   # GPU host
    python benchmarks/cuda_device.py report --dir .gpu --results OUT/cuda_device.json   # build host

``prepare``: per zoo model, one QuantuneV2 analysis; per rate, the config ``tvm-mpq compile
--rate`` builds (layers without an integer kernel kept fp32) is compiled for ``cuda`` and
exported, and the same config is compiled for this CPU and run on the held-out samples: its
outputs, and the fp32 build's, are the references (``ref/<model>.r<rate>.npz``). It also writes
the runtime-only TVM package the GPU host loads (``tvm-runtime.tar.gz``: the wheel's Python package
without ``libtvm_compiler.so`` and the bundled third-party headers).

``run`` (imports TVM's runtime, numpy and tvm-mpq's ground-floor modules, which import no TVM
compiler: the error line, the task metrics, the VM call timer): each library on ``tvm.cuda(0)``, every
held-out sample; output against the CPU build of the same config (max abs difference, SQNR) and
against fp32 (SQNR, and top-1 agreement for classifiers), and the latency (``time_evaluator``,
median of 10 repeats). Writes ``cuda_device.json``.

``report``: the table (``cuda_device.md`` beside the results), with the build host's CPU and the GPU.

The defaults (mtcnn-rnet and EfficientNet-Lite0 at 0, 50 and 100%, 8 held-out samples) keep the
folder, with the runtime package and the ``apache-tvm-ffi`` wheel of the GPU host's Python, under
the 64 MiB a lent GPU machine takes (EfficientNet-Lite0's fp32 library alone is 18 MiB).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository: nothing installed on a GPU host
from tvm_mpq.errors import last_line  # noqa: E402 - these import no TVM compiler (tvm_mpq's __init__ is lazy)
from tvm_mpq.metrics.task_metrics import output_sqnr_db, top1_agreement  # noqa: E402

#: The TVM wheel's files a runtime-only GPU host does not need (the compiler, third-party headers).
RUNTIME_EXCLUDES = ("lib/libtvm_compiler.so", "3rdparty", "src", "include", "web", "relax/frontend")


CORPUS_CALIB_SIZE = 8
"""Calibration inputs of a corpus model (``model_corpus.py``'s default; ``--calib-size`` is the zoo's)."""

#: ``--variants``: the CUDA target's options of each build of a config (``exact``: the defaults).
VARIANTS = {"exact": {}, "fast-math": {"fast_math": True}, "no-graph": {"cuda_graph": False}}


def _one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {last_line(err)[:300]}"


def _top1_agreement(outputs: list[list[np.ndarray]], reference: list[list[np.ndarray]]) -> float | None:
    """:func:`top1_agreement` where output 0 is a classifier's ``(1, classes)`` row, else None."""
    if reference[0][0].ndim != 2 or reference[0][0].shape[-1] < 2:
        return None
    return top1_agreement(outputs, reference)


# --------------------------------------------------------------------------- prepare (build host)

def write_runtime_package(dest: Path) -> Path:
    """``tvm-runtime.tar.gz``: the installed ``tvm`` package less :data:`RUNTIME_EXCLUDES`."""
    import tvm

    root = Path(tvm.__file__).parent
    skip = tuple(str(root / part) for part in RUNTIME_EXCLUDES)

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        path = str(root.parent / info.name)
        return None if path.startswith(skip) or "__pycache__" in info.name else info

    out = dest / "tvm-runtime.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        tar.add(root, arcname="tvm", filter=keep)
    return out


def _prepare_model(spec: str, args: argparse.Namespace, targets: dict, entries: list[dict]) -> None:
    """One model (``name[:rates]``, ``corpus:name[:rates]``): its inputs, CPU references and CUDA
    libraries into ``args.dir``, an entry per library appended to ``entries``."""
    from benchkit.progress import log
    from cuda_zoo import MAC_MARKERS, int8_mac_kernels
    from targets.cuda import kernel_source
    from tvm_mpq.api import config_for_rate
    from tvm_mpq.calibration import CalibrationCache, load_calibration
    from tvm_mpq.compiler import compile_model
    from tvm_mpq.compiler.validate import keep_unsupported_fp32
    from tvm_mpq.evaluation.sample_set import held_out
    from tvm_mpq.graph import build_layer_table
    from tvm_mpq.runtime.executor import host_target
    from tvm_mpq.zoo import load_model

    model, _, rates = spec.removeprefix("corpus:").partition(":")
    rates = [float(r) for r in (rates or args.rates).split("/")]
    if spec.startswith("corpus:"):  # a real export of the corpus, on its own input recipe
        from tvm_mpq.corpus.catalog import by_name
        from tvm_mpq.corpus.fetch import fetch
        from tvm_mpq.corpus.inputs import feeds

        entry = by_name(model)
        graph = load_model(str(fetch(entry)), entry.shapes)
        calib = feeds(entry, graph, CORPUS_CALIB_SIZE)  # (some recipes hold only 20 inputs)
        held = feeds(entry, graph, args.eval_size, offset=CORPUS_CALIB_SIZE)
    else:
        graph = load_model(model, {})
        calib = load_calibration(graph, None, args.calib_size, 0.0, 1.0)
        held = held_out(model, args.calib_size, args.eval_size).feeds
    inputs = [[np.asarray(feed[s.name]) for s in graph.inputs] for feed in held]
    np.savez_compressed(args.dir / "ref" / f"{model}.inputs.npz",
                        **{f"in{i}_{j}": a for i, feed in enumerate(inputs) for j, a in enumerate(feed)})
    report, fp32 = None, None
    for rate in [0.0] + [r for r in rates if r != 0]:
        log(f"{model} rate {rate:g}: analysis, CPU build, CUDA build")
        config, report = config_for_rate(graph, calib, rate, "quantunev2", cache=CalibrationCache(None),
                                         report=report)
        keep_unsupported_fp32(config, build_layer_table(graph))
        host = compile_model(graph, config, host_target())
        vm = host.vm()
        cpu_out = [host.run(feed, vm) for feed in held]
        fp32 = cpu_out if rate == 0 else fp32
        if rate not in rates:
            continue
        arrays = {f"cpu{i}_{j}": a for i, out in enumerate(cpu_out) for j, a in enumerate(out)}
        arrays.update({f"fp32{i}_{j}": a for i, out in enumerate(fp32) for j, a in enumerate(out)})
        np.savez_compressed(args.dir / "ref" / f"{model}.r{rate:g}.npz", **arrays)
        for variant, target in targets.items():
            with target.build_context():
                compiled = compile_model(graph, config, target.tvm_target)
            name = f"{model}.r{rate:g}" + ("" if variant == "exact" else f".{variant}")
            library = target.export(compiled, args.dir / "libs" / f"{name}.so")
            macs = [k for k in compiled.stats["build"]["kernels"] if any(m in k for m in MAC_MARKERS)]
            dp4a = int8_mac_kernels(macs, kernel_source(compiled.executable.mod))
            entries.append({"name": name, "model": model, "rate": rate, "variant": variant,
                            "library": f"libs/{library.name}", "reference": f"ref/{model}.r{rate:g}.npz",
                            "inputs": f"ref/{model}.inputs.npz", "samples": len(inputs),
                            "n_inputs": len(graph.inputs), "n_outputs": len(cpu_out[0]),
                            "int8_layers": compiled.stats["int8_layers"], "n_qdq": compiled.n_qdq,
                            "int8_mac_kernels": len(dp4a), "int8_mac_kernels_on_dp4a": sum(dp4a.values()),
                            "cuda_graph_captures": compiled.stats["build"]["cuda_graph_captures"],
                            "calib_size": len(calib),
                            "library_mb": round(library.stat().st_size / 2**20, 2)})


def prepare(args: argparse.Namespace) -> int:
    os.environ.setdefault("TVM_MPQ_NO_PROGRESS", "1")
    from benchkit.machine import flags_text, machine_info
    from targets import get_target
    from tvm_mpq.runtime.executor import host_target

    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown --variants {unknown}: choose from {', '.join(VARIANTS)}")
    targets = {v: get_target("cuda", arch=args.arch, **VARIANTS[v]) for v in variants}
    next(iter(targets.values())).check_toolchain()
    (args.dir / "libs").mkdir(parents=True, exist_ok=True)
    (args.dir / "ref").mkdir(exist_ok=True)
    write_runtime_package(args.dir)
    entries = []
    specs = [m for m in args.models.split(",") if m]
    if args.corpus_smallest:
        from tvm_mpq.corpus.catalog import smallest

        specs += [f"corpus:{m.name}" for m in smallest(args.corpus_smallest)]
    failed = []
    for spec in specs:
        try:
            _prepare_model(spec, args, targets, entries)
        except Exception as err:  # noqa: BLE001 - a model that does not build is a line of the report
            failed.append({"model": spec, "error": _one_line(err)})
            print(f"{spec}: not built: {failed[-1]['error']}")
    peer = None
    if args.torch_peer:
        import shutil

        from tvm_mpq.zoo import efficientnet_lite0

        (args.dir / "peer").mkdir(exist_ok=True)
        shutil.copy(efficientnet_lite0.weights_path(), args.dir / "peer" / "efficientnet-lite0.pth")
        reference = next(e for e in entries if e["model"] == "efficientnet-lite0")
        peer = {"model": "efficientnet-lite0", "module_file": "tvm_mpq/zoo/efficientnet_lite0.py",
                "class": "EfficientNetLite0", "weights": "peer/efficientnet-lite0.pth",
                "reference": reference["reference"], "inputs": reference["inputs"], "samples": reference["samples"]}
    kept = {peer["reference"], peer["inputs"]} if peer else set()
    left_out = _fit(args.dir, entries, args.max_mib, kept) if args.max_mib else []
    info = machine_info(int(os.environ.get("TVM_NUM_THREADS", os.cpu_count() or 1)), host_target())
    manifest = {"arch": args.arch, "eval_size": args.eval_size, "calib_size": args.calib_size, "peer": peer,
                "build_host": {"cpu": info["cpu"], "flags": flags_text(info), "tvm": info["tvm_version"]},
                "command": "python benchmarks/cuda_device.py " + " ".join(sys.argv[1:]), "entries": entries,
                "failed_builds": failed, "left_out": left_out}
    (args.dir / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(f"wrote {len(entries)} CUDA libraries and their references to {args.dir} ({_mib(args.dir):.1f} MiB)")
    return 0


def _mib(root: Path) -> float:
    """MiB of the files under ``root``."""
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 2**20


def _fit(root: Path, entries: list[dict], max_mib: float, kept: set[str]) -> list[dict]:
    """Delete libraries until ``root`` holds at most ``max_mib`` (what a GPU host's transfer takes):
    builds of a non-default variant first, then the largest. ``entries`` loses them; a reference
    or input file that no entry (nor ``kept``) uses any more goes too. Returns what was left out,
    each with its size."""
    left_out = []
    for entry in sorted(entries, key=lambda e: (e["variant"] == "exact", -e["library_mb"])):
        if _mib(root) <= max_mib:
            break
        entries.remove(entry)
        (root / entry["library"]).unlink()
        left_out.append({"name": entry["name"], "library_mb": entry["library_mb"]})
        for key in ("reference", "inputs"):
            if entry[key] not in kept and not any(e[key] == entry[key] for e in entries):
                (root / entry[key]).unlink()
        print(f"{entry['name']}: left out ({entry['library_mb']} MB) to stay within --max-mib {max_mib:g}")
    return left_out


# --------------------------------------------------------------------------- run (GPU host, runtime only)

def _run_entry(entry: dict, root: Path, repeat: int, profile: bool = False) -> tuple[dict, object]:
    import tvm
    from tvm.runtime.vm import VirtualMachine

    ref, feeds = np.load(root / entry["reference"]), np.load(root / entry["inputs"])
    n_in, n_out = entry["n_inputs"], entry["n_outputs"]
    row = {k: entry[k] for k in ("name", "model", "rate", "variant", "int8_layers", "n_qdq", "int8_mac_kernels",
                                 "int8_mac_kernels_on_dp4a", "library_mb")}
    row["cuda_graph_captures"] = entry.get("cuda_graph_captures", 0)  # (0 in manifests written before graphs)
    dev = tvm.cuda(0)
    try:
        module = tvm.runtime.load_module(str(root / entry["library"]))
        vm = VirtualMachine(module, [dev, tvm.cpu()])
        outputs = []
        for i in range(entry["samples"]):
            vm.set_input("main", *[tvm.runtime.tensor(feeds[f"in{i}_{j}"], dev) for j in range(n_in)])
            vm.invoke_stateful("main")
            result = vm.get_outputs("main")
            result = [result] if hasattr(result, "numpy") else list(result)
            outputs.append([r.numpy() for r in result])
        times = _time(vm, dev, repeat)
        if profile and entry.get("cuda_graph_captures"):  # a sync in the instrument would fail the capture
            row["kernels"] = {"skipped": "built with a CUDA graph: profile the no-graph variant"}
        elif profile:  # on a VM of its own: the instrument stays with it
            profiled = VirtualMachine(module, [dev, tvm.cpu()])
            profiled.set_input("main", *[tvm.runtime.tensor(feeds[f"in0_{j}"], dev) for j in range(n_in)])
            row["kernels"] = _profile(profiled, dev)
    except Exception as err:  # noqa: BLE001 - a failed run is a row of the table
        row.update(ran=False, error=_one_line(err))
        return row, None
    cpu = [[ref[f"cpu{i}_{j}"] for j in range(n_out)] for i in range(entry["samples"])]
    fp32 = [[ref[f"fp32{i}_{j}"] for j in range(n_out)] for i in range(entry["samples"])]
    diff = max(float(np.max(np.abs(o.astype(np.float64) - c.astype(np.float64))))
               for out, ref_out in zip(outputs, cpu) for o, c in zip(out, ref_out))
    row.update(ran=True, max_abs_diff_vs_cpu=diff, sqnr_vs_cpu_db=round(output_sqnr_db(outputs, cpu), 1),
               sqnr_vs_fp32_db=round(output_sqnr_db(outputs, fp32), 1),
               cpu_sqnr_vs_fp32_db=round(output_sqnr_db(cpu, fp32), 1),
               top1_vs_fp32=_top1_agreement(outputs, fp32), cpu_top1_vs_fp32=_top1_agreement(cpu, fp32),
               median_ms=round(times[len(times) // 2], 4), min_ms=round(times[0], 4), repeat=len(times))
    return row, vm


def _profile(vm, dev, runs: int = 5, top: int = 25) -> dict:
    """Per VM call (kernel or builtin), ms per inference with the device synchronised around
    each call (so launch gaps are not counted); the ``top`` slowest, their sum and all calls'."""
    from tvm_mpq.vm_call_timer import CallTimer

    timer = CallTimer(dev.sync)
    vm.set_instrument(timer.hook)
    for _ in range(runs):
        vm.invoke_stateful("main")
    rows = sorted(((name, total / runs * 1e3, calls // runs) for name, (total, calls) in timer.totals.items()),
                  key=lambda r: -r[1])
    return {"total_ms": round(sum(r[1] for r in rows), 4), "calls": sum(r[2] for r in rows),
            "top": [{"name": n, "ms": round(ms, 4), "calls": c} for n, ms, c in rows[:top]]}


def _time(vm, dev, repeat: int) -> list[float]:
    """Sorted milliseconds of ``repeat`` measurements of ``main``, each >= 50 ms of runs."""
    one = time.perf_counter()
    vm.invoke_stateful("main")
    dev.sync()
    one = max(time.perf_counter() - one, 1e-6)
    timer = vm.time_evaluator("invoke_stateful", dev, number=max(1, math.ceil(0.05 / one)), repeat=repeat)
    return sorted(t * 1e3 for t in timer("main").results)


def _load_cuda_runtime() -> str | None:
    """TVM's CUDA runtime sidecar (``libtvm_runtime_cuda.so``), where importing ``tvm`` did not
    load it: it registers the CUDA device API and the loader of the libraries' cubins. The
    reason in one line where it cannot load (no CUDA driver on this machine), else None."""
    import ctypes

    import tvm
    import tvm_ffi

    if tvm_ffi.get_global_func("ffi.Module.load_from_bytes.cuda", allow_missing=True) is None:
        try:
            ctypes.CDLL(str(Path(tvm.__file__).parent / "lib" / "libtvm_runtime_cuda.so"), ctypes.RTLD_GLOBAL)
        except OSError as err:
            return f"no CUDA driver here: TVM's CUDA runtime does not load ({err})"
    return None


def _run_torch_peer(peer: dict, root: Path, repeat: int) -> dict:
    """PyTorch (the GPU host's own) on the peer model's weights: eager, and replayed as one CUDA
    graph; output SQNR against the CPU fp32 build, and the latency as :func:`_time` takes it."""
    import torch

    # The zoo module's architecture (it imports only torch) without its registration in the zoo,
    # which would import tvm-mpq's compiler side.
    source = (Path(__file__).parent.parent / peer["module_file"]).read_text().replace("\n_register()\n", "\n")
    namespace: dict = {"__name__": "peer_module"}
    exec(compile(source, peer["module_file"], "exec"), namespace)  # noqa: S102 - this repository's own file
    model = namespace[peer["class"]]()
    state = torch.load(root / peer["weights"], map_location="cpu", weights_only=True)
    model.load_state_dict({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")})
    model = model.eval().cuda()
    ref, feeds = np.load(root / peer["reference"]), np.load(root / peer["inputs"])
    row = {"name": f"{peer['model']} (PyTorch {torch.__version__})", "model": peer["model"],
           "cudnn_tf32": torch.backends.cudnn.allow_tf32}
    with torch.inference_mode():
        outputs = [[model(torch.from_numpy(feeds[f"in{i}_0"]).cuda()).cpu().numpy()] for i in range(peer["samples"])]
        fp32 = [[ref[f"fp32{i}_0"]] for i in range(peer["samples"])]
        row.update(sqnr_vs_fp32_db=round(output_sqnr_db(outputs, fp32), 1), top1_vs_fp32=_top1_agreement(outputs, fp32))
        x = torch.from_numpy(feeds["in0_0"]).cuda()

        def timed(fn) -> float:
            for _ in range(3):
                fn()
            torch.cuda.synchronize()
            one = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            number = max(1, math.ceil(0.05 / max(time.perf_counter() - one, 1e-6)))
            times = []
            for _ in range(repeat):
                start = time.perf_counter()
                for _ in range(number):
                    fn()
                torch.cuda.synchronize()
                times.append((time.perf_counter() - start) / number * 1e3)
            return round(sorted(times)[len(times) // 2], 4)

        row["eager_median_ms"] = timed(lambda: model(x))
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                model(x)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            model(x)
        row["cuda_graph_median_ms"] = timed(graph.replay)
    return row


def run(args: argparse.Namespace) -> int:
    import tvm

    problem = _load_cuda_runtime()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    manifest = json.loads((args.dir / "manifest.json").read_text())
    dev = tvm.cuda(0)
    if not dev.exist:
        print("no CUDA GPU here (tvm.cuda(0).exist is False)", file=sys.stderr)
        return 2
    gpu = {"name": dev.device_name, "compute_version": dev.compute_version,
           "multi_processors": dev.multi_processor_count, "tvm": tvm.__version__,
           "runtime_only": os.environ.get("TVM_USE_RUNTIME_LIB") == "1"}
    rows, vms = [], []
    for entry in manifest["entries"]:
        row, vm = _run_entry(entry, args.dir, args.repeat, args.profile)
        rows.append(row)
        vms.append(vm)
        print(json.dumps(row), flush=True)
    for row, vm in reversed(list(zip(rows, vms))):  # a second timing, in reverse order: drift shows
        if vm is not None:
            again = _time(vm, dev, args.repeat)
            row["median_ms_second_pass"] = round(again[len(again) // 2], 4)
            print(f"{row['name']}: {row['median_ms']} ms, second pass {row['median_ms_second_pass']} ms", flush=True)
    peer = None
    if manifest.get("peer"):
        try:
            peer = _run_torch_peer(manifest["peer"], args.dir, args.repeat)
        except Exception as err:  # noqa: BLE001 - the peer is optional: its failure is one line
            peer = {"error": _one_line(err)}
        print(json.dumps(peer), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cuda_device.json").write_text(json.dumps({"gpu": gpu, "manifest": manifest, "rows": rows,
                                                          "torch_peer": peer}, indent=1))
    return 0 if all(r["ran"] for r in rows) else 1


# --------------------------------------------------------------------------- report (build host)

def _variant(row: dict) -> str:
    return row.get("variant", "fast-math")  # results written before variants existed: TVM's nvcc defaults


def markdown(results: dict) -> str:
    gpu, manifest = results["gpu"], results["manifest"]
    host = manifest["build_host"]
    lines = [f"CUDA builds (arch {manifest['arch']}) built on {host['cpu']} (`{host['flags']}`), run on "
             f"{gpu['name']} (compute {gpu['compute_version']}, {gpu['multi_processors']} SMs) by TVM "
             f"{gpu['tvm']}'s runtime alone; {manifest['eval_size']} held-out samples per model, batch 1.", "",
             "| model | rate | build | int8 layers | int8 MACs on dp4a | Q/DQ | vs the CPU build of the same config "
             "| SQNR vs fp32, GPU / CPU (dB) | top-1 vs fp32, GPU / CPU | median ms, first / second pass | MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        if not r["ran"]:
            lines.append(f"| {r['model']} | {r['rate']:g} | {_variant(r)} | {r['int8_layers']} | | "
                         f"| run failed: {r['error']} | | | | |")
            continue
        same = "equal to the bit" if r["max_abs_diff_vs_cpu"] == 0 else (
            f"{r['sqnr_vs_cpu_db']} dB, max diff {r['max_abs_diff_vs_cpu']:.1e}")
        top1 = ("-" if r["top1_vs_fp32"] is None
                else f"{r['top1_vs_fp32']:.3f} / {r['cpu_top1_vs_fp32']:.3f}")
        lines.append(f"| {r['model']} | {r['rate']:g} | {_variant(r)} | {r['int8_layers']} "
                     f"| {r['int8_mac_kernels_on_dp4a']}"
                     f"/{r['int8_mac_kernels']} | {r['n_qdq']} | {same} | {r['sqnr_vs_fp32_db']} / "
                     f"{r['cpu_sqnr_vs_fp32_db']} | {top1} | {r['median_ms']} / {r.get('median_ms_second_pass', '-')} "
                     f"| {r['library_mb']} |")
    for failure in manifest.get("failed_builds", []):
        lines.append(f"| {failure['model']} | | | | | | not built: {failure['error']} | | | | |")
    for left in manifest.get("left_out", []):
        lines.append(f"| {left['name']} | | | | | | not carried ({left['library_mb']} MB, `--max-mib`) | | | | |")
    peer = results.get("torch_peer")
    if peer and "error" in peer:
        lines += ["", f"PyTorch peer: failed: {peer['error']}"]
    elif peer:
        lines += ["", f"{peer['name']} on the same GPU and samples (cuDNN TF32 "
                      f"{'allowed' if peer['cudnn_tf32'] else 'off'}): eager {peer['eager_median_ms']} ms, one CUDA "
                      f"graph {peer['cuda_graph_median_ms']} ms; SQNR vs the CPU fp32 build {peer['sqnr_vs_fp32_db']} dB, "
                      f"top-1 agreement {peer['top1_vs_fp32']:.3f}."]
    return "\n".join(lines) + "\n"


def report(args: argparse.Namespace) -> int:
    results = json.loads(args.results.read_text())
    table = markdown(results)
    args.results.with_suffix(".md").write_text(table)
    print(table)
    return 0 if all(r["ran"] for r in results["rows"]) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("prepare", help="build the CUDA libraries and their CPU references (build host)")
    p.add_argument("--dir", type=Path, default=Path(".gpu"))
    p.add_argument("--models", default="mtcnn-rnet,efficientnet-lite0",
                   help="zoo models, each optionally :rates (slash-separated) overriding --rates")
    p.add_argument("--corpus-smallest", type=int, default=0,
                   help="also the N smallest real models of the corpus (tvm_mpq.corpus), at --rates")
    p.add_argument("--rates", default="0/50/100")
    p.add_argument("--arch", default="sm_90")
    p.add_argument("--variants", default="exact",
                   help="CUDA builds per config: exact (tvm-mpq's defaults: exact division, a CUDA graph), "
                        "fast-math (nvcc --use_fast_math), no-graph (kernels launched one by one)")
    p.add_argument("--calib-size", type=int, default=16, help="calibration samples of a zoo model (a corpus model: 8)")
    p.add_argument("--torch-peer", action="store_true",
                   help="also carry EfficientNet-Lite0's PyTorch weights: the GPU host times PyTorch on them")
    p.add_argument("--eval-size", type=int, default=8)
    p.add_argument("--max-mib", type=float, default=0,
                   help="leave out libraries (other variants first, then the largest) until the directory "
                        "holds at most this many MiB (what the transfer to the GPU host takes); 0: no limit")
    r = sub.add_parser("run", help="run them on this host's GPU with TVM's runtime alone")
    r.add_argument("--dir", type=Path, default=Path(".gpu"))
    r.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "out/bench")))
    r.add_argument("--repeat", type=int, default=10)
    r.add_argument("--profile", action="store_true", help="also time every VM call (device synchronised; libraries without a CUDA graph)")
    t = sub.add_parser("report", help="the table of a run's results")
    t.add_argument("--results", type=Path, default=Path("out/bench/cuda_device.json"))
    args = parser.parse_args(argv)
    return {"prepare": prepare, "run": run, "report": report}[args.step](args)


if __name__ == "__main__":
    sys.exit(main())
