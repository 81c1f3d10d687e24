"""Real photographs from scikit-image and scikit-learn, cropped/flipped to widen the set, and
real document images (scikit-image's scanned page and photographed text) for models made for
documents (text detectors, layout detectors, orientation classifiers)."""

from __future__ import annotations

import numpy as np

from tvm_mpq.errors import MpqError

_SKIMAGE_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "stereo_motorcycle", "immunohistochemistry",
                   "hubble_deep_field", "colorwheel", "retina")
"""scikit-image's bundled colour photos (``stereo_motorcycle``: its left view). Not ``cat``: that
is ``chelsea`` again (until 2026-12-06 it stood here, so views 0 and 4, 11 and 15, ... were one
image twice)."""


def photo_pool() -> list[np.ndarray]:
    """Every RGB photo available offline, as HxWx3 uint8 arrays, each a different picture."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos = []
    for name in _SKIMAGE_PHOTOS:
        photo = getattr(skimage.data, name)()
        photos.append(photo[0] if isinstance(photo, tuple) else photo)  # (stereo_motorcycle: left, right, disparity)
    photos += list(load_sample_images().images)
    return [p for p in photos if p.ndim == 3 and p.shape[2] == 3]


def _views(photo: np.ndarray) -> list[np.ndarray]:
    """Centre crop, four corner-ish crops, and their mirror images."""
    h, w = photo.shape[:2]
    s = min(h, w)
    t = int(s * 0.8)
    crops = [photo[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s],
             photo[:t, :t], photo[h - t:, w - t:], photo[:t, w - t:], photo[h - t:, :t]]
    return crops + [c[:, ::-1] for c in crops]


def sample_images(count: int, size: tuple[int, int]) -> list[np.ndarray]:
    """``count`` distinct HxWx3 float32 images in [0, 255], resized to ``size`` (h, w)."""
    from skimage.transform import resize

    pool = photo_pool()
    views = [v for rank in range(10) for p in pool for v in _views(p)[rank:rank + 1]]
    if count > len(views):
        raise MpqError(f"--calib-size: only {len(views)} sample images are available, {count} asked")
    return [
        resize(v, size, anti_aliasing=True, preserve_range=True).astype(np.float32)
        for v in views[:count]
    ]


def to_nchw(images: list[np.ndarray], mean: float | tuple[float, ...], std: float | tuple[float, ...],
            scale: float = 1 / 255.0) -> list[np.ndarray]:
    """HxWxC images in [0,255] -> list of 1xCxHxW float32 arrays: ``(x*scale - mean) / std``."""
    m = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
    return [(((img.transpose(2, 0, 1) * scale) - m) / s)[None].astype(np.float32) for img in images]


_SKIMAGE_DOCUMENTS = ("page", "text")


def _document_views(page: np.ndarray) -> list[np.ndarray]:
    """The whole page, its left and right halves and its top and bottom halves, each upright
    and turned 180 degrees (what an orientation classifier tells apart)."""
    h, w = page.shape[:2]
    crops = [page, page[:, :w // 2 + w // 8], page[:, w // 2 - w // 8:], page[:h // 2 + h // 8], page[h // 2 - h // 8:]]
    return [v for c in crops for v in (c, c[::-1, ::-1])]


def _on_canvas(view: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``view`` centred on a canvas of ``size``'s aspect ratio, filled with the page's own
    background (its 90th-percentile grey), so text keeps its shape when resized."""
    h, w = view.shape
    aspect = size[1] / size[0]
    ch, cw = (h, int(round(h * aspect))) if w < h * aspect else (int(round(w / aspect)), w)
    canvas = np.full((ch, cw), np.percentile(view, 90), dtype=np.float32)
    top, left = (ch - h) // 2, (cw - w) // 2
    canvas[top:top + h, left:left + w] = view
    return canvas


def sample_documents(count: int, size: tuple[int, int]) -> list[np.ndarray]:
    """``count`` distinct HxWx3 float32 document images in [0, 255] (grey, three equal
    channels), resized to ``size`` (h, w): views of scikit-image's ``page`` (a scanned page)
    and ``text`` (a photo of printed text)."""
    import skimage.data
    from skimage.transform import resize

    pages = [getattr(skimage.data, name)().astype(np.float32) for name in _SKIMAGE_DOCUMENTS]
    views = [v for rank in range(10) for p in pages for v in _document_views(p)[rank:rank + 1]]
    if count > len(views):
        raise MpqError(f"only {len(views)} document images are available, {count} asked")
    out = []
    for view in views[:count]:
        grey = resize(_on_canvas(view, size), size, anti_aliasing=True, preserve_range=True).astype(np.float32)
        out.append(np.repeat(grey[:, :, None], 3, axis=2))
    return out
