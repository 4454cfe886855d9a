"""Image corruptions of the ``imagecorruptions`` package (Cityscapes-C: 15 corruptions plus 4
extra, severities 1-5), applied deterministically: each (image, corruption, severity) is drawn
from numpy's RNG seeded by (seed, the image's path, corruption, severity), whichever process
applies it. Optionally cached on disk (keyed by the image's path and content), written
atomically.

``imagecorruptions`` 1.1.2 predates scikit-image 0.19 and numpy 2: its calls are adapted here
(``multichannel`` became ``channel_axis``; ``random_noise`` takes its generator explicitly, so
that impulse noise follows the seeded numpy RNG too; ``np.float_`` is ``np.float64``).
"""
import hashlib
import os
import types

import cv2
import numpy as np

from .datasets.common import write_png_atomic
from .samplers import seeded_rngs

__all__ = ["COMMON", "EXTRA", "corrupt_image", "corruption_names", "cached_corruption"]

COMMON = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
          "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
          "elastic_transform", "pixelate", "jpeg_compression")
EXTRA = ("speckle_noise", "gaussian_blur", "spatter", "saturate")


def corruption_names(spec) -> list:
    """Names from a list holding names and/or "common" (the 15), "extra" (4), "all" (19)."""
    groups = {"common": COMMON, "extra": EXTRA, "all": COMMON + EXTRA}
    out = []
    for item in spec:
        for name in groups.get(item, (item,)):
            if name not in COMMON + EXTRA:
                raise ValueError(f"unknown corruption {name!r}; expected common, extra, all or one "
                                 f"of {', '.join(COMMON + EXTRA)}")
            if name not in out:
                out.append(name)
    return out


_PATCHED = False


class _NumpyWithFloat:
    """numpy, plus the ``np.float_`` alias that numpy 2 removed."""

    def __getattr__(self, name):
        return np.float64 if name == "float_" else getattr(np, name)


def _imagecorruptions():
    global _PATCHED
    try:
        import warnings
        with warnings.catch_warnings():  # its pkg_resources import warns in every worker
            warnings.simplefilter("ignore")
            import imagecorruptions
            from imagecorruptions import corruptions as impl
    except ImportError as e:
        raise ImportError("corruption robustness needs the imagecorruptions package (and "
                          "scikit-image): pip install --no-deps imagecorruptions scikit-image") from e
    if not _PATCHED:
        import skimage
        import skimage.filters
        import skimage.util

        def gaussian(image, sigma=1, multichannel=None, **kwargs):
            if multichannel:
                kwargs["channel_axis"] = -1
            return skimage.filters.gaussian(image, sigma=sigma, **kwargs)

        def random_noise(image, **kwargs):
            return skimage.util.random_noise(image, rng=int(np.random.randint(2**31)), **kwargs)

        if not hasattr(np, "float_"):  # removed in numpy 2; its fog still uses it
            impl.np = _NumpyWithFloat()
        impl.gaussian = gaussian
        impl.sk = types.SimpleNamespace(color=skimage.color,
                                        util=types.SimpleNamespace(random_noise=random_noise))
        _PATCHED = True
    return imagecorruptions


def _key(path: str) -> int:
    return int.from_bytes(hashlib.blake2b(os.path.basename(path).encode(), digest_size=4).digest(), "little")


def corrupt_image(image_rgb: np.ndarray, name: str, severity: int, seed: int = 0, path: str = "") -> np.ndarray:
    """``image_rgb`` (uint8 HxWx3) under corruption ``name`` at ``severity`` (1-5), uint8."""
    if not 1 <= int(severity) <= 5:
        raise ValueError(f"severity must be 1..5, got {severity}")
    ic = _imagecorruptions()
    with seeded_rngs(seed, _key(path), (COMMON + EXTRA).index(name), int(severity)):
        out = ic.corrupt(np.ascontiguousarray(image_rgb), corruption_name=name, severity=int(severity))
    out = np.clip(np.asarray(out, dtype=np.float64), 0, 255).round().astype(np.uint8)
    if out.shape != image_rgb.shape:  # a few corruptions crop or resize on odd sizes
        out = cv2.resize(out, (image_rgb.shape[1], image_rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
    return out


def cached_corruption(image_rgb, name, severity, seed, path, cache_dir=None) -> np.ndarray:
    """corrupt_image(), read from or written to ``cache_dir/<name>/<severity>/<file>.png``. The
    file name carries a digest of the image's path and of its pixels, so an image changed at the
    same path is corrupted anew rather than served its predecessor's corruption."""
    if not cache_dir:
        return corrupt_image(image_rgb, name, severity, seed, path)
    key = hashlib.blake2b(os.path.abspath(path).encode(), digest_size=6)
    key.update(repr(image_rgb.shape).encode())
    key.update(np.ascontiguousarray(image_rgb).data)
    digest = key.hexdigest()
    dst = os.path.join(cache_dir, f"seed{seed}", name, str(severity),
                       f"{os.path.splitext(os.path.basename(path))[0]}_{digest}.png")
    if os.path.exists(dst):
        cached = cv2.imread(dst, cv2.IMREAD_COLOR)
        if cached is not None and cached.shape == image_rgb.shape:
            return cached[:, :, ::-1]
    out = corrupt_image(image_rgb, name, severity, seed, path)
    write_png_atomic(dst, out[:, :, ::-1])
    return out
