"""The random-forest peer: what a GIS analyst would do with the same few labelled tiles.

A per-pixel random forest on colour and multi-scale texture features, as in Orfeo ToolBox's
TrainImagesClassifier or QGIS's Semi-Automatic Classification Plugin. It is the bar the
unsupervised recipe must beat, not part of geoseg (it uses labels for the whole decision).

Features per pixel (bands normalised as geoseg does: clipped to the scene's [p2, p98], then
standardised with the tile store's statistics):

- every band, and every band Gaussian-smoothed at σ = 1, 2, 4 px (colour and its context);
- local standard deviation of the band mean at σ = 1, 2, 4 px (texture: roofs are smooth,
  vegetation is not);
- gradient magnitude (Sobel) of the band mean smoothed at σ = 1 and 2 px (edges).

The forest is trained on every labelled pixel of the drawn tiles (1 background, 2 building),
predicts the whole image block by block (memory bounded by the block, features computed with a
halo so block borders do not show), and writes a 0/1 building GeoTIFF (nodata 255) and the
building probability; polygons then come from :func:`geoseg.vectorize` with the same clean-up
options as the benchmark's ``default`` entry.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

SCALES = (1.0, 2.0, 4.0)
HALO = 20  # > 4 σ of the largest scale: features of a block equal those of the whole image
BLOCK = 512
FOREST = {"n_estimators": 50, "min_samples_leaf": 3, "max_features": "sqrt", "n_jobs": 2}
MAX_SAMPLES = 30000  # training pixels, a random half of the 65,536 of 16 tiles of 64²


def normalise(data: np.ndarray, valid: np.ndarray, stats: dict[str, Any]) -> np.ndarray:
    """geoseg's normalisation (clip to [p2, p98], standardise); invalid pixels → 0 (the mean)."""
    out = np.empty(data.shape, np.float32)
    for b in range(data.shape[0]):
        x = np.clip(data[b].astype(np.float32), stats["p2"][b], stats["p98"][b])
        out[b] = (x - stats["mean"][b]) / max(float(stats["std"][b]), 1e-6)
    out[:, ~valid] = 0.0
    return out


def features(x: np.ndarray) -> np.ndarray:
    """(F, H, W) float32 features of normalised bands ``x`` (C, H, W); see the module doc."""
    from scipy.ndimage import gaussian_filter, sobel

    feats = []
    for band in x:
        feats.append(band)
        feats.extend(gaussian_filter(band, s) for s in SCALES)
    mean = x.mean(axis=0)
    for s in SCALES:
        m, m2 = gaussian_filter(mean, s), gaussian_filter(mean * mean, s)
        feats.append(np.sqrt(np.maximum(m2 - m * m, 0.0)))
    for s in SCALES[:2]:
        g = gaussian_filter(mean, s)
        feats.append(np.hypot(sobel(g, axis=0), sobel(g, axis=1)))
    return np.stack(feats).astype(np.float32)


def _window_features(src, bands, stats, row, col, h, w):
    """Features of the window (row, col, h, w) computed with a halo, and its valid mask."""
    from geoseg_api import read_window
    from rasterio.windows import Window

    win = Window(col - HALO, row - HALO, w + 2 * HALO, h + 2 * HALO)
    data, valid = read_window(src, win, bands)
    f = features(normalise(data, valid, stats))
    inner = (slice(HALO, HALO + h), slice(HALO, HALO + w))
    return f[:, inner[0], inner[1]], valid[inner]


def fit(
    image: Path, bands: list[int], stats: dict, labels: np.ndarray, tiles, tile: int, seed: int
):
    """A forest fitted on the labelled pixels (1 background, 2 building) of ``tiles``."""
    import rasterio
    from sklearn.ensemble import RandomForestClassifier

    xs, ys = [], []
    with rasterio.open(image) as src:
        for r, c in tiles:
            f, valid = _window_features(src, bands, stats, r, c, tile, tile)
            lab = labels[r : r + tile, c : c + tile]
            keep = valid & (lab > 0)
            xs.append(f[:, keep].T)
            ys.append(lab[keep])
    x, y = np.concatenate(xs), np.concatenate(ys)
    if len(np.unique(y)) < 2:
        raise RuntimeError(f"the labelled tiles hold only class {int(y[0])}; a forest needs both")
    rng = np.random.default_rng(seed)
    if len(y) > MAX_SAMPLES:
        pick = rng.choice(len(y), MAX_SAMPLES, replace=False)
        x, y = x[pick], y[pick]
    forest = RandomForestClassifier(random_state=seed, **FOREST)
    forest.fit(x, y)
    return forest


def predict_image(forest, image: Path, bands: list[int], stats: dict, out_dir: Path) -> dict:
    """Building raster (0/1, nodata 255) and probability (float32, NaN) over the whole image."""
    import rasterio

    out_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(image).stem
    paths = {
        "building": out_dir / f"{stem}_building.tif",
        "probability": out_dir / f"{stem}_building_probability.tif",
    }
    col = list(forest.classes_).index(2)
    with rasterio.open(image) as src:
        base = dict(
            driver="GTiff",
            width=src.width,
            height=src.height,
            count=1,
            crs=src.crs,
            transform=src.transform,
            tiled=True,
            blockxsize=256,
            blockysize=256,
            compress="deflate",
        )
        tmps = {k: p.with_suffix(".tmp.tif") for k, p in paths.items()}
        with (
            rasterio.open(tmps["building"], "w", dtype="uint8", nodata=255, **base) as b_dst,
            rasterio.open(
                tmps["probability"], "w", dtype="float32", nodata=float("nan"), **base
            ) as p_dst,
        ):
            for row in range(0, src.height, BLOCK):
                for c0 in range(0, src.width, BLOCK):
                    h, w = min(BLOCK, src.height - row), min(BLOCK, src.width - c0)
                    f, valid = _window_features(src, bands, stats, row, c0, h, w)
                    prob = np.full((h, w), np.nan, np.float32)
                    if valid.any():
                        prob[valid] = forest.predict_proba(f[:, valid].T)[:, col]
                    building = np.where(valid, prob > 0.5, 255).astype(np.uint8)
                    window = rasterio.windows.Window(c0, row, w, h)
                    b_dst.write(building, 1, window=window)
                    p_dst.write(prob, 1, window=window)
    for k, p in paths.items():
        tmps[k].replace(p)
    return paths


def run(
    image: Path,
    bands: list[int],
    stats: dict,
    labels: np.ndarray,
    tiles,
    tile: int,
    seed: int,
    out_dir: Path,
    polygons: dict[str, Any],
) -> dict[str, Any]:
    """Fit on the drawn tiles, predict the image, vectorise with ``polygons`` (vectorize kwargs).

    Returns the written paths (``building``, ``building:vector``) and ``train_s``/``predict_s``.
    """
    from geoseg_api import vectorize

    t0 = time.perf_counter()
    forest = fit(image, bands, stats, labels, tiles, tile, seed)
    t1 = time.perf_counter()
    paths = predict_image(forest, image, bands, stats, out_dir)
    vector = out_dir / f"{Path(image).stem}_buildings.gpkg"
    vectorize(
        paths["building"],
        vector,
        classes={"building": 1},
        class_names={1: "building"},
        probabilities=paths["probability"],
        overwrite=True,
        **polygons,
    )
    paths["building:vector"] = vector
    return {"paths": paths, "train_s": t1 - t0, "predict_s": time.perf_counter() - t1}
