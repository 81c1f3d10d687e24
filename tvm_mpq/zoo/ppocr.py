"""PP-OCR text-direction classifier and text recogniser, as shipped in ``rapidocr-onnxruntime``.

The ONNX files come inside the ``rapidocr-onnxruntime==1.4.4`` wheel
(``rapidocr_onnxruntime/models/``); they are found with ``importlib.util.find_spec``, rapidocr's
own modules are never imported (they need OpenCV). Both files have dynamic batch/height/width
dims, so they are the real-world "fold the shape sub-graphs" import case: the zoo fixes the
shapes rapidocr's ``config.yaml`` uses (``cls_image_shape: [3, 48, 192]``,
``rec_img_shape: [3, 48, 320]``) and imports through
:func:`tvm_mpq.frontends.onnx_frontend.from_onnx_model`.

* ``ppocr-cls`` (``ch_ppocr_mobile_v2.0_cls_infer.onnx``, MobileNetV3-small): softmax over
  ``["0", "180"]`` (is the text line upside down). Labelled data: text strips upright (0) and
  rotated by 180 degrees (1).
* ``ppocr-rec`` (``ch_PP-OCRv4_rec_infer.onnx``, PP-LCNetV3 + SVTR neck + CTC head): per time
  step (40 of them at width 320) a softmax over 6625 classes (blank, 6623 characters kept in the
  file's ``character`` metadata, space).

Real data: text lines cut from scikit-image's ``page()`` (a scanned book page) and ``text()``
(handwriting photo), preprocessed as rapidocr's ``resize_norm_img`` does: keep the aspect ratio
at height 48, cap the width, ``(x/255 - 0.5) / 0.5``, zero-pad on the right. (rapidocr resizes
with OpenCV's bilinear ``cv2.resize``; here scikit-image's bilinear ``resize`` is used.)
"""

from __future__ import annotations

import importlib.util
import math
from functools import lru_cache
from pathlib import Path

import numpy as np

from tvm_mpq.errors import MpqError
from tvm_mpq.types import Feed

CLS_FILE = "ch_ppocr_mobile_v2.0_cls_infer.onnx"
REC_FILE = "ch_PP-OCRv4_rec_infer.onnx"
DET_FILE = "ch_PP-OCRv4_det_infer.onnx"
CLS_SHAPE = (1, 3, 48, 192)
REC_SHAPE = (1, 3, 48, 320)
INPUT_NAME = "x"
CLS_LABELS = ("0", "180")

# Text-line bands (row ranges) of skimage.data.page(), 384 px wide: title, five body lines, code.
_PAGE_LINES: tuple[tuple[int, int], ...] = (
    (8, 38), (46, 66), (64, 84), (82, 102), (99, 120), (116, 138), (168, 191))
# Bands of skimage.data.text() (a photo of handwritten formulae), 448 px wide.
_TEXT_LINES: tuple[tuple[int, int], ...] = ((0, 45), (40, 90), (85, 135), (125, 172))


def models_dir() -> Path:
    """``rapidocr_onnxruntime/models`` of the installed wheel (its modules are not imported)."""
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or not spec.submodule_search_locations:

        raise MpqError("rapidocr-onnxruntime==1.4.4 is not installed (pip install --no-deps rapidocr-onnxruntime==1.4.4)")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def model_path(file: str) -> Path:
    return models_dir() / file


