"""Read building polygons for scoring: SpaceNet CSVs and georeferenced vector files.

Every reader returns the same shape, a GeoDataFrame with columns ``image_id`` (str),
``confidence`` (float) and ``geometry``, so the matcher never cares where polygons came from.
Empty geometries (SpaceNet's ``POLYGON EMPTY`` rows) are kept: they are how a CSV says "this
image exists and has no buildings", which matters for counting false positives on it.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from geoseg.errors import BadInput
from geoseg.io.labels import VECTOR_SUFFIXES
from geoseg.paths import check_input

log = logging.getLogger(__name__)

#: column names accepted for the image id and the confidence, in order of preference
IMAGE_ID_COLUMNS = ("ImageId", "image_id", "imageid", "image")
CONFIDENCE_COLUMNS = ("Confidence", "confidence", "conf", "score")

_AOI_TOKEN = re.compile(r"AOI_\d+_[A-Za-z]+")
_TILE_SUFFIX = re.compile(r"(_img\d+|_\d+_\d+)$")


def aoi_name(image_id: str) -> str:
    """The area of interest an image belongs to, for per-AOI scores.

    SpaceNet 2/3 ids carry the AOI token (``AOI_2_Vegas_img2144`` → ``AOI_2_Vegas``).
    SpaceNet 4 ids (``Atlanta_nadir8_catid_10300100023BC100_743501_3728739``) end with the
    tile's easting/northing; stripping it leaves the collect
    (``Atlanta_nadir8_catid_10300100023BC100``), which is how SpaceNet 4 reported scores (one
    AOI, scored per look angle). Any other id ending in ``_<int>_<int>`` or ``_img<int>`` loses
    that suffix; an id without one is its own AOI.
    """
    found = _AOI_TOKEN.search(image_id)
    if found:
        return found.group(0)
    return _TILE_SUFFIX.sub("", image_id) or image_id


def parse_filter(expr: str | None, *, param: str) -> tuple[str, str] | None:
    """Parse ``COLUMN=VALUE`` (e.g. ``label=1``), the way users pick buildings out of labels."""
    if expr is None:
        return None
    column, sep, value = expr.partition("=")
    if not sep or not column.strip():
        raise BadInput(
            f"{expr!r} is not COLUMN=VALUE (e.g. label=1 or class=building)", param=param
        )
    return column.strip(), value.strip()


def _apply_filter(frame: pd.DataFrame, where: tuple[str, str] | None, path: Path, param: str):
    if where is None:
        return frame
    column, value = where
    if column not in frame.columns:
        cols = ", ".join(c for c in frame.columns if c != "geometry")
        raise BadInput(f"{path.name} has no column {column!r}; columns are: {cols}", param=param)
    # compare as text so "1" matches an integer 1 and a string "1" alike
    keep = frame[column].astype(str).str.strip() == value
    if pd.api.types.is_float_dtype(frame[column]):
        keep |= frame[column].astype(str) == f"{value}.0"
    return frame[keep]


def _first_column(frame: pd.DataFrame, names: tuple[str, ...]) -> str | None:
    return next((name for name in names if name in frame.columns), None)


def read_spacenet_csv(path: str | Path, *, param: str = "PRED") -> gpd.GeoDataFrame:
    """Read a SpaceNet CSV (``ImageId, BuildingId, PolygonWKT_Pix[, PolygonWKT_Geo], Confidence``).

    Pixel coordinates (``PolygonWKT_Pix``) are used: they are what the competition scored, and
    the sample truth files carry a placeholder in ``PolygonWKT_Geo``. A missing ``Confidence``
    means every proposal is equally confident (file order breaks ties).
    """
    path = check_input(path, param=param)
    try:
        table = pd.read_csv(path, dtype={"ImageId": str})
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path.name} is not a readable CSV ({exc})", param=param) from None
    table.columns = [c.strip() for c in table.columns]
    missing = [c for c in ("ImageId", "PolygonWKT_Pix") if c not in table.columns]
    if missing:
        raise BadInput(
            f"{path.name} lacks column(s) {', '.join(missing)}; a SpaceNet CSV has "
            "ImageId, BuildingId, PolygonWKT_Pix[, PolygonWKT_Geo], Confidence",
            param=param,
        )
    wkt = table["PolygonWKT_Pix"].fillna("POLYGON EMPTY").astype(str).to_numpy()
    geoms = shapely.from_wkt(wkt, on_invalid="ignore")
    bad = np.flatnonzero(pd.isna(geoms))
    if bad.size:  # name the row, so the user can find it among thousands
        raise BadInput(
            f"{path.name} line {bad[0] + 2}: PolygonWKT_Pix {wkt[bad[0]][:40]!r} is not valid "
            "WKT; fix or remove that row",
            param=param,
        )
    conf = 1.0
    if "Confidence" in table.columns:
        conf = pd.to_numeric(table["Confidence"], errors="coerce")
        bad = np.flatnonzero(conf.isna() & table["Confidence"].notna())
        if bad.size:
            raise BadInput(
                f"{path.name} line {bad[0] + 2}: Confidence {table['Confidence'].iloc[bad[0]]!r} "
                "is not a number; fix or remove that row",
                param=param,
            )
    return gpd.GeoDataFrame(
        {"image_id": table["ImageId"].astype(str).to_numpy(), "confidence": conf},
        geometry=geoms,
        crs=None,
    )


def read_vector(path: str | Path, *, param: str = "PRED", where=None) -> gpd.GeoDataFrame:
    """Read GeoJSON / GeoPackage / FlatGeobuf / Shapefile / GeoParquet polygons.

    Without an image id column the whole file is one image, named after the file stem.
    ``where`` is a parsed ``COLUMN=VALUE`` filter (see :func:`parse_filter`).
    """
    path = check_input(path, param=param)
    try:
        if path.suffix.lower() in (".parquet", ".geoparquet"):
            frame = gpd.read_parquet(path)
        else:
            frame = gpd.read_file(path)
    except Exception as exc:  # pyogrio/arrow raise many types for an unreadable file
        raise BadInput(f"cannot read {path.name} as polygons ({exc})", param=param) from None
    frame = _apply_filter(frame, where, path, param)
    id_col = _first_column(frame, IMAGE_ID_COLUMNS)
    conf_col = _first_column(frame, CONFIDENCE_COLUMNS)
    image_ids = frame[id_col].astype(str).to_numpy() if id_col else np.full(len(frame), path.stem)
    conf = pd.to_numeric(frame[conf_col], errors="coerce") if conf_col else 1.0
    out = gpd.GeoDataFrame(
        {"image_id": image_ids, "confidence": conf}, geometry=frame.geometry.values, crs=frame.crs
    )
    out.attrs["has_image_id"] = id_col is not None
    return out


def read_polygons(path: str | Path, *, param: str, where: str | None = None) -> gpd.GeoDataFrame:
    """Read a SpaceNet CSV or a vector file (by extension) into the common frame.

    ``attrs["pixel"]`` is True for CSV input (pixel coordinates, no CRS).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    parsed = parse_filter(where, param=f"--{param.lower()}-filter")
    if suffix == ".csv":
        frame = read_spacenet_csv(path, param=param)
        frame = _apply_filter(frame, parsed, path, param) if parsed else frame
        frame.attrs["pixel"] = True
        frame.attrs["has_image_id"] = True
    elif suffix in VECTOR_SUFFIXES:
        frame = read_vector(path, param=param, where=parsed)
        frame.attrs["pixel"] = False
    else:
        raise BadInput(
            f"{path.name}: unknown polygon format; use .csv (SpaceNet), .geojson, .gpkg, .fgb, "
            ".shp or .parquet",
            param=param,
        )
    kinds = shapely.get_type_id(frame.geometry.values)
    polygonal = np.isin(kinds, (3, 6)) | shapely.is_empty(frame.geometry.values)
    if not polygonal.all():
        log.warning("%s: ignoring %d non-polygon geometries", path.name, int((~polygonal).sum()))
        frame = frame[polygonal]
    return frame


