"""Tutorial 2 (edge deployment): from an ONNX file to an aarch64 library at a chosen BOPs
reduction rate, run on an aarch64 board (here: QEMU) over TVM RPC, fidelity checked.

    python tutorials/02_edge_deployment.py        # outputs in $TVM_MPQ_TUTORIAL_OUT or ./out/tutorial2

The same with the CLI::

    tvm-mpq compile model.onnx --input-shape x:1x3x48x192 --calib calib.npz --rate 50 \\
        --target aarch64 -o model.so        # also writes model.config.json
    tvm-mpq rpc-server --target aarch64      # on the board (here: under QEMU on loopback)

Steps: the ONNX file (PP-OCR's text-direction classifier, a real export with dynamic dims, from
the rapidocr wheel) gets a static input shape; a calibration set is saved as ``.npz`` (what you
would ship from your own data); QuantuneV2 analyses it and allocates 50% BOPs reduction; the
config and the calibration cache are saved next to the library; the library is cross-compiled
with ``aarch64-linux-gnu-g++``, checked to be an AArch64 ELF, uploaded to the RPC server, run,
timed (QEMU times are emulation times), and its outputs compared with the fp32 model's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from targets import get_target
from targets.aarch64_sysroot import setup_aarch64
from targets.elf import read_elf_machine
from targets.rpc import LocalRpcServer, run_on_server
from tvm_mpq.api import config_for_rate
from tvm_mpq.calibration import CalibrationCache, load_calibration
from tvm_mpq.compiler import compile_model
from tvm_mpq.compiler.validate import keep_unsupported_fp32
from tvm_mpq.evaluation.fidelity import fidelity
from tvm_mpq.graph import build_layer_table
from tvm_mpq.runtime.executor import compile_graph
from tvm_mpq.zoo import get, load_model
from tvm_mpq.zoo.ppocr import CLS_FILE, model_path

OUT = Path(os.environ.get("TVM_MPQ_TUTORIAL_OUT", "out/tutorial2"))
OUT.mkdir(parents=True, exist_ok=True)
RATE = 50.0

# 1. the ONNX file, with a static input shape for its dynamic dims
onnx_file = model_path(CLS_FILE)
graph = load_model(str(onnx_file), {"x": (1, 3, 48, 192)})
table = build_layer_table(graph)
print(f"1. {onnx_file.name}: {len(table)} MAC layers, {table.total_macs() / 1e6:.1f} M MACs")

# 2. a calibration set as .npz (here: text strips from scikit-image, preprocessed like PP-OCR)
samples = get("ppocr-cls").calibration(12)
np.savez(OUT / "calib.npz", x=np.concatenate([s["x"] for s in samples]))
feeds = load_calibration(graph, str(OUT / "calib.npz"), 8)
evaluation = [{"x": s["x"]} for s in samples[8:]]
print(f"2. calibration: {len(feeds)} samples from {OUT / 'calib.npz'}; {len(evaluation)} held out")

# 3. analysis + allocation; the config and the calibration cache are saved
cache = CalibrationCache(OUT / "cache")
config, report = config_for_rate(graph, feeds, RATE, "quantunev2", cache=cache)
keep_unsupported_fp32(config, table)
config.save(OUT / "model.config.json")
print(f"3. QuantuneV2 in {report.seconds:.1f} s: rate {RATE:g}% -> achieved "
      f"{config.provenance['bops_reduction_rate']:.1f}%, {len(config.fp32_layers())} fp32 layer(s); "
      f"config {OUT / 'model.config.json'}, calibration cache {OUT / 'cache'}")

# 4. cross-compile for aarch64 (NEON; aarch64-dotprod adds the dot-product extension)
setup_aarch64()  # cross g++ + QEMU + the arm64 sysroot the RPC server runs in (cached)
target = get_target("aarch64")
with target.build_context():
    compiled = compile_model(graph, config, target.tvm_target)
library = target.export(compiled, OUT / "model.so")
assert read_elf_machine(library) == 183, "not an AArch64 ELF"
print(f"4. {library}: AArch64 ELF, {library.stat().st_size / 1e6:.2f} MB, n_qdq {compiled.n_qdq} "
      f"(per-layer QDQ: {compiled.n_qdq_naive}), {compiled.stats['int8_layers']} int8 layers")

# 5. run on the board over RPC (an aarch64 TVM RPC server under QEMU on loopback)
with LocalRpcServer(arch="aarch64") as server:
    host, port = server.address
    remote = run_on_server(library, evaluation, target, rpc_address=f"{host}:{port}", repeat=3, min_repeat_ms=0)
lat = remote.latency.to_json()
print(f"5. ran on {remote.server}: median {lat['median']:.1f} ms (p10 {lat['p10']:.1f}, p90 {lat['p90']:.1f}; "
      f"QEMU emulation time, compare only ratios)")

# 6. fidelity against the fp32 model on the held-out samples
fp32 = compile_graph(graph)
reference = [fp32.run(f) for f in evaluation]
scores = fidelity("text-direction", remote.outputs, reference)
print("6. fidelity vs fp32:", {k: round(v, 4) for k, v in scores.items()})
assert scores["top1_agreement"] >= 0.75 and scores["output_sqnr_db"] > 15, "the aarch64 model lost fidelity"

# what the tutorial found, for tests/test_tutorials.py
(OUT / "result.json").write_text(json.dumps({
    "layers": len(table), "requested_rate": RATE, "achieved_rate": config.provenance["bops_reduction_rate"],
    "fp32_layers": config.fp32_layers(), "config": str(OUT / "model.config.json"), "library": str(library),
    "elf_machine": read_elf_machine(library), "int8_layers": compiled.stats["int8_layers"], "n_qdq": compiled.n_qdq,
    "n_qdq_naive": compiled.n_qdq_naive, "server": str(remote.server), "latency_ms": lat, "fidelity": scores},
    indent=1))
print("done")
