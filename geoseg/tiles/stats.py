"""Per-band statistics of a tile store, accumulated while the tiles are written.

Each strip of the one pass (:mod:`geoseg.tiles.strips`) counts exact sparse histograms of the
pixels it owns; they are merged once at the end, so the statistics need no second read of the
scene, and merging histograms (not means) keeps the percentiles exact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def histogram(values: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Sparse histogram ``(values, counts)`` of one band's valid pixels.

    Exact for 8/16-bit integers (the imagery geoseg targets). Other types (float reflectance,
    int32) are rounded to 11 significant bits first, so the number of distinct values, and the
    memory of merging them, stays bounded (< 2**20) whatever the scene size; their statistics
    are then within 0.05 % (relative) of the exact ones.
    """
    if dtype.kind == "u" and dtype.itemsize == 1:
        counts = _byte_counts(values)
        nz = np.nonzero(counts)[0]
        return nz, counts[nz]
    if dtype.kind == "u" and dtype.itemsize <= 2:  # bincount takes them as they are
        counts = np.bincount(values.ravel(), minlength=1)
        nz = np.nonzero(counts)[0]
        return nz, counts[nz]
    if dtype.kind == "i" and dtype.itemsize <= 2:
        offset = -int(np.iinfo(dtype).min)
        counts = np.bincount(values.astype(np.int64) + offset, minlength=1)
        nz = np.nonzero(counts)[0]
        return nz - offset, counts[nz]
    bits = values[np.isfinite(values)].astype(np.float32).view(np.uint32)
    rounded = ((bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32)
    uniq, counts = np.unique(rounded.astype(np.float64), return_counts=True)
    return uniq, counts


def _byte_counts(values: np.ndarray) -> np.ndarray:
    """Counts of the 256 values of a uint8 array, two pixels at a time.

    ``bincount`` converts its input to int64 first, which costs more than the counting: pairs
    of neighbouring pixels are counted as one uint16 value instead (a 65536-bin table whose
    two marginals are the byte counts), so half as many values are converted, in slices of
    512k pairs (that copy stays in cache). Measured 1.7x faster on 512 x 4096 NAIP bands than
    counting bytes in slices of 64k (40141ff), itself 1.8x faster than one call per band.
    """
    flat = np.ascontiguousarray(values).reshape(-1)
    if flat.size < _PAIR_SLICE:  # a small table beats zeroing 65536 bins
        return np.bincount(flat, minlength=256).astype(np.int64)
    even = flat.size - flat.size % 2
    pairs = flat[:even].view(np.uint16)
    table = np.zeros(1 << 16, np.int64)
    for i in range(0, pairs.size, _PAIR_SLICE):
        table += np.bincount(pairs[i : i + _PAIR_SLICE], minlength=1 << 16)
    table = table.reshape(256, 256)
    counts = table.sum(axis=0) + table.sum(axis=1)
    if even < flat.size:
        counts[flat[-1]] += 1
    return counts


#: pixel pairs per bincount call of :func:`_byte_counts`
_PAIR_SLICE = 1 << 19


def merge_hist(parts: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Sum sparse histograms ``(values, counts)``."""
    if not parts:
        return np.zeros(0), np.zeros(0, np.int64)
    values = np.concatenate([p[0] for p in parts])
    counts = np.concatenate([p[1] for p in parts])
    values, inverse = np.unique(values, return_inverse=True)
    return values, np.bincount(inverse, weights=counts, minlength=len(values)).astype(np.int64)


def band_stats(hists: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict[str, list[float]]:
    """Mean, std and inverted-CDF 2nd/98th percentiles per band from merged histograms.

    Inverted-CDF percentiles are actual pixel values (``np.percentile(method="inverted_cdf")``),
    so clipping to [p2, p98] never invents a value the sensor cannot produce.
    """
    out: dict[str, list[float]] = {"mean": [], "std": [], "p2": [], "p98": []}
    for values, counts in hists:
        total = int(counts.sum())
        if total == 0:
            for key in out:
                out[key].append(0.0)
            continue
        mean = float((values * counts).sum() / total)
        out["mean"].append(mean)
        out["std"].append(math.sqrt(float((((values - mean) ** 2) * counts).sum() / total)))
        cdf = np.cumsum(counts)
        for key, q in (("p2", 0.02), ("p98", 0.98)):
            out[key].append(float(values[np.searchsorted(cdf, q * total, side="left")]))
    return out
