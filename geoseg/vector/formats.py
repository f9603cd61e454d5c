"""Write polygon layers by extension, atomically, with a QGIS style beside them.

Shared by ``geoseg vectorize``, ``geoseg predict`` (mapped classes) and the demo, so every
polygon output has the same formats, GeoPackage version and styling.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from geoseg.errors import BadInput
from geoseg.paths import atomic_output

if TYPE_CHECKING:
    import geopandas

#: output extension → OGR driver ("parquet" is written by geopandas, not OGR)
FORMATS = {
    ".gpkg": "GPKG",
    ".geojson": "GeoJSON",
    ".json": "GeoJSON",
    ".fgb": "FlatGeobuf",
    ".parquet": "parquet",
}


def output_format(path: str | Path, *, param: str = "--output") -> str:
    """The driver for a vector output path, or BadInput naming the supported extensions."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        known = ", ".join(FORMATS)
        raise BadInput(
            f"unknown vector format {suffix or '(none)'!r}; use one of {known}", param=param
        )
    return FORMATS[suffix]


def write_polygons(
    gdf: geopandas.GeoDataFrame,
    path: str | Path,
    *,
    overwrite: bool = False,
    param: str = "--output",
) -> Path:
    """Write polygons by extension (atomically) and a ``.qml`` style beside them.

    An empty frame still becomes a valid layer with the columns and CRS, so downstream tools
    (score, QGIS) see "no buildings" rather than a missing file.
    """
    from geoseg.vector.styles import write_vector_style

    path = Path(path)
    driver = output_format(path, param=param)
    with atomic_output(path, overwrite=overwrite, param=param) as tmp:
        if driver == "parquet":
            gdf.to_parquet(tmp)
        else:
            import pyogrio

            # GeoPackage 1.3, not GDAL 3.10's 1.4, so QGIS LTR builds (GDAL 3.6) read it cleanly
            gpkg = {"layer": path.stem, "dataset_options": {"VERSION": "1.3"}}
            extra = gpkg if driver == "GPKG" else {}
            pyogrio.write_dataframe(gdf, tmp, driver=driver, geometry_type="Polygon", **extra)
    first = gdf.drop_duplicates("cluster")
    write_vector_style(
        path, classes=dict(zip(first["cluster"].tolist(), first["class"], strict=True))
    )
    return path
