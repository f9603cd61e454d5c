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

Those pixel parameters mean different ground sizes at different resolutions (10 px is 2.5 m²
at 0.5 m and 0.06 m² at 7.75 cm), so a head fitted on a georeferenced scene gets parameters
derived from metres (:func:`params_for`) and stores them in its record; a scene without a
pixel size (a PNG) keeps the pixel parameters.
"""

from __future__ import annotations

import numpy as np

#: Felzenszwalb parameters on [0, 1] colours: scale (larger = larger regions), Gaussian
#: pre-smoothing sigma (pixels), smallest region (pixels)
SCALE = 50.0
SIGMA = 0.5
MIN_SIZE = 10

#: the same parameters in ground units, for a scene whose pixel size is known: Felzenszwalb's
#: ``scale`` divides by a region's size in pixels, so it scales with pixels per m² like the
#: smallest region does. A smallest region of 0.25 m² (a 0.5 m square, well below any roof)
#: keeps regions inside roof edges at 0.15-0.3 m, and at 0.5 m and coarser it is one pixel,
#: i.e. refinement fades out where a pixel is already as large as a roof feature
#: (docs/results.md, "Superpixels in metres")
MIN_REGION_M2 = 0.25
SCALE_M2 = 1.25
SIGMA_M = 0.08


def params_for(pixel_size: float | None) -> dict[str, float | int]:
    """Felzenszwalb parameters (pixels) for a scene of ``pixel_size`` metres; the pixel
    parameters (:data:`SCALE`, :data:`SIGMA`, :data:`MIN_SIZE`) when the size is unknown."""
    if pixel_size is None or not pixel_size > 0:
        return {"scale": SCALE, "sigma": SIGMA, "min_size": MIN_SIZE}
    area = float(pixel_size) ** 2
    return {
        "scale": SCALE_M2 / area,
        "sigma": SIGMA_M / float(pixel_size),
        "min_size": max(1, round(MIN_REGION_M2 / area)),
    }


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


def segments(
    image: np.ndarray, *, scale: float = SCALE, sigma: float = SIGMA, min_size: int = MIN_SIZE
) -> np.ndarray:
    """Felzenszwalb superpixels (H, W) int labels of a normalised (C, H, W) image."""
    from skimage.segmentation import felzenszwalb

    return felzenszwalb(to_rgb(image), scale=scale, sigma=sigma, min_size=int(min_size))


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
