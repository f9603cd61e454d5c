"""Write polygon layers by extension, atomically, with a QGIS style beside them.

Shared by ``geoseg vectorize``, ``geoseg predict`` (mapped classes) and the demo, so every
polygon output has the same formats, GeoPackage version and styling.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

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


#: the columns of a polygon layer, in order, with their GeoPackage types
POLYGON_COLUMNS = {"class": "TEXT", "cluster": "INTEGER", "area_m2": "REAL", "score": "REAL"}


def fast_geopackage(path: str | Path, crs_wkt: str | None) -> bool:
    """Whether :func:`write_polygon_batches` can write ``path`` (a GeoPackage whose CRS is an
    EPSG code, the case where its SRS row is fully determined; other CRSs are identified by
    GDAL in ways of its own, so those layers go through :func:`write_polygons`)."""
    return output_format(path) == "GPKG" and _epsg(crs_wkt) is not None


def write_polygon_batches(
    batches: Iterable[Mapping[str, np.ndarray]],
    path: str | Path,
    *,
    crs_wkt: str,
    class_names: Mapping[int, str],
    overwrite: bool = False,
    param: str = "--output",
) -> int:
    """Write polygons to a GeoPackage as they come, batch by batch; returns their number.

    The layer is the one :func:`write_polygons` writes through GDAL (same tables, columns,
    types, SRS row, R-tree index, GeoPackage 1.3; tests compare the two), written with the
    standard library's sqlite3: pyogrio imports pandas, geopandas and pyarrow with itself,
    0.8 s, longer than ``gdal_polygonize.py`` takes for a one-class map, and it needs the
    whole layer in memory as a frame. Each batch (``geometry`` plus the ``cluster``,
    ``area_m2`` and ``score`` arrays) is inserted and dropped, so memory stays one batch.
    Only for EPSG CRSs (:func:`fast_geopackage`). The ``.qml`` style is written beside it.
    """
    from geoseg.vector.styles import write_vector_style

    path = Path(path)
    layer = path.stem
    first_names: dict[int, str] = {}
    with atomic_output(path, overwrite=overwrite, param=param) as tmp:
        gpkg = _GeoPackage(tmp, layer, crs_wkt)
        try:
            for batch in batches:
                clusters = np.asarray(batch["cluster"], np.int64)
                names = [class_names.get(int(v), str(int(v))) for v in clusters]
                for value, name in zip(clusters.tolist(), names, strict=True):
                    first_names.setdefault(value, name)
                gpkg.append(batch["geometry"], names, clusters, batch["area_m2"], batch["score"])
            count = gpkg.close()
        except BaseException:
            gpkg.abort()
            raise
    write_vector_style(path, classes=first_names)
    return count


def _epsg(crs_wkt: str | None) -> int | None:
    if not crs_wkt:
        return None
    from rasterio.crs import CRS

    crs = CRS.from_wkt(crs_wkt)
    code = crs.to_epsg(confidence_threshold=100)
    # only when EPSG's own definition is this CRS, the row GDAL would write for it
    if code is None or CRS.from_epsg(code).to_wkt() != crs_wkt:
        return None
    return code


class _GeoPackage:
    """One polygon layer in a new GeoPackage 1.3, as GDAL lays it out (tables, triggers,
    R-tree), filled with executemany; the R-tree and extent are written as rows go in."""

    #: the two rows the GeoPackage standard requires, and WGS 84, as GDAL writes them
    DEFAULT_SRS = (
        ("Undefined Cartesian SRS", -1, "NONE", -1, "undefined",
         "undefined Cartesian coordinate reference system"),
        ("Undefined geographic SRS", 0, "NONE", 0, "undefined",
         "undefined geographic coordinate reference system"),
        ("WGS 84 geodetic", 4326, "EPSG", 4326, None,
         "longitude/latitude coordinates in decimal degrees on the WGS 84 spheroid"),
    )  # fmt: skip

    def __init__(self, path: Path, layer: str, crs_wkt: str) -> None:
        from rasterio.crs import CRS

        self.layer = layer
        self.srs_id = _epsg(crs_wkt)
        self.count = 0
        self.bounds = [np.inf, np.inf, -np.inf, -np.inf]
        self.boxes: list[np.ndarray] = []  # _rtree_boxes of every batch
        self.db = sqlite3.connect(path, isolation_level=None)
        db = self.db
        # a partial file is never seen (atomic_output), so no journal is needed
        db.execute("PRAGMA journal_mode = OFF")
        db.execute("PRAGMA synchronous = OFF")
        db.execute("PRAGMA application_id = 1196444487")  # 'GPKG'
        db.execute("PRAGMA user_version = 10300")  # GeoPackage 1.3 (GPKG_VERSION)
        db.execute("BEGIN")
        for sql in _GPKG_SCHEMA:
            db.execute(sql)
        rows = [
            (*r[:4], CRS.from_epsg(4326).to_wkt() if r[4] is None else r[4], r[5])
            for r in self.DEFAULT_SRS
        ]
        if self.srs_id != 4326:
            match = re.match(r'^\w+\["([^"]*)"', crs_wkt)
            name = match.group(1) if match else f"EPSG:{self.srs_id}"
            rows.append((name, self.srs_id, "EPSG", self.srs_id, crs_wkt, None))
        db.executemany("INSERT INTO gpkg_spatial_ref_sys VALUES (?, ?, ?, ?, ?, ?)", rows)
        q = _quote(layer)
        columns = "".join(f", {_quote(c)} {t}" for c, t in POLYGON_COLUMNS.items())
        db.execute(
            f'CREATE TABLE {q} ( "fid" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, '
            f'"geom" POLYGON{columns})'
        )
        db.execute(
            "INSERT INTO gpkg_contents (table_name, data_type, identifier, description, "
            "last_change, srs_id) VALUES (?, 'features', ?, '', "
            "strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), ?)",
            (layer, layer, self.srs_id),
        )
        db.execute(
            "INSERT INTO gpkg_geometry_columns VALUES (?, 'geom', 'POLYGON', ?, 0, 0)",
            (layer, self.srs_id),
        )
        db.execute("INSERT INTO gpkg_ogr_contents VALUES (?, 0)", (layer,))
        db.execute(
            "INSERT INTO gpkg_extensions VALUES (?, 'geom', 'gpkg_rtree_index', "
            "'http://www.geopackage.org/spec120/#extension_rtree', 'write-only')",
            (layer,),
        )
        rtree = _quote(f"rtree_{layer}_geom")
        db.execute(f"CREATE VIRTUAL TABLE {rtree} USING rtree(id, minx, maxx, miny, maxy)")

    def append(self, geoms, names, clusters, areas, scores) -> None:
        """Insert one batch: GeoPackage binary geometries (header with the envelope, then
        little-endian WKB) and the attributes; NaN scores become NULL, as GDAL writes them."""
        import shapely

        n = len(geoms)
        if n == 0:
            return
        minx, miny, maxx, maxy = shapely.bounds(geoms).T
        header = np.zeros(n, dtype=[("magic", "S2"), ("version", "u1"), ("flags", "u1"),
                                    ("srs", "<i4"), ("envelope", "<f8", 4)])  # fmt: skip
        header["magic"] = b"GP"
        header["flags"] = 0b011  # little-endian, envelope [minx, maxx, miny, maxy]
        header["srs"] = self.srs_id
        header["envelope"] = np.column_stack([minx, maxx, miny, maxy])
        heads = header.view(f"S{header.itemsize}")  # fixed-size bytes: no trailing NULs lost
        wkb = shapely.to_wkb(geoms, byte_order=1, flavor="iso")
        blobs = [h + w for h, w in zip(_raw(heads, header.itemsize), wkb, strict=True)]
        fids = range(self.count + 1, self.count + n + 1)
        scores = [None if s != s else s for s in np.asarray(scores, np.float64).tolist()]
        self.db.executemany(
            f"INSERT INTO {_quote(self.layer)} VALUES (?, ?, ?, ?, ?, ?)",
            zip(fids, blobs, names, np.asarray(clusters).tolist(),
                np.asarray(areas, np.float64).tolist(), scores, strict=True),
        )  # fmt: skip
        # the R-tree's float32 boxes (24 bytes a polygon), written at close by a bulk load
        self.boxes.append(_rtree_boxes(np.arange(fids.start, fids.stop), minx, maxx, miny, maxy))
        if len(self.boxes) >= 64:  # an array a batch costs more than its boxes for small ones
            self.boxes = [np.concatenate(self.boxes)]
        self.count += n
        b = self.bounds
        self.bounds = [min(b[0], minx.min()), min(b[1], miny.min()),
                       max(b[2], maxx.max()), max(b[3], maxy.max())]  # fmt: skip

    def close(self) -> int:
        """Extent, feature count and the triggers GDAL keeps them with; commit."""
        db, layer = self.db, self.layer
        extent = self.bounds if self.count else [None] * 4
        db.execute(
            "UPDATE gpkg_contents SET min_x = ?, min_y = ?, max_x = ?, max_y = ? "
            "WHERE table_name = ?",
            # GDAL writes the extent as SQL text of 16 significant digits (measured)
            (*[None if v is None else float(f"{v:.16g}") for v in extent], layer),
        )
        db.execute(
            "UPDATE gpkg_ogr_contents SET feature_count = ? WHERE table_name = ?",
            (self.count, layer),
        )
        boxes = _rtree_boxes(*[np.zeros(0)] * 5)
        if self.boxes:  # into one array batch by batch: never all batches and all of it at once
            boxes = np.empty(sum(map(len, self.boxes)), self.boxes[0].dtype)
            end = 0
            while self.boxes:
                part = self.boxes.pop(0)
                boxes[end : end + len(part)] = part
                end += len(part)
        _bulk_load_rtree(db, f"rtree_{layer}_geom", boxes)
        for sql in _rtree_triggers(layer) + _count_triggers(layer):
            db.execute(sql)
        db.execute("COMMIT")
        db.close()
        return self.count

    def abort(self) -> None:
        self.db.close()


def _raw(heads: np.ndarray, size: int) -> list[bytes]:
    data = heads.tobytes()
    return [data[i : i + size] for i in range(0, len(data), size)]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _tile_matrix_triggers() -> list[str]:
    """The gpkg_tile_matrix checks GDAL creates in every GeoPackage (its SQL, verbatim)."""
    checks = [
        ("zoom_level", "(NEW.zoom_level < 0)", "zoom_level cannot be less than 0"),
        ("matrix_width", "(NEW.matrix_width < 1)", "matrix_width cannot be less than 1"),
        ("matrix_height", "(NEW.matrix_height < 1)", "matrix_height cannot be less than 1"),
        ("pixel_x_size", "NOT (NEW.pixel_x_size > 0)", "pixel_x_size must be greater than 0"),
        ("pixel_y_size", "NOT (NEW.pixel_y_size > 0)", "pixel_y_size must be greater than 0"),
    ]
    sql = []
    for column, where, message in checks:
        for op, on in (
            ("insert", "INSERT"),
            ("update", f"UPDATE {'of' if column == 'zoom_level' else 'OF'} {column}"),
        ):
            sql.append(
                f"CREATE TRIGGER 'gpkg_tile_matrix_{column}_{op}' BEFORE {on} ON "
                f"'gpkg_tile_matrix' FOR EACH ROW BEGIN SELECT RAISE(ABORT, '{op} on table "
                f"''gpkg_tile_matrix'' violates constraint: {message}') WHERE {where}; END"
            )
    return sql


#: GDAL's GeoPackage tables, in the order and with the SQL it creates them
_GPKG_SCHEMA = [
    "CREATE TABLE gpkg_spatial_ref_sys (srs_name TEXT NOT NULL,srs_id INTEGER NOT NULL PRIMARY "
    "KEY,organization TEXT NOT NULL,organization_coordsys_id INTEGER NOT NULL,definition  TEXT "
    "NOT NULL,description TEXT)",
    "CREATE TABLE gpkg_contents (table_name TEXT NOT NULL PRIMARY KEY,data_type TEXT NOT NULL,"
    "identifier TEXT UNIQUE,description TEXT DEFAULT '',last_change DATETIME NOT NULL DEFAULT "
    "(strftime('%Y-%m-%dT%H:%M:%fZ','now')),min_x DOUBLE, min_y DOUBLE,max_x DOUBLE, max_y "
    "DOUBLE,srs_id INTEGER,CONSTRAINT fk_gc_r_srs_id FOREIGN KEY (srs_id) REFERENCES "
    "gpkg_spatial_ref_sys(srs_id))",
    "CREATE TABLE gpkg_ogr_contents(table_name TEXT NOT NULL PRIMARY KEY,feature_count INTEGER "
    "DEFAULT NULL)",
    "CREATE TABLE gpkg_geometry_columns (table_name TEXT NOT NULL,column_name TEXT NOT NULL,"
    "geometry_type_name TEXT NOT NULL,srs_id INTEGER NOT NULL,z TINYINT NOT NULL,m TINYINT NOT "
    "NULL,CONSTRAINT pk_geom_cols PRIMARY KEY (table_name, column_name),CONSTRAINT "
    "uk_gc_table_name UNIQUE (table_name),CONSTRAINT fk_gc_tn FOREIGN KEY (table_name) "
    "REFERENCES gpkg_contents(table_name),CONSTRAINT fk_gc_srs FOREIGN KEY (srs_id) REFERENCES "
    "gpkg_spatial_ref_sys (srs_id))",
    "CREATE TABLE gpkg_tile_matrix_set (table_name TEXT NOT NULL PRIMARY KEY,srs_id INTEGER NOT "
    "NULL,min_x DOUBLE NOT NULL,min_y DOUBLE NOT NULL,max_x DOUBLE NOT NULL,max_y DOUBLE NOT "
    "NULL,CONSTRAINT fk_gtms_table_name FOREIGN KEY (table_name) REFERENCES "
    "gpkg_contents(table_name),CONSTRAINT fk_gtms_srs FOREIGN KEY (srs_id) REFERENCES "
    "gpkg_spatial_ref_sys (srs_id))",
    "CREATE TABLE gpkg_tile_matrix (table_name TEXT NOT NULL,zoom_level INTEGER NOT NULL,"
    "matrix_width INTEGER NOT NULL,matrix_height INTEGER NOT NULL,tile_width INTEGER NOT NULL,"
    "tile_height INTEGER NOT NULL,pixel_x_size DOUBLE NOT NULL,pixel_y_size DOUBLE NOT NULL,"
    "CONSTRAINT pk_ttm PRIMARY KEY (table_name, zoom_level),CONSTRAINT fk_tmm_table_name "
    "FOREIGN KEY (table_name) REFERENCES gpkg_contents(table_name))",
    *_tile_matrix_triggers(),
    "CREATE TABLE gpkg_extensions (table_name TEXT,column_name TEXT,extension_name TEXT NOT "
    "NULL,definition TEXT NOT NULL,scope TEXT NOT NULL,CONSTRAINT ge_tce UNIQUE (table_name, "
    "column_name, extension_name))",
]


def _rtree_triggers(layer: str) -> list[str]:
    """GDAL's triggers (GeoPackage 1.3 form) that keep the R-tree in step with later edits."""
    t, r = _quote(layer), _quote(f"rtree_{layer}_geom")
    box = (
        'NEW."fid",ST_MinX(NEW."geom"), ST_MaxX(NEW."geom"),'
        'ST_MinY(NEW."geom"), ST_MaxY(NEW."geom")'
    )
    name = f"rtree_{layer}_geom"
    return [
        f'CREATE TRIGGER {_quote(name + "_insert")} AFTER INSERT ON {t} WHEN (new."geom" NOT NULL '
        f'AND NOT ST_IsEmpty(NEW."geom")) BEGIN INSERT OR REPLACE INTO {r} VALUES ({box}); END',
        f'CREATE TRIGGER {_quote(name + "_update1")} AFTER UPDATE OF "geom" ON {t} WHEN OLD."fid" '
        f'= NEW."fid" AND (NEW."geom" NOTNULL AND NOT ST_IsEmpty(NEW."geom")) BEGIN INSERT OR '
        f"REPLACE INTO {r} VALUES ({box}); END",
        f'CREATE TRIGGER {_quote(name + "_update2")} AFTER UPDATE OF "geom" ON {t} WHEN OLD."fid" '
        f'= NEW."fid" AND (NEW."geom" ISNULL OR ST_IsEmpty(NEW."geom")) BEGIN DELETE FROM {r} '
        f'WHERE id = OLD."fid"; END',
        f'CREATE TRIGGER {_quote(name + "_update3")} AFTER UPDATE ON {t} WHEN OLD."fid" != '
        f'NEW."fid" AND (NEW."geom" NOTNULL AND NOT ST_IsEmpty(NEW."geom")) BEGIN DELETE FROM {r} '
        f'WHERE id = OLD."fid"; INSERT OR REPLACE INTO {r} VALUES ({box}); END',
        f'CREATE TRIGGER {_quote(name + "_update4")} AFTER UPDATE ON {t} WHEN OLD."fid" != '
        f'NEW."fid" AND (NEW."geom" ISNULL OR ST_IsEmpty(NEW."geom")) BEGIN DELETE FROM {r} '
        f'WHERE id IN (OLD."fid", NEW."fid"); END',
        f'CREATE TRIGGER {_quote(name + "_delete")} AFTER DELETE ON {t} WHEN old."geom" NOT NULL '
        f'BEGIN DELETE FROM {r} WHERE id = OLD."fid"; END',
    ]


