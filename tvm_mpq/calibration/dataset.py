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
    path = None if source is None else Path(source)
    if path is not None and not path.exists():
        raise MpqError(f"calibration source '{source}' does not exist")
    if path is not None and path.is_dir():
        _check_normalization(graph, mean, std)
        return _from_images(graph, sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
                            count, mean, std, scale, str(path))
    if np.any(np.asarray(mean) != 0.0) or np.any(np.asarray(std) != 1.0):
        raise MpqError("--mean / --std normalize the images of --calib DIR; "
                       f"{'an .npz holds the inputs as the model takes them' if path else 'give --calib DIR with them'}")
    if path is None:
        return _default(graph, count)
    if path.suffix.lower() == ".npz":
        return _from_npz(graph, path, count)
    raise MpqError(f"calibration source '{source}' must be a directory of images or an .npz file")


def _check_normalization(graph: ModelGraph, mean: float | tuple, std: float | tuple) -> None:
    """MpqError unless ``--mean`` / ``--std`` are finite, ``std`` nonzero, and each one value or
    one per channel of the model's image input."""
    channels = graph.inputs[0].shape[1] if graph.inputs and len(graph.inputs[0].shape) == 4 else None
    for option, values in (("--mean", np.atleast_1d(np.asarray(mean, np.float64))),
                           ("--std", np.atleast_1d(np.asarray(std, np.float64)))):
        if not np.isfinite(values).all() or (option == "--std" and np.any(values == 0)):
            raise MpqError(f"{option} {' '.join(f'{v:g}' for v in values)}: the values must be finite"
                           f"{' and nonzero' if option == '--std' else ''}")
        if len(values) != 1 and channels is not None and len(values) != channels:
            raise MpqError(f"{option} gives {len(values)} values; the model's image input has {channels} channels "
                           "(give one value, or one per channel)")


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
        feeds_per_input[spec.name] = _as_input_dtype(arr, spec.dtype, f"--calib '{path}': array '{spec.name}'")
    counts = {name: len(a) for name, a in feeds_per_input.items()}
    if len(set(counts.values())) > 1:
        raise MpqError(f"--calib '{path}': the arrays hold different numbers of samples ({counts}); "
                       "each sample needs every input")
    _check_lookup_indices(graph, feeds_per_input, f"--calib '{path}'")
    n = min(counts.values())
    return [{k: v[i] for k, v in feeds_per_input.items()} for i in range(min(n, count))]


def _as_input_dtype(arr: np.ndarray, dtype: str, what: str) -> np.ndarray:
    """``arr`` as the input's ``dtype``; MpqError where that would change a value (1.5 or 300
    for an integer input: token ids, byte values)."""
    if not np.issubdtype(np.dtype(dtype), np.integer) or np.issubdtype(arr.dtype, np.bool_):
        return arr.astype(dtype)
    if np.issubdtype(arr.dtype, np.floating) and np.any(arr != np.round(arr)):
        raise MpqError(f"{what} holds fractional values ({arr.dtype}) for an input of {dtype}")
    info = np.iinfo(np.dtype(dtype))
    if arr.size and (arr.min() < info.min or arr.max() > info.max):
        raise MpqError(f"{what} holds values {arr.min()}..{arr.max()}, outside {dtype}'s {info.min}..{info.max}")
    return arr.astype(dtype)


def _check_lookup_indices(graph: ModelGraph, arrays: dict[str, np.ndarray], what: str) -> None:
    """MpqError when an integer input that indexes a table (ONNX ``Gather``: an embedding's
    token ids) holds an index outside the table: TVM's ``take`` reads out of bounds there, and
    calibration would measure whatever memory it found."""
    for name, extent in lookup_extents(graph).items():
        arr = arrays.get(name)
        if arr is not None and arr.size and (arr.min() < -extent or arr.max() >= extent):
            raise MpqError(f"{what}: input '{name}' holds indices {arr.min()}..{arr.max()}, but the table it "
                           f"indexes has {extent} rows (valid: {-extent}..{extent - 1})")


def lookup_extents(graph: ModelGraph) -> dict[str, int]:
    """Integer model input -> the smallest extent of a ``take`` axis it indexes (directly or
    through a cast): the range its values must stay in."""
    from tvm import relax

    main = graph.mod["main"]
    inputs = {param: param.name for param in main.params}
    var2val = relax.analysis.get_var2val(main)
    extents: dict[str, int] = {}

    def source_input(expr, depth: int = 0):
        """The input ``expr`` is, through casts and the importer's wrap of negative indices
        (``where(ids < 0, ids + n, ids)``); None for anything computed otherwise."""
        if not isinstance(expr, relax.Var) or depth > 8:
            return None
        if expr in inputs:
            return inputs[expr]
        value = var2val.get(expr)
        op = getattr(getattr(value, "op", None), "name", "") if isinstance(value, relax.Call) else ""
        if op == "relax.astype":
            return source_input(value.args[0], depth + 1)
        if op == "relax.where":
            branches = {source_input(arg, depth + 1) for arg in value.args[1:]}
            return branches.pop() if len(branches) == 1 else None
        if op == "relax.add":  # ids + n (the negative branch): the operand that is an input
            found = [name for name in (source_input(arg, depth + 1) for arg in value.args) if name is not None]
            return found[0] if len(found) == 1 else None
        return None

    def visit(expr) -> None:
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.take":
            name = source_input(expr.args[1])
            shape = getattr(expr.args[0].ty, "shape", None)
            axis = expr.attrs.axis
            if name is None or shape is None or axis is None:
                return
            dim = shape[int(axis)]
            if hasattr(dim, "value"):
                extents[name] = min(extents.get(name, int(dim.value)), int(dim.value))

    relax.analysis.post_order_visit(main.body, visit)
    return extents