def text_strips() -> list[np.ndarray]:
    """Grayscale text-line crops (float32, [0, 255]) with aspect ratio <= 320/48.

    Each band is cut into windows ``6 * height`` wide at half-window steps (whole lines are
    ~19x wider than high, more than the 320x48 input holds).
    """
    import skimage.data

    strips: list[np.ndarray] = []
    for image, bands in ((skimage.data.page(), _PAGE_LINES), (skimage.data.text(), _TEXT_LINES)):
        image = image.astype(np.float32)
        for top, bottom in bands:
            band = image[top:bottom]
            width = min(6 * band.shape[0], band.shape[1])
            for left in range(0, band.shape[1] - width + 1, width // 2):
                strips.append(band[:, left:left + width])
    return strips


def resize_norm(strip: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """rapidocr's ``resize_norm_img``: HxW [0,255] gray -> ``shape`` (1x3xHxW) float32."""
    from skimage.transform import resize

    _, channels, height, width = shape
    resized_w = min(width, int(math.ceil(height * strip.shape[1] / strip.shape[0])))
    resized = resize(strip, (height, resized_w), order=1, anti_aliasing=False, preserve_range=True)
    resized = (resized.astype(np.float32) / 255.0 - 0.5) / 0.5
    out = np.zeros(shape, np.float32)
    out[0, :, :, :resized_w] = resized[None]
    return out


def _feeds(shape: tuple[int, ...], count: int | None, rotate: bool = False) -> list[Feed]:
    strips = text_strips()
    count = len(strips) if count is None else count
    if count > len(strips):
        raise MpqError(f"--calib-size: only {len(strips)} text strips are available, {count} asked")
    return [{INPUT_NAME: resize_norm(s[::-1, ::-1] if rotate else s, shape)} for s in strips[:count]]


def _cls_labelled(count: int | None) -> tuple[list[Feed], np.ndarray]:
    """Upright strips (label 0, "0") and the same strips rotated by 180 degrees (label 1, "180")."""
    half = None if count is None else (count + 1) // 2
    upright = _feeds(CLS_SHAPE, half)
    flipped = _feeds(CLS_SHAPE, half, rotate=True)
    feeds = [f for pair in zip(upright, flipped) for f in pair]
    labels = np.array([i % 2 for i in range(len(feeds))], np.int64)
    return feeds[:count], labels[:count]


@lru_cache(maxsize=1)
def rec_characters() -> tuple[str, ...]:
    """The recogniser's classes: blank, the characters in the file's metadata, space."""
    import onnx

    model = onnx.load(str(model_path(REC_FILE)), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    return ("blank", *meta["character"].splitlines(), " ")


def ctc_decode(probs: np.ndarray) -> str:
    """Greedy CTC decoding of one ``(1, T, 6625)`` recogniser output (as rapidocr does)."""
    chars = rec_characters()
    best = probs[0].argmax(-1)
    keep = np.ones_like(best, bool)
    keep[1:] = best[1:] != best[:-1]
    keep &= best != 0
    return "".join(chars[i] for i in best[keep])


def _onnx_graph(file: str, name: str, shape: tuple[int, ...]):
    from tvm_mpq.frontends.onnx_frontend import from_onnx_model, read_onnx

    path = model_path(file)
    return from_onnx_model(read_onnx(path), name, {INPUT_NAME: shape}, source=str(path))


def onnxruntime_reference(file: str):
    """A ``reference`` function running onnxruntime on ``file`` (imported lazily, cached)."""
    cache: dict[str, object] = {}

    def run(feed: Feed) -> list[np.ndarray]:
        if "s" not in cache:
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = 1
            cache["s"] = onnxruntime.InferenceSession(
                str(model_path(file)), options, providers=["CPUExecutionProvider"])
        return [np.asarray(o) for o in cache["s"].run(None, dict(feed))]

    return run


def _register() -> None:
    from tvm_mpq.zoo.registry import ZooModel, register

    register(ZooModel(
        name="ppocr-cls",
        task="text-direction",
        description="PP-OCR mobile v2.0 text-direction classifier (0 / 180 degrees), ONNX from "
                    "rapidocr-onnxruntime, 1x3x48x192; text strips from scikit-image page/text",
        pretrained=True,
        build_graph=lambda: _onnx_graph(CLS_FILE, "ppocr-cls", CLS_SHAPE),
        calibration=lambda count: _feeds(CLS_SHAPE, count),
        reference=onnxruntime_reference(CLS_FILE),
        labelled=_cls_labelled,
        extra={"onnx": CLS_FILE, "labels": CLS_LABELS, "input_shape": CLS_SHAPE},
    ))
    register(ZooModel(
        name="ppocr-rec",
        task="text-recognition",
        description="PP-OCRv4 text recogniser (CTC over 6625 classes), ONNX from "
                    "rapidocr-onnxruntime, 1x3x48x320; text strips from scikit-image page/text",
        pretrained=True,
        build_graph=lambda: _onnx_graph(REC_FILE, "ppocr-rec", REC_SHAPE),
        calibration=lambda count: _feeds(REC_SHAPE, count),
        reference=onnxruntime_reference(REC_FILE),
        extra={"onnx": REC_FILE, "input_shape": REC_SHAPE},
    ))


_register()
