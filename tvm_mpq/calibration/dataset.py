"""Calibration data: a zoo model's own samples, an ``.npz`` of inputs, or a directory of images."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from tvm_mpq.errors import MpqError
from tvm_mpq.frontends.model_graph import ModelGraph
from tvm_mpq.types import Feed

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def load_calibration(graph: ModelGraph, source: str | None, count: int,
                     mean: float | tuple = 0.0, std: float | tuple = 1.0, scale: float = 1 / 255.0) -> list[Feed]:
    """``count`` feeds for ``graph`` from ``source`` (None: the zoo model's bundled samples)."""
    if count <= 0:
        raise MpqError(f"--calib-size must be positive, got {count}")
    if source is None:
        return _default(graph, count)
    path = Path(source)
    if not path.exists():
        raise MpqError(f"calibration source '{source}' does not exist")
    if path.is_dir():
        return _from_images(graph, sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
                            count, mean, std, scale, str(path))
    if path.suffix.lower() == ".npz":
        return _from_npz(graph, path, count)
    raise MpqError(f"calibration source '{source}' must be a directory of images or an .npz file")


def _default(graph: ModelGraph, count: int) -> list[Feed]:
    from tvm_mpq import zoo

    if graph.name in zoo.names():
        return zoo.get(graph.name).calibration(count)
    spec = _image_input(graph, "no --calib given")
    from tvm_mpq.data.images import sample_images, to_nchw

    print(f"tvm-mpq: no --calib given: using {count} bundled sample photos scaled to [0, 1] "
          f"for input '{spec.name}'; pass --calib for the model's own preprocessing", file=sys.stderr)
    images = sample_images(count, spec.shape[2:4])
    if spec.shape[1] == 1:
        images = [im.mean(axis=2, keepdims=True) for im in images]
    return [{spec.name: a.astype(spec.dtype)} for a in to_nchw(images, 0.0, 1.0)]


def _image_input(graph: ModelGraph, why: str):
    if len(graph.inputs) != 1 or len(graph.inputs[0].shape) != 4 or graph.inputs[0].shape[1] not in (1, 3) \
            or graph.inputs[0].shape[0] != 1:
        raise MpqError(f"{why}: model '{graph.name}' has inputs "
                       f"{[(s.name, s.shape) for s in graph.inputs]}, not one 1xCxHxW image; give --calib FILE.npz")
    return graph.inputs[0]


def _from_images(graph: ModelGraph, files: list[Path], count: int, mean, std, scale, where: str) -> list[Feed]:
    from PIL import Image
    from skimage.transform import resize

    from tvm_mpq.data.images import to_nchw

    spec = _image_input(graph, f"--calib {where}")
    if not files:
        raise MpqError(f"--calib {where} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    images = []
    for f in files[:count]:
        try:
            img = np.asarray(Image.open(f).convert("RGB" if spec.shape[1] == 3 else "L"), dtype=np.float32)
        except OSError as err:
            raise MpqError(f"calibration image '{f}' cannot be read: {err}") from None
        img = img if img.ndim == 3 else img[..., None]
        images.append(resize(img, spec.shape[2:4], anti_aliasing=True, preserve_range=True).astype(np.float32))
    return [{spec.name: a} for a in to_nchw(images, mean, std, scale)]


def _from_npz(graph: ModelGraph, path: Path, count: int) -> list[Feed]:
    try:
        data = np.load(path)
    except Exception as err:  # numpy raises several types for a corrupt archive
        raise MpqError(f"--calib '{path}' is not a readable .npz: {err}") from None
    feeds_per_input: dict[str, np.ndarray] = {}
    for spec in graph.inputs:
        if spec.name not in data.files:
            raise MpqError(f"--calib '{path}' has no array '{spec.name}' (has {data.files})")
        try:
            arr = data[spec.name]
        except Exception as err:  # a truncated archive fails only when the member is read
            raise MpqError(f"--calib '{path}': array '{spec.name}' is unreadable: {err}") from None
        if arr.shape[1:] == spec.shape[1:] and spec.shape[0] == 1:
            arr = arr[:, None]
        if arr.shape[1:] != spec.shape:
            raise MpqError(f"--calib '{path}': array '{spec.name}' has shape {arr.shape}; expected "
                           f"(samples, {', '.join(map(str, spec.shape))})")
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            raise MpqError(f"--calib '{path}': array '{spec.name}' has NaN or Inf values")
        feeds_per_input[spec.name] = arr.astype(spec.dtype)
    n = min(len(a) for a in feeds_per_input.values())
    return [{k: v[i] for k, v in feeds_per_input.items()} for i in range(min(n, count))]
