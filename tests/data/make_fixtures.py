"""Generate the tiny seeded rasters the unit tests use (run by tests/conftest.py into a temp dir).

The synthetic scene mimics an RGB+NIR urban image so clustering has something to find:
bright grey rectangles (roofs, low NIR), green blobs with high NIR (vegetation), dark straight
strips (roads) on a brownish soil background, plus noise. A class label raster is kept beside
it (1 building, 2 road, 3 vegetation, 4 soil) so tests can measure what a method recovers.
Run ``python tests/data/make_fixtures.py OUT_DIR`` to write them by hand.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

BUILDING, ROAD, VEGETATION, SOIL = 1, 2, 3, 4

#: mean R, G, B, NIR (uint8) per class
_COLOURS = {
    SOIL: (150, 120, 90, 110),
    BUILDING: (205, 205, 210, 70),
    ROAD: (60, 60, 65, 40),
    VEGETATION: (60, 120, 50, 210),
}


def synthetic_scene(
    height: int = 96, width: int = 128, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(image (4,H,W) uint8, labels (H,W) uint8)`` of the synthetic urban scene."""
    rng = np.random.default_rng(seed)
    labels = np.full((height, width), SOIL, np.uint8)
    for _ in range(max(1, height * width // 4000)):
        r, c = rng.integers(0, height), rng.integers(0, width)
        rad = rng.integers(4, 10)
        yy, xx = np.ogrid[:height, :width]
        labels[(yy - r) ** 2 + (xx - c) ** 2 < rad**2] = VEGETATION
    for row in range(height // 3, height, max(8, height // 2)):
        labels[row : row + 4, :] = ROAD
    labels[:, width // 2 : width // 2 + 4] = ROAD
    for _ in range(max(2, height * width // 1500)):
        h, w = rng.integers(5, 14, size=2)
        r, c = rng.integers(0, max(1, height - h)), rng.integers(0, max(1, width - w))
        labels[r : r + h, c : c + w] = BUILDING
    image = np.zeros((4, height, width), np.float32)
    for cls, colour in _COLOURS.items():
        for b in range(4):
            image[b][labels == cls] = colour[b]
    image += rng.normal(0, 8, image.shape)
    return np.clip(image, 1, 254).astype(np.uint8), labels


def write_raster(
    path: str | Path,
    data: np.ndarray,
    *,
    crs: str = "EPSG:32611",
    origin: tuple[float, float] = (500000.0, 4000000.0),
    res: float = 0.5,
    nodata: float | None = None,
    descriptions: tuple[str, ...] | None = None,
    tiled: bool = False,
) -> Path:
    """Write ``data`` (C,H,W) as a GeoTIFF with a north-up transform and a real CRS."""
    path = Path(path)
    count, height, width = data.shape
    profile = dict(
        driver="GTiff",
        width=width,
        height=height,
        count=count,
        dtype=data.dtype.name,
        crs=crs,
        transform=from_origin(origin[0], origin[1], res, res),
        nodata=nodata,
    )
    if tiled:
        profile.update(tiled=True, blockxsize=64, blockysize=64)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if descriptions:
            for i, d in enumerate(descriptions, start=1):
                dst.set_band_description(i, d)
    return path


def write_class_raster(
    path: str | Path, data: np.ndarray, *, nodata=255, colormap=None, **profile
) -> Path:
    """A one-band class map as predict fills its scratch file: tiled 256², ``nodata``, an
    optional colour table; ``profile`` adds creation options (compression)."""
    path = Path(path)
    options = dict(
        driver="GTiff",
        width=data.shape[1],
        height=data.shape[0],
        count=1,
        dtype=data.dtype.name,
        crs="EPSG:32611",
        transform=from_origin(500000.0, 4000000.0, 0.5, 0.5),
        nodata=nodata,
        tiled=True,
        blockxsize=256,
        blockysize=256,
        **profile,
    )
    with rasterio.open(path, "w", **options) as dst:
        dst.write(data, 1)
        if colormap:
            dst.write_colormap(1, colormap)
    return path


def write_all(out: str | Path) -> dict[str, Path]:
    """Write every fixture into ``out``; returns name → path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    image, labels = synthetic_scene(96, 128, seed=0)
    paths = {
        "rgbn": write_raster(out / "rgbn.tif", image, descriptions=("red", "green", "blue", "nir")),
        "labels": write_raster(out / "labels.tif", labels[None]),
        # geographic CRS (like SpaceNet): ~0.5 m pixels at 36° N
        "rgbn_4326": write_raster(
            out / "rgbn_4326.tif", image, crs="EPSG:4326", origin=(-115.25, 36.2), res=5e-6
        ),
    }
    nod = image.copy()
    nod[:, :, :20] = 0
    paths["rgbn_nodata"] = write_raster(out / "rgbn_nodata.tif", nod, nodata=0)
    return paths


if __name__ == "__main__":
    for name, p in write_all(sys.argv[1] if len(sys.argv) > 1 else "fixtures").items():
        print(name, p)
