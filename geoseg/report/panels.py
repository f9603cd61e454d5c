"""Rasters drawn for the eye: one display grid, a titled PNG per layer, a legend, a scale bar.

Every panel of a report is drawn on the same *display grid* (the reference raster, decimated
to at most ``MAX_SIDE`` pixels a side), so image, clusters, classes and errors line up when a
reader looks from one to the next. Other rasters are warped onto that grid (nearest for class
rasters, so no invented values), whatever their own resolution or CRS.
"""

from __future__ import annotations

import io
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from PIL import Image, ImageDraw, ImageFont
from pyproj import CRS
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT

from geoseg.io.crs import is_mercator

#: longest side of a panel in pixels: detailed enough to see buildings, small enough to embed
MAX_SIDE = 720
#: smaller rasters are enlarged (by whole pixels) to at least this, so a crop is not a stamp
MIN_SIDE = 360


@dataclass(frozen=True)
class Grid:
    """Where panel pixels are on the ground: CRS, transform, size, and metres per pixel."""

    crs: rasterio.crs.CRS
    transform: Affine
    width: int
    height: int
    metres_per_px: float


@dataclass
class Panel:
    """A drawn layer: title, PNG bytes, legend rows ``(css colour, label)`` and a caption."""

    title: str
    png: bytes
    legend: list[tuple[str, str]] = field(default_factory=list)
    caption: str = ""


def display_grid(path: str | Path, *, max_side: int = MAX_SIDE) -> Grid:
    """The grid of raster ``path``, decimated to at most ``max_side`` pixels a side, or
    enlarged by a whole factor when its longest side is under :data:`MIN_SIDE`."""
    with rasterio.open(path) as src:
        longest = max(src.width, src.height)
        if longest < MIN_SIDE:
            zoom = math.ceil(MIN_SIDE / longest)
            width, height = src.width * zoom, src.height * zoom
        else:
            factor = max(1, math.ceil(longest / max_side))
            width, height = math.ceil(src.width / factor), math.ceil(src.height / factor)
        transform = src.transform * Affine.scale(src.width / width, src.height / height)
        metres = metres_per_px(src.crs, transform, width, height)
        return Grid(src.crs, transform, width, height, metres)


def bounds_grid(bounds, crs, *, max_side: int = MAX_SIDE) -> Grid:
    """A display grid over ``(left, bottom, right, top)`` when no raster defines one."""
    bounds = np.asarray(bounds, dtype=float)
    if not np.isfinite(bounds).all():  # nothing to draw: a unit square keeps callers simple
        bounds = np.array([0.0, 0.0, 1.0, 1.0])
    size = max(bounds[2] - bounds[0], bounds[3] - bounds[1], 1e-9) / max_side
    width = max(1, math.ceil((bounds[2] - bounds[0]) / size))
    height = max(1, math.ceil((bounds[3] - bounds[1]) / size))
    transform = Affine(size, 0, bounds[0], 0, -size, bounds[3])
    crs = rasterio.crs.CRS.from_user_input(crs) if crs is not None else None
    return Grid(crs, transform, width, height, metres_per_px(crs, transform, width, height))


def metres_per_px(crs, transform: Affine, width: int, height: int) -> float:
    """Ground size of one display pixel along x, in metres, geographic CRSs included.

    Geographic rasters (SpaceNet's EPSG:4326) are measured on the WGS84 ellipsoid at the
    centre row, where a degree of longitude is ~cos(latitude) of a degree of latitude.
    """
    if crs is None:
        return float("nan")
    if crs.is_geographic or is_mercator(CRS.from_user_input(crs)):
        # Web Mercator's "metres" are 1/cos(latitude) ground metres: measure on the ellipsoid
        from pyproj import Geod, Transformer

        x0, y = transform * (0, height / 2)
        x1, _ = transform * (width, height / 2)
        if not crs.is_geographic:
            to_lonlat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
            (x0, x1), (y0, y1) = to_lonlat.transform([x0, x1], [y, y])
            _, _, distance = Geod(ellps="WGS84").inv(x0, y0, x1, y1)
            return distance / width
        _, _, distance = Geod(ellps="WGS84").inv(x0, y, x1, y)
        return distance / width
    return abs(transform.a) * crs.linear_units_factor[1]


