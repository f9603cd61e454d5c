"""Superpixel refinement: one building probability per image region, not per pixel.

A roof is one surface; a per-pixel classifier nonetheless flickers across it (shadows of roof
furniture, specular spots) and bleeds over its edges. Averaging the probability inside
superpixels — small regions of homogeneous colour that follow image edges — gives every pixel
of a surface the surface's verdict, and puts the building outline on the image edge. This is
the object-based image analysis practice of remote sensing, and the "one label per superpixel"
refinement of Kanezaki (ICASSP 2018).

Felzenszwalb & Huttenlocher's graph segmentation is used because it adapts the region size to
the image content (large on uniform roofs, small on clutter) and is fast (O(n log n)). Its
``scale`` is in the units of the colour differences; regions smaller than ``min_size`` pixels
are merged, so a region never falls below a few pixels whatever the resolution.
"""

from __future__ import annotations

import numpy as np

#: Felzenszwalb parameters on [0, 1] colours: scale (larger = larger regions), Gaussian
#: pre-smoothing sigma (pixels), smallest region (pixels)
SCALE = 50.0
SIGMA = 0.5
MIN_SIZE = 10


def to_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) float in [0, 1] from a normalised (C, H, W) image, for the segmentation.

    Three bands are used as they are; one band is repeated; with more than three, the first
    three (the model's band order) — the segmentation only needs edges, not true colour.
    """
    x = image[:3] if image.shape[0] >= 3 else np.repeat(image[:1], 3, axis=0)
    lo = x.min(axis=(1, 2), keepdims=True)
    hi = x.max(axis=(1, 2), keepdims=True)
    x = (x - lo) / np.maximum(hi - lo, 1e-6)
    return np.moveaxis(x, 0, -1).astype(np.float64)


def segments(image: np.ndarray, *, scale: float = SCALE, sigma: float = SIGMA,
             min_size: int = MIN_SIZE) -> np.ndarray:  # fmt: skip
    """Felzenszwalb superpixels (H, W) int labels of a normalised (C, H, W) image."""
    from skimage.segmentation import felzenszwalb

    return felzenszwalb(to_rgb(image), scale=scale, sigma=sigma, min_size=min_size)


def region_mean(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each pixel of ``values`` (H, W) replaced by the mean over its region of ``labels``."""
    flat = labels.ravel()
    n = int(flat.max()) + 1
    sums = np.bincount(flat, weights=values.ravel().astype(np.float64), minlength=n)
    counts = np.bincount(flat, minlength=n)
    return (sums / np.maximum(counts, 1))[labels].astype(values.dtype)


def refine(prob: np.ndarray, image: np.ndarray, **params) -> np.ndarray:
    """Building probability (H, W) averaged within superpixels of ``image`` (C, H, W)."""
    return region_mean(prob, segments(image, **params))
