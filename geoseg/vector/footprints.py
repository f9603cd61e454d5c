"""Building footprint clean-up in metric coordinates: hole filling and right-angle
regularisation (applied by :func:`geoseg.vector.vectorize.vectorize` on request).
"""

from __future__ import annotations

import numpy as np
import shapely

#: a polygon is replaced by its minimum rotated rectangle when they overlap at least this much
REGULARIZE_MIN_IOU = 0.85


def fill_holes(geoms: np.ndarray, max_area: bool | float) -> np.ndarray:
    """Drop every hole (``True``) or the holes smaller than ``max_area`` m²."""
    out = geoms.copy()
    for i in np.flatnonzero(shapely.get_num_interior_rings(geoms) > 0):
        poly = geoms[i]
        holes = (
            []
            if max_area is True
            else [r for r in poly.interiors if shapely.Polygon(r).area >= max_area]
        )
        out[i] = shapely.Polygon(poly.exterior, holes)
    return out


def regularize(geoms: np.ndarray) -> np.ndarray:
    """Square off building-like polygons: the minimum rotated rectangle when it fits well.

    The rectangle contains the polygon, so their IoU is simply the area ratio.
    """
    if not len(geoms):
        return geoms
    rect = shapely.oriented_envelope(geoms)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = shapely.area(geoms) / shapely.area(rect)
    return np.where(iou > REGULARIZE_MIN_IOU, rect, geoms)
