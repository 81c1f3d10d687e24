"""One fidelity code path: ``tvm-mpq sweep``, the precision-pass benchmark and ``tvm-mpq eval``'s
integer check give identical figures for the same config on the same named sample set
(mtcnn-rnet, fully int8, 32 held-out LFW crops; ``benchmarks/fidelity_paths.py`` runs the same
comparison on any zoo model)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from tvm_mpq.evaluation.fidelity import accuracy, fidelity, figures, fp32_reference, scores
from tvm_mpq.evaluation.sample_set import held_out

ROOT = Path(__file__).resolve().parents[1]


def _benchmark(name: str, monkeypatch):
    """``benchmarks/<name>.py`` as a module; ``benchmarks/`` on the path as when it runs as a script."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sweep_precision_pass_and_eval_give_identical_figures(tmp_path, monkeypatch):
    result = _benchmark("fidelity_paths", monkeypatch).compare("mtcnn-rnet", 100.0, 32, tmp_path)
    assert set(result["samples"].values()) == {"mtcnn-rnet/held-out[16:48]"}
    sweep, bench, evaluation = (result["figures"][k] for k in ("sweep", "precision_pass", "eval"))
    assert sweep == bench == evaluation, result["figures"]
    assert set(sweep) == {"top1_agreement", "kl_softmax", "output_sqnr_db", "lfw_accuracy"}
    assert 20 < sweep["output_sqnr_db"] < 60 and result["identical"]


def test_held_out_sets_are_named_slices_after_the_calibration_samples():
    rnet = held_out("mtcnn-rnet", 16, 8)
    assert rnet.name == "mtcnn-rnet/held-out[16:24]" and len(rnet.feeds) == 8 and rnet.labels is not None
    whole = held_out("mtcnn-rnet", 0, 24)
    assert all(np.array_equal(a["x"], b["x"]) for a, b in zip(rnet.feeds, whole.feeds[16:]))
    assert list(rnet.labels) == list(whole.labels[16:])
    photos = held_out("efficientnet-lite0", 16)
    assert photos.name == "efficientnet-lite0/held-out[16:48]" and photos.labels is None
    assert photos.to_json() == {"name": photos.name, "samples": 32, "labelled": False, "source": photos.source}


def test_fidelity_and_accuracy_are_the_two_halves_of_one_score():
    samples = held_out("mtcnn-rnet", 16, 16)
    from tvm_mpq.zoo import get

    reference = fp32_reference(get("mtcnn-rnet").build_graph(), samples)
    rng = np.random.default_rng(0)
    noisy = [[o + rng.normal(scale=0.05, size=o.shape).astype(o.dtype) for o in out] for out in reference.outputs]
    split = figures("face-binary", noisy, reference)
    assert split["fidelity"] == fidelity("face-binary", noisy, reference.outputs)
    assert split["accuracy"] == accuracy("face-binary", noisy, samples.labels) and set(split["accuracy"]) == {
        "lfw_accuracy"}
    assert {**split["fidelity"], **split["accuracy"]} == scores("face-binary", noisy, reference.outputs,
                                                               samples.labels)
