"""Write polygon layers by extension, atomically, with a QGIS style beside them.

Shared by ``geoseg vectorize``, ``geoseg predict`` (mapped classes) and the demo, so every
polygon output has the same formats, GeoPackage version and styling.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from geoseg.errors import BadInput
from geoseg.paths import atomic_output

if TYPE_CHECKING:
    import geopandas

#: GeoPackage version written: 1.3, not GDAL 3.10's default 1.4, which GDAL 3.6 (QGIS 3.22
#: LTR builds) opens with "may only be partially supported" warnings
GPKG_VERSION = "1.3"

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
            gpkg = {"layer": path.stem, "dataset_options": {"VERSION": GPKG_VERSION}}
            extra = gpkg if driver == "GPKG" else {}
            pyogrio.write_dataframe(gdf, tmp, driver=driver, geometry_type="Polygon", **extra)
    first = gdf.drop_duplicates("cluster")
    write_vector_style(
        path, classes=dict(zip(first["cluster"].tolist(), first["class"], strict=True))
    )
    return path


def write_layers(
    layers: Mapping[str, geopandas.GeoDataFrame],
    path: str | Path,
    *,
    styles: Mapping[str, str] | None = None,
    overwrite: bool = False,
    param: str = "--output",
) -> Path:
    """Write several polygon layers into one GeoPackage (atomically), each styled for QGIS.

    Geometries are written 2D (a 3D truth file must not make a 3D layer) as MultiPolygon.
    ``styles`` (layer → QML text) become the layers' default styles in the GeoPackage's
    ``layer_styles`` table, which is where QGIS looks for a GeoPackage layer's style.
    """
    import pandas as pd
    import pyogrio
    import shapely

    path = Path(path)
    with atomic_output(path, overwrite=overwrite, param=param) as tmp:
        for i, (name, frame) in enumerate(layers.items()):
            frame = frame.set_geometry(shapely.force_2d(frame.geometry.values.to_numpy()))
            pyogrio.write_dataframe(
                frame,
                tmp,
                layer=name,
                driver="GPKG",
                geometry_type="MultiPolygon",
                promote_to_multi=True,
                append=i > 0,
                **({} if i else {"dataset_options": {"VERSION": GPKG_VERSION}}),
            )
        if styles:
            rows = pd.DataFrame(
                {
                    "f_table_catalog": "",
                    "f_table_schema": "",
                    "f_table_name": list(styles),
                    "f_geometry_column": "geom",
                    "styleName": list(styles),
                    "styleQML": list(styles.values()),
                    "styleSLD": "",
                    "useAsDefault": True,
                    "description": "written by geoseg",
                    "owner": "",
                    "ui": "",
                    "update_time": pd.Timestamp.now(tz="UTC").floor("s"),
                }
            )
            pyogrio.write_dataframe(rows, tmp, layer="layer_styles", driver="GPKG", append=True)
    return path
