"""The one decision of which CRS measures lengths and areas in metres.

Polygon areas (``area_m2``, ``--min-area``), simplification tolerances and IoU all need a
frame where one unit is one metre on the ground. ``vectorize`` (from a class raster) and
``score`` (from two vector files) both ask; both get the answer from :func:`metric_crs`, so a
scene scored and vectorised is measured in the same frame.
"""

from __future__ import annotations

import logging
import math

log = logging.getLogger(__name__)


def metric_crs(crs, bounds) -> str | None:
    """The CRS to measure in: ``None`` when ``crs`` itself is projected in metres, else the
    WGS 84 UTM zone at the centre of ``bounds``.

    A (non-transverse) Mercator such as Web Mercator, EPSG:3857, has metre units but not
    metres on the ground: its scale grows as 1 / cos(latitude), so a 100 m² roof in Berlin
    measures 270 m² there and every area threshold would silently loosen. It is measured in
    UTM like a geographic CRS.

    Args:
        crs: a rasterio or pyproj CRS (geographic, or projected in any linear unit).
        bounds: ``(west, south, east, north)`` of the data, in ``crs``.

    Returns:
        ``"EPSG:326zz"`` / ``"EPSG:327zz"``, or ``None`` (also when ``crs`` is None, or the
        bounds are empty: there is nothing to measure, or no CRS to leave).
    """
    if crs is None:
        return None
    if _rasterio_metres(crs):
        return None
    from pyproj import CRS  # only when the answer needs it: its import is ~0.1 s of a command

    crs = CRS.from_user_input(crs)
    units = {axis.unit_name for axis in crs.axis_info}
    if crs.is_projected and units <= {"metre", "meter"} and not is_mercator(crs):
        return None
    if not all(math.isfinite(float(b)) for b in bounds):
        return None
    from rasterio.warp import transform_bounds

    # feet and degrees both go to UTM: one frame in true metres, whatever the source unit
    west, south, east, north = transform_bounds(crs.to_wkt(), "EPSG:4326", *bounds)
    lon, lat = (west + east) / 2, (south + north) / 2
    zone = min(60, int((lon + 180) // 6) + 1)
    return f"EPSG:{(32600 if lat >= 0 else 32700) + zone}"


def _rasterio_metres(crs) -> bool:
    """Whether a rasterio CRS is projected in metres by a projection other than the normal
    Mercator (UTM, transverse Mercator, Lambert...): the common case, answered without pyproj.
    Anything else (pyproj CRSs, strings, a CRS without a PROJ.4 form) goes the full way."""
    from rasterio.crs import CRS

    if not isinstance(crs, CRS) or not crs.is_projected:
        return False
    if crs.linear_units not in ("metre", "meter"):
        return False
    proj = crs.to_dict().get("proj")
    return proj is not None and proj != "merc"


def is_mercator(crs) -> bool:
    """Whether ``crs`` is a normal-aspect Mercator (Web Mercator included), whose metres are
    not ground metres away from the equator; transverse and oblique Mercators (UTM, national
    grids) keep true scale near their central line and are not."""
    operation = crs.coordinate_operation
    method = (operation.method_name if operation is not None else "").lower()
    return "mercator" in method and "transverse" not in method and "oblique" not in method


def pixel_size_metres(crs, transform, width: int, height: int, *, name: str = "the raster"):
    """The ground size in metres of the centre pixel of a ``width`` × ``height`` grid (square
    root of its area, measured in :func:`metric_crs`), or None without a CRS (a PNG).

    One rule for every scale set in ground units: the head's superpixels (from a raster) and
    the feature pyramid's windows (from a tile store's sources). A CRS with no way to WGS 84
    (engineering, local) is measured on its own axes when they are metres; anything else that
    cannot be measured gives None with a warning, so the caller keeps its pixel scales rather
    than failing.
    """
    import numpy as np
    import shapely
    from affine import Affine
    from pyproj import CRS, Transformer
    from rasterio.transform import array_bounds

    if crs is None:
        return None
    t = Affine(*list(transform)[:6])
    col, row = width // 2, height // 2
    pixel = shapely.box(*(t * (col, row + 1)), *(t * (col + 1, row)))
    try:
        west, south, east, north = array_bounds(height, width, t)
        target = metric_crs(crs, (west, south, east, north))
        if target is not None:
            to = Transformer.from_crs(crs, target, always_xy=True).transform
            pixel = shapely.transform(pixel, lambda xy: np.column_stack(to(xy[:, 0], xy[:, 1])))
    except Exception as exc:  # no way to WGS 84: metres if the axes say so, else pixel scales
        if {a.unit_name for a in CRS.from_user_input(crs).axis_info} <= {"metre", "meter"}:
            return float(np.sqrt(abs(t.a * t.e - t.b * t.d)))
        log.warning("pixel size of %s not measurable in metres (%s); scales in pixels", name, exc)
        return None
    size = float(np.sqrt(pixel.area))
    return size if np.isfinite(size) and size > 0 else None