def _count_triggers(layer: str) -> list[str]:
    """GDAL's triggers that keep gpkg_ogr_contents' feature count in step with later edits."""
    t, lit = _quote(layer), "'" + layer.replace("'", "''") + "'"
    return [
        f"CREATE TRIGGER {_quote(f'trigger_{op}_feature_count_{layer}')} AFTER {op.upper()} ON "
        f"{t} BEGIN UPDATE gpkg_ogr_contents SET feature_count = feature_count {sign} 1 WHERE "
        f"lower(table_name) = lower({lit}); END"
        for op, sign in (("insert", "+"), ("delete", "-"))
    ]


#: R-tree nodes built and inserted at a time by :func:`_bulk_load_rtree` (memory)
RTREE_NODES_AT_ONCE = 4096
#: cells in an SQLite R-tree node: 51, the cap rtree.c puts on ``page size - 64`` bytes
RTREE_CELLS = 51


def _bulk_load_rtree(db: sqlite3.Connection, name: str, boxes: np.ndarray) -> None:
    """Fill the (empty) R-tree ``name`` with ``boxes`` rows ``(fid, minx, maxx, miny, maxy)``
    by writing its node, rowid and parent tables directly, packed bottom-up by
    sort-tile-recursive (STR) order, as GDAL's GeoPackage writer bulk-loads it.

    Inserting through the virtual table costs ~20 µs a row in SQLite's R*-tree splits
    (100 s for the 2.7 M polygons of an 8192² speckled map). The layout is SQLite's
    (rtree.c): node 1 is the root, whose blob starts with the tree depth; a node is a
    2-byte depth, a 2-byte cell count and cells of a big-endian int64 id with four float32
    bounds rounded outwards, padded to ``4 + 24 * 51`` bytes. ``rtreecheck()`` checks it in
    the tests.
    """
    size = 4 + 24 * RTREE_CELLS
    db.execute(f"DELETE FROM {_quote(name + '_node')}")
    if not len(boxes):
        db.execute(f"INSERT INTO {_quote(name + '_node')} VALUES (1, zeroblob({size}))")
        return
    ids, lo, hi = boxes["id"], boxes["lo"], boxes["hi"]
    level = 0
    next_node = 2
    while True:
        order = _str_order(lo, hi)
        count = -(-len(ids) // RTREE_CELLS)
        root = count == 1
        numbers = np.array([1]) if root else np.arange(next_node, next_node + count)
        next_node += 0 if root else count
        # leaves: which node holds each polygon; above: which node holds each node
        table = name + ("_rowid" if level == 0 else "_parent")
        upper_lo, upper_hi = [], []
        # a slice of nodes at a time: the sorted boxes, cells and blobs of a whole level were
        # 4x the boxes themselves (+220 MiB at the end of an 8192² speckled map's 2.7 M)
        for first in range(0, count, RTREE_NODES_AT_ONCE):
            mine = numbers[first : first + RTREE_NODES_AT_ONCE]
            take = order[first * RTREE_CELLS : (first + len(mine)) * RTREE_CELLS]
            part_ids, part_lo, part_hi = ids[take], lo[take], hi[take]
            cells = np.zeros(len(take), dtype=[("id", ">i8"), ("box", ">f4", 4)])
            cells["id"] = part_ids
            cells["box"] = np.column_stack(
                [part_lo[:, 0], part_hi[:, 0], part_lo[:, 1], part_hi[:, 1]]
            )
            db.executemany(
                f"INSERT INTO {_quote(name + '_node')} VALUES (?, ?)",
                _node_blobs(cells.tobytes(), mine, level if root else 0, size),
            )
            del cells
            node_of = np.repeat(mine, RTREE_CELLS)[: len(take)]
            db.executemany(
                f"INSERT INTO {_quote(table)} VALUES (?, ?)",
                zip(part_ids.tolist(), node_of.tolist(), strict=True),
            )
            # the nodes just written are the cells of the level above
            starts = np.arange(0, len(take), RTREE_CELLS)
            upper_lo.append(np.minimum.reduceat(part_lo, starts))
            upper_hi.append(np.maximum.reduceat(part_hi, starts))
        if root:
            break
        lo, hi = np.concatenate(upper_lo), np.concatenate(upper_hi)
        ids, level = numbers.astype(np.int64), level + 1


def _node_blobs(raw: bytes, numbers: np.ndarray, depth: int, size: int):
    """``(node number, blob)`` of consecutive runs of RTREE_CELLS 24-byte cells in ``raw``."""
    cells = len(raw) // 24
    for k, number in enumerate(numbers.tolist()):
        first, last = k * RTREE_CELLS, min((k + 1) * RTREE_CELLS, cells)
        body = raw[first * 24 : last * 24]
        head = depth.to_bytes(2, "big") + (last - first).to_bytes(2, "big")
        yield number, head + body + bytes(size - 4 - len(body))


def _rtree_boxes(ids, minx, maxx, miny, maxy) -> np.ndarray:
    """Polygon ids with their R-tree boxes: float32 bounds rounded outwards (``lo``: min x,
    min y; ``hi``: max x, max y)."""
    boxes = np.zeros(len(ids), dtype=[("id", "<i8"), ("lo", "<f4", 2), ("hi", "<f4", 2)])
    boxes["id"] = ids
    boxes["lo"] = _float32_towards(np.column_stack([minx, miny]), -np.inf)
    boxes["hi"] = _float32_towards(np.column_stack([maxx, maxy]), np.inf)
    return boxes


def _float32_towards(values: np.ndarray, direction: float) -> np.ndarray:
    """float32 bounds that contain ``values``, rounded exactly as SQLite's rtree.c does on an
    insert (``rtreeValueDown``/``Up``: when the nearest float32 is on the wrong side, the
    double is scaled by 1 ∓ 2⁻²³ and rounded again), so the stored boxes are the ones an
    insert through the virtual table, or GDAL, stores."""
    near = values.astype(np.float32)
    towards, away = 1.0 - 1.0 / 8388608.0, 1.0 + 1.0 / 8388608.0
    if direction < 0:
        off = near > values
        scale = np.where(values < 0, away, towards)
    else:
        off = near < values
        scale = np.where(values < 0, towards, away)
    return np.where(off, (values * scale).astype(np.float32), near)


def _str_order(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Sort-tile-recursive order of boxes: vertical slices by centre x, each by centre y,
    so consecutive runs of RTREE_CELLS boxes are compact nodes.

    Ties go to the lower index (a stable sort by slice, then centre y); each slice is sorted
    on its own so only its centres are held, not every box's at once."""
    n = len(lo)
    cx = (lo[:, 0].astype(np.float64) + hi[:, 0]) / 2
    nodes = -(-n // RTREE_CELLS)
    per_slice = RTREE_CELLS * int(np.ceil(np.sqrt(nodes)))
    by_x = np.argsort(cx, kind="stable")
    del cx
    order = np.empty(n, np.int64)
    for start in range(0, n, per_slice):
        members = np.sort(by_x[start : start + per_slice])
        cy = (lo[members, 1].astype(np.float64) + hi[members, 1]) / 2
        order[start : start + len(members)] = members[np.argsort(cy, kind="stable")]
    return order