#: columns geoseg writes on its polygons (predict, vectorize)
GEOSEG_COLUMNS = {"class", "cluster", "area_m2", "score"}


def _columns(path: Path) -> set[str]:
    import pyogrio

    try:
        if path.suffix.lower() == ".csv":
            return {c.strip() for c in pd.read_csv(path, nrows=0).columns}
        if path.suffix.lower() in (".parquet", ".geoparquet"):
            import pyarrow.parquet as pq

            return set(pq.read_schema(path).names)
        return set(pyogrio.read_info(path)["fields"])
    except Exception:  # an unreadable file gets its own error from the reader
        return set()


def swapped_hint(pred: str | Path, truth: str | Path) -> str | None:
    """Why PRED and TRUTH look swapped, or None.

    Scores are not symmetric (proposals are visited by confidence, areas filtered differently),
    so a swap silently gives other numbers. Signs: TRUTH carries geoseg's output columns or a
    confidence while PRED carries neither.
    """
    p_cols, t_cols = _columns(Path(pred)), _columns(Path(truth))
    signs = (
        ("geoseg's output columns", GEOSEG_COLUMNS, 2),
        ("a confidence column", set(CONFIDENCE_COLUMNS), 1),
    )
    for what, names, enough in signs:
        if len(t_cols & names) >= enough and not p_cols & names:
            found = ", ".join(sorted(t_cols & names))
            return (
                f"TRUTH has {what} ({found}) and PRED has none: are they swapped? The order "
                "is geoseg score PRED TRUTH"
            )
    return None
