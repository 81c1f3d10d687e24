"""The model zoo: every entry imports, compiles with TVM and matches its source framework.

Each model is loaded through ``tvm_mpq.zoo.load_model(name)``, compiled untuned for the
host CPU and run on one real calibration feed; the outputs are compared with
``entry.reference(feed)`` (torch or onnxruntime). Tolerances are relative to the output's
largest magnitude and were set from measured differences (noted per model). Plus the real-data
checks: EfficientNet-Lite0 classifies scikit-image photos, RNet's accuracy on the LFW subset, and
the PP-OCR detector (an ONNX file outside the zoo with fully dynamic dims) imports with
``--input-shape`` and refuses to without.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

from tvm_mpq import zoo
from tvm_mpq.errors import MpqError
from tvm_mpq.frontends import parse_input_shapes
from tvm_mpq.runtime import compile_graph
from tvm_mpq.zoo import load_model

# max|tvm - reference| / max|reference|. Measured (untuned llvm, 2 cores): efficientnet-lite0
# 7e-7, mtcnn-rnet 7e-7, resnet18 1e-6, resnet50 1e-5, mobilenetv2 1e-5, squeezenet 3e-7,
# vgg16 3e-6, minilm 2e-7, ppocr-cls 0, ppocr-rec 2e-4.
REL_TOL = 1e-4
REL_TOL_BY_MODEL = {
    # 6625-way softmax after an SVTR (attention) neck: TVM differs from onnxruntime by up to
    # 2e-4 in probability (onnxruntime with and without its own graph optimisations differs by
    # 3e-5 on the same feed); the decoded text is checked to be identical below.
    "ppocr-rec": 1e-3,
}
ALL_MODELS = zoo.names()
EXPECTED_MODELS = {"efficientnet-lite0", "mtcnn-rnet", "ppocr-cls", "ppocr-rec", "minilm",
                   "resnet18", "resnet50", "mobilenetv2", "squeezenet", "vgg16"}


@lru_cache(maxsize=2)
def _compiled(name: str):
    """Compiled graphs reused by several tests (small models only; the large ones are not kept)."""
    return compile_graph(load_model(name))


def test_zoo_lists_every_shipped_model():
    assert EXPECTED_MODELS <= set(ALL_MODELS)
    for name in ALL_MODELS:
        entry = zoo.get(name)
        assert entry.pretrained == (entry.task != "architecture-only"), name


@pytest.mark.parametrize("name", ALL_MODELS)
def test_zoo_model_matches_reference(name):
    entry = zoo.get(name)
    graph = load_model(name)
    feed = entry.calibration(1)[0]
    assert [s.name for s in graph.inputs] == list(feed)
    compiled = _compiled(name) if name in ("efficientnet-lite0", "mtcnn-rnet") else compile_graph(graph)
    outputs = compiled.run(feed)
    references = entry.reference(feed)
    assert len(outputs) == len(references)
    tol = REL_TOL_BY_MODEL.get(name, REL_TOL)
    for out, ref in zip(outputs, references):
        assert out.shape == ref.shape
        assert np.all(np.isfinite(out))
        scale = float(np.abs(ref).max())
        assert scale > 0
        assert float(np.abs(out - ref).max()) <= tol * scale, (name, float(np.abs(out - ref).max()), scale)
    if name == "ppocr-rec":
        from tvm_mpq.zoo.ppocr import ctc_decode

        assert ctc_decode(outputs[0]) == ctc_decode(references[0]) == "Region-based seg"


def _photo_feed(photo: str) -> dict[str, np.ndarray]:
    import skimage.data
    from skimage.transform import resize

    from tvm_mpq.data.images import to_nchw

    image = getattr(skimage.data, photo)()
    h, w = image.shape[:2]
    s = min(h, w)
    crop = image[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    resized = resize(crop, (224, 224), anti_aliasing=True, preserve_range=True).astype(np.float32)
    return {"x": to_nchw([resized], 0.5, 0.5)[0]}


@pytest.mark.parametrize("photo,classes", [("chelsea", range(281, 286)),  # tabby .. Egyptian cat
                                           ("coffee", [967])])  # espresso
def test_efficientnet_lite0_classifies_real_photos(photo, classes):
    logits = _compiled("efficientnet-lite0").run(_photo_feed(photo))[0]
    assert int(logits.argmax()) in classes


def test_mtcnn_rnet_accuracy_on_lfw_subset():
    entry = zoo.get("mtcnn-rnet")
    feeds, labels = entry.labelled(None)
    assert len(feeds) == 200 and labels.sum() == 100
    compiled = _compiled("mtcnn-rnet")
    predictions = np.array([int(compiled.run(f)[0].argmax()) for f in feeds])
    # Measured: 200/200 in fp32 (smallest logit margin 2.2).
    assert (predictions == labels).mean() >= 0.99


def test_ppocr_cls_labelled_text_direction():
    """The classifier tells upright from upside-down strips well above chance (fp32 reference)."""
    entry = zoo.get("ppocr-cls")
    feeds, labels = entry.labelled(None)
    predictions = np.array([int(entry.reference(f)[0].argmax()) for f in feeds])
    assert len(feeds) == 74 and labels.mean() == 0.5
    assert (predictions == labels).mean() >= 0.8  # measured 0.865


def test_input_shapes_parse_repeated_or_comma_separated():
    assert parse_input_shapes(["ids:1x64,length:1", "x:1x3x8x8"]) == {"ids": (1, 64), "length": (1,), "x": (1, 3, 8, 8)}
    assert parse_input_shapes(["onnx::Unsqueeze_1:1x256"]) == {"onnx::Unsqueeze_1": (1, 256)}
    assert parse_input_shapes(["a,b:2x2"]) == {"a,b": (2, 2)}  # a name with a comma stays whole
    with pytest.raises(MpqError, match="'ids:1x64,length' is not NAME:DIMS"):
        parse_input_shapes(["ids:1x64,length"])


def test_ppocr_det_imports_with_input_shape():
    from tvm_mpq.zoo.ppocr import DET_FILE, model_path, onnxruntime_reference

    path = str(model_path(DET_FILE))
    graph = load_model(path, parse_input_shapes(["x:1x3x320x320"]))
    assert [(s.name, s.shape) for s in graph.inputs] == [("x", (1, 3, 320, 320))]
    assert len(graph.params) > 100  # weights stored as Constant nodes became named parameters
    feed = {"x": _page_feed()}
    out = compile_graph(graph).run(feed)[0]
    ref = onnxruntime_reference(DET_FILE)(feed)[0]
    assert out.shape == ref.shape == (1, 1, 320, 320)
    assert float(np.abs(out - ref).max()) <= 1e-4  # probabilities; measured 2e-5


def _page_feed() -> np.ndarray:
    import skimage.data
    from skimage.transform import resize

    page = resize(skimage.data.page().astype(np.float32), (320, 320), preserve_range=True)
    return np.repeat(((page / 255.0 - 0.5) / 0.5)[None, None], 3, axis=1).astype(np.float32)


def test_ppocr_det_without_input_shape_names_the_input():
    from tvm_mpq.zoo.ppocr import DET_FILE, model_path

    with pytest.raises(MpqError, match=r"input 'x' has dynamic dims .*--input-shape x:"):
        load_model(str(model_path(DET_FILE)))


def test_the_offline_photos_are_all_different_pictures():
    """Calibration and held-out sets are prefixes of ``sample_images``: every one of its 110 views
    is a different image (scikit-image's ``cat`` is its ``chelsea``, which made 10 of them repeats)."""
    from tvm_mpq.data.images import sample_images

    views = [v.tobytes() for v in sample_images(110, (24, 24))]
    assert len(set(views)) == len(views) == 110
