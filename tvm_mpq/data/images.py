"""Real photographs from scikit-image and scikit-learn, cropped/flipped to widen the set."""

from __future__ import annotations

import numpy as np

from tvm_mpq.errors import MpqError

_SKIMAGE_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "cat", "immunohistochemistry",
                   "hubble_deep_field", "colorwheel", "retina")


def photo_pool() -> list[np.ndarray]:
    """Every RGB photo available offline, as HxWx3 uint8 arrays."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos = [getattr(skimage.data, name)() for name in _SKIMAGE_PHOTOS]
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