def read_onto(
    path: str | Path, grid: Grid, indexes: list[int], *, categorical: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Bands of ``path`` on ``grid``: ``(data (C, H, W), valid (H, W))``.

    Class rasters use nearest-neighbour (a mean of class ids is no class); images use
    averaging, which is what an overview shows.
    """
    resampling = Resampling.nearest if categorical else Resampling.average
    with rasterio.open(path) as src:
        options = {
            "crs": grid.crs,
            "transform": grid.transform,
            "width": grid.width,
            "height": grid.height,
            "resampling": resampling,
        }
        with WarpedVRT(src, **options) as vrt:
            data = vrt.read(indexes)
            valid = vrt.read_masks(1) > 0
    return data, valid


def rgb_image(path: str | Path, grid: Grid, bands: list[int]) -> np.ndarray:
    """(H, W, 3) uint8 of three bands, each stretched between its 2nd and 98th percentile."""
    data, valid = read_onto(path, grid, bands, categorical=False)
    out = np.zeros((*data.shape[1:], 3), np.uint8)
    for i, band in enumerate(data.astype(np.float32)):
        lo, hi = np.percentile(band[valid], (2, 98)) if valid.any() else (0.0, 1.0)
        out[..., i] = np.clip((band - lo) / max(hi - lo, 1e-6) * 255, 0, 255)
    out[~valid] = 255
    return out


def class_labels(path: str | Path) -> dict[int, str]:
    """Legend labels of a class raster: the ``.qml`` style's palette labels beside it (class
    names after ``geoseg map``, e.g. "3 building"), else none."""
    qml = Path(path).with_suffix(".qml")
    if not qml.exists():
        return {}
    return {
        int(float(entry.get("value"))): entry.get("label", "")
        for entry in ET.parse(qml).iter("paletteEntry")
    }


def class_image(
    path: str | Path,
    grid: Grid,
    *,
    background: np.ndarray | None = None,
    only: dict[int, str] | None = None,
) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """(H, W, 3) uint8 of a class raster in its own colour table, and the legend of its values.

    Values whose colour is fully transparent, and values not in ``only`` when given (a 0/1
    class raster's "not building"), show the ``background`` (dimmed image) or white.
    """
    data, valid = read_onto(path, grid, [1], categorical=True)
    values = data[0]
    with rasterio.open(path) as src:
        try:
            colormap = src.colormap(1)
        except ValueError:  # no colour table: grey levels, still legible
            colormap = {}
        nodata = src.nodata
    labels = class_labels(path) if only is None else only
    present = [int(v) for v in np.unique(values[valid]) if v != nodata]
    out = np.full((*values.shape, 3), 255, np.uint8)
    if background is not None:
        out[:] = (background.astype(np.float32) * 0.6 + 255 * 0.4).astype(np.uint8)
    legend = []
    for value in present:
        rgba = colormap.get(value, (value * 37 % 256,) * 3 + (255,))
        if rgba[3] == 0 or (only is not None and value not in only):
            continue
        out[(values == value) & valid] = rgba[:3]
        legend.append((_css(rgba), labels.get(value, str(value))))
    return out, legend


def with_scale_bar(rgb: np.ndarray, metres_per_px: float) -> np.ndarray:
    """``rgb`` with a labelled scale bar (1, 2 or 5 × 10^k metres) in the lower left corner."""
    image = Image.fromarray(rgb)
    if not math.isfinite(metres_per_px) or metres_per_px <= 0:
        return np.asarray(image)
    length_m = _nice_length(rgb.shape[1] * metres_per_px / 4)
    bar_px = max(1, round(length_m / metres_per_px))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=13)
    label = f"{length_m:g} m" if length_m < 1000 else f"{length_m / 1000:g} km"
    x0, y1 = 10, rgb.shape[0] - 10
    text_w = draw.textlength(label, font=font)
    draw.rectangle([x0 - 5, y1 - 28, x0 + max(bar_px, text_w) + 5, y1 + 4], fill=(255, 255, 255))
    draw.rectangle([x0, y1 - 6, x0 + bar_px, y1], fill=(0, 0, 0))
    draw.text((x0, y1 - 25), label, fill=(0, 0, 0), font=font)
    return np.asarray(image)


def _nice_length(target: float) -> float:
    """The largest 1, 2 or 5 × 10^k not above ``target``."""
    power = 10 ** math.floor(math.log10(target))
    return max(step * power for step in (1, 2, 5) if step * power <= target)


def png_bytes(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _css(rgba) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgba[:3])
