"""Do the labels cover the images at all?

A labels file of another town, in the wrong CRS, or with no feature yields a store of
all-zero labels that still says "with labels": every later label metric is then silently
meaningless. This is checked once, before any tile is written, from the labels themselves
(vector geometries against each image footprint; a label raster's non-zero pixels).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from geoseg.errors import BadInput
from geoseg.io.labels import VECTOR_SUFFIXES

log = logging.getLogger(__name__)


def footprint(transform, width: int, height: int):
    """The image's footprint polygon in its CRS (all four corners: rotated grids too)."""
    import shapely

    corners = [transform * (c, r) for c, r in ((0, 0), (width, 0), (width, height), (0, height))]
    return shapely.Polygon(corners)


def labels_cover(path: str | Path, grids: Sequence[dict]) -> list[bool]:
    """For each image grid (``{"crs", "transform", "width", "height"}``, crs as WKT or None),
    whether the labels file holds a label inside it.

    Raises:
        BadInput: (``--labels``) an empty or unreadable labels file, naming it.
    """
    text = str(path)
    if Path(text).suffix.lower() in VECTOR_SUFFIXES:
        return _vector_cover(text, grids)
    return _raster_cover(text, grids)


def _vector_cover(path: str, grids: Sequence[dict]) -> list[bool]:
    import geopandas as gpd
    import shapely
    from affine import Affine

    try:
        frame = gpd.read_file(path)
    except Exception as exc:  # pyogrio's DataSourceError and friends: the user's file
        raise BadInput(f"{path} cannot be read as vector labels ({exc})", param="--labels") from exc
    geoms = frame.geometry[frame.geometry.notna() & ~frame.geometry.is_empty]
    if geoms.empty:
        raise BadInput(
            f"{path} holds no geometry; pass a labels file with polygons (or leave --labels out)",
            param="--labels",
        )
    out = []
    for g in grids:
        local = geoms
        if g["crs"] and frame.crs is not None:
            local = geoms.to_crs(g["crs"])
        fp = footprint(Affine(*g["transform"]), g["width"], g["height"])
        out.append(bool(shapely.intersects(local.values.to_numpy(), fp).any()))
    return out


def _raster_cover(path: str, grids: Sequence[dict]) -> list[bool]:
    """A label raster is on its image's grid (LabelReader checks that); non-zero = a label."""
    import rasterio

    with rasterio.open(path) as src:
        nodata = src.nodata
        for _, window in src.block_windows(1):
            block = src.read(1, window=window)
            if nodata is not None:
                block = block[block != nodata]
            if np.any(block != 0):
                return [True] * len(grids)
    return [False] * len(grids)


def check_labels_cover(
    path: str | Path, grids: Sequence[dict], names: Sequence[str], *, allow_empty: bool = False
) -> bool:
    """Refuse labels that cover none of the images (exit 2), or with ``allow_empty`` warn
    loudly; warn about single images left without labels. Returns whether any is covered.
    """
    covered = labels_cover(path, grids)
    missed = [n for n, c in zip(names, covered, strict=True) if not c]
    if not any(covered):
        if not allow_empty:
            raise BadInput(
                f"{path} has no label inside any input image (another area or CRS?); check "
                "the file, or pass --allow-empty-labels to tile without labels",
                param="--labels",
            )
        log.warning(
            "%s has no label inside any input image: the store is written WITHOUT "
            "labels (--allow-empty-labels)",
            path,
        )
    elif missed:
        log.warning("%s has no label inside %s", path, ", ".join(missed))
    return any(covered)
