"""``geoseg vectorize`` writes its GeoPackage block by block (geoseg.vector.formats'
sqlite3 writer): the file must be the one GDAL writes from the GeoDataFrame, row for row."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from geoseg.errors import BadInput
from geoseg.vector.formats import fast_geopackage
from geoseg.vector.vectorize import vectorize, vectorize_to_file

VALIDATOR = Path("/usr/lib/python3/dist-packages/osgeo_utils/samples/validate_gpkg.py")


def classes_raster(path: Path, crs: str | None = "EPSG:32611", seed: int = 0) -> Path:
    """Blobs of 4 classes with nodata speckle, 90x70 pixels (several 32² blocks)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:70, :90]
    data = ((np.sin(xx / 5.0) + np.cos(yy / 4.0) + rng.random((70, 90))) * 1.5).astype(np.uint8)
    data[rng.random(data.shape) < 0.02] = 255
    if crs == "EPSG:4326":
        transform = from_origin(-115.2, 36.2, 0.5 / 90_190.0, 0.5 / 110_950.0)
    else:
        transform = from_origin(500_000.0, 4_000_000.0, 0.5, 0.5)
    with rasterio.open(
        path, "w", driver="GTiff", width=90, height=70, count=1, dtype="uint8",
        crs=crs, transform=transform, nodata=255,
    ) as dst:  # fmt: skip
        dst.write(data, 1)
    return path


def probabilities_raster(path: Path, like: Path) -> Path:
    with rasterio.open(like) as src:
        profile = src.profile | {"dtype": "float32", "nodata": None, "count": 1}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.random.default_rng(1).random((1, 70, 90)).astype(np.float32))
    return path


def sqlite_content(path: Path) -> dict:
    """Everything a reader sees in the layer: schema, metadata rows, features, R-tree."""
    layer = path.stem
    db = sqlite3.connect(path)
    try:
        rows = {
            table: db.execute(f'SELECT * FROM "{table}"').fetchall()
            for table in (
                "gpkg_spatial_ref_sys",
                "gpkg_geometry_columns",
                "gpkg_extensions",
                "gpkg_ogr_contents",
                "sqlite_sequence",
            )
        }
        return {
            "pragmas": [
                db.execute(f"PRAGMA {p}").fetchone() for p in ("application_id", "user_version")
            ],
            "schema": sorted(db.execute("SELECT type, name, sql FROM sqlite_master").fetchall()),
            # last_change (column 4) is the time of writing
            "contents": [r[:4] + r[5:] for r in db.execute("SELECT * FROM gpkg_contents")],
            "features": db.execute(f'SELECT * FROM "{layer}" ORDER BY fid').fetchall(),
            "rtree": db.execute(f'SELECT * FROM "rtree_{layer}_geom" ORDER BY id').fetchall(),
            **rows,
        }
    finally:
        db.close()


def both(raster: Path, tmp_path: Path, name: str = "polys.gpkg", **kwargs) -> tuple[Path, Path]:
    """The layer written block by block, and written by GDAL from vectorize's GeoDataFrame."""
    (tmp_path / "stream").mkdir(exist_ok=True)
    (tmp_path / "frame").mkdir(exist_ok=True)
    streamed, framed = tmp_path / "stream" / name, tmp_path / "frame" / name
    count = vectorize_to_file(raster, streamed, block_size=32, **kwargs)
    gdf = vectorize(raster, framed, block_size=32, **kwargs)
    assert count == len(gdf)
    return streamed, framed


@pytest.mark.parametrize("crs", ["EPSG:32611", "EPSG:4326"])
def test_streamed_geopackage_is_gdals_row_for_row(tmp_path, crs):
    raster = classes_raster(tmp_path / "c.tif", crs)
    probs = probabilities_raster(tmp_path / "p.tif", raster)
    assert fast_geopackage(tmp_path / "x.gpkg", rasterio.open(raster).crs.to_wkt())
    streamed, framed = both(
        raster, tmp_path, classes={"road": 1, "building": 3, "2": 2}, probabilities=probs
    )
    got, want = sqlite_content(streamed), sqlite_content(framed)
    assert len(want["features"]) > 20
    assert got == want
    assert streamed.with_suffix(".qml").read_text() == framed.with_suffix(".qml").read_text()


def test_streamed_geopackage_without_scores_and_empty(tmp_path):
    raster = classes_raster(tmp_path / "c.tif")
    streamed, framed = both(raster, tmp_path, min_area=2.0)  # NaN scores are NULL in both
    assert sqlite_content(streamed) == sqlite_content(framed)
    streamed, framed = both(raster, tmp_path, name="none.gpkg", classes=[9])
    got = sqlite_content(streamed)
    assert got == sqlite_content(framed) and got["features"] == []


@pytest.mark.skipif(not VALIDATOR.exists(), reason="GDAL's validate_gpkg.py is not installed")
def test_streamed_geopackage_passes_gdals_validator(tmp_path):
    streamed, _ = both(classes_raster(tmp_path / "c.tif"), tmp_path)
    res = subprocess.run(["/usr/bin/python3", str(VALIDATOR), str(streamed)], capture_output=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_other_crs_and_formats_take_the_frame_writer(tmp_path):
    """No CRS or a CRS that is not an EPSG code: GDAL decides the SRS row, so GDAL writes."""
    local = classes_raster(tmp_path / "l.tif", crs="+proj=tmerc +lat_0=0 +lon_0=-115 +k=1")
    bare = classes_raster(tmp_path / "b.tif", crs=None)
    for raster in (local, bare):
        with rasterio.open(raster) as src:
            assert not fast_geopackage(tmp_path / "x.gpkg", src.crs.to_wkt() if src.crs else None)
        streamed, framed = both(raster, tmp_path, name=f"{raster.stem}.gpkg")
        assert sqlite_content(streamed) == sqlite_content(framed)
    assert not fast_geopackage(tmp_path / "x.fgb", "EPSG:32611")
    out = tmp_path / "polys.fgb"
    assert vectorize_to_file(local, out) == len(vectorize(local)) and out.exists()


def test_a_failure_while_streaming_leaves_nothing(tmp_path):
    """The probabilities' missing band is found inside a block, after writing started."""
    raster = classes_raster(tmp_path / "c.tif")
    with rasterio.open(raster) as src:
        profile = src.profile | {"dtype": "float32", "nodata": None, "count": 2}
    with rasterio.open(tmp_path / "p.tif", "w", **profile) as dst:
        dst.write(np.ones((2, 70, 90), np.float32))
    out = tmp_path / "out" / "polys.gpkg"
    out.parent.mkdir()
    with pytest.raises(BadInput, match="--probabilities"):
        vectorize_to_file(raster, out, probabilities=tmp_path / "p.tif", block_size=32)
    assert list(out.parent.iterdir()) == []


def test_cli_imports_neither_geopandas_nor_dask(tmp_path):
    """The start-up the streaming writer exists for: measured as imports, not seconds."""
    raster = classes_raster(tmp_path / "c.tif")
    out = tmp_path / "b.gpkg"
    code = (
        "import sys\n"
        "from geoseg.cli import main\n"
        "try:\n"
        f"    main(['-q', 'vectorize', {str(raster)!r}, '-o', {str(out)!r}, '--class', 'b=1'])\n"
        "finally:\n"
        "    heavy = ('geopandas', 'pandas', 'pyogrio', 'pyarrow', 'dask')\n"
        "    print(sorted(m for m in heavy if m in sys.modules), file=sys.stderr)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stderr.strip().splitlines()[-1] == "[]"
    assert out.exists() and out.with_suffix(".qml").exists()


QGIS_READ = """
import json, sys
from qgis.core import QgsApplication, QgsFeatureSource, QgsVectorLayer
app = QgsApplication([], False)
app.initQgis()
layer = QgsVectorLayer(sys.argv[1], "polys", "ogr")
_, ok = layer.loadNamedStyle(sys.argv[1][:-5] + ".qml")
print(json.dumps({
    "valid": layer.isValid(),
    "count": layer.featureCount(),
    "crs": layer.crs().authid(),
    "fields": [f.name() for f in layer.fields()],
    "index": layer.hasSpatialIndex() == QgsFeatureSource.SpatialIndexPresent,
    "area": sum(f.geometry().area() for f in layer.getFeatures()),
    "style": ok,
}))
"""


def test_qgis_reads_the_streamed_geopackage(tmp_path, qgis_python):
    raster = classes_raster(tmp_path / "c.tif")
    out = tmp_path / "polys.gpkg"
    count = vectorize_to_file(raster, out, block_size=32)
    res = subprocess.run(
        [qgis_python, "-c", QGIS_READ, str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.strip().splitlines()[-1])
    valid_pixels = (rasterio.open(raster).read_masks(1) > 0).sum()
    assert got["valid"] and got["index"] and got["style"]
    assert got["count"] == count and got["crs"] == "EPSG:32611"
    assert got["fields"] == ["fid", "class", "cluster", "area_m2", "score"]
    assert got["area"] == pytest.approx(valid_pixels * 0.25)


@pytest.mark.parametrize("n", [0, 1, 51, 52, 3000, 20_000])
def test_bulk_loaded_rtree_is_sqlites_own(tmp_path, n):
    """The R-tree written node by node passes SQLite's rtreecheck() and answers window
    queries as a brute-force search does (depth 0 to 2 trees: 51 cells a node)."""
    from geoseg.vector.formats import _bulk_load_rtree, _rtree_boxes

    rng = np.random.default_rng(n)
    x, y = rng.uniform(-1e5, 1e5, n), rng.uniform(-1e5, 1e5, n)
    w, h = rng.uniform(0, 500, n), rng.uniform(0, 500, n)
    boxes = _rtree_boxes(np.arange(1, n + 1), x, x + w, y, y + h)
    db = sqlite3.connect(tmp_path / "r.db", isolation_level=None)
    db.execute("CREATE VIRTUAL TABLE r USING rtree(id, minx, maxx, miny, maxy)")
    db.execute("BEGIN")
    _bulk_load_rtree(db, "r", boxes)
    db.execute("COMMIT")
    db.close()
    db = sqlite3.connect(tmp_path / "r.db")
    assert db.execute("SELECT rtreecheck('r')").fetchone() == ("ok",)
    assert db.execute("SELECT count(*) FROM r").fetchone() == (n,)
    for qx, qy in rng.uniform(-1e5, 1e5, (20, 2)):
        got = db.execute(
            "SELECT id FROM r WHERE maxx >= ? AND minx <= ? AND maxy >= ? AND miny <= ?",
            (qx, qx + 5000, qy, qy + 5000),
        ).fetchall()
        want = (x + w >= qx) & (x <= qx + 5000) & (y + h >= qy) & (y <= qy + 5000)
        assert sorted(i for (i,) in got) == (np.flatnonzero(want) + 1).tolist()
    stored = np.array(db.execute("SELECT minx, maxx, miny, maxy FROM r ORDER BY id").fetchall())
    if n:  # float32 bounds that contain the float64 ones
        assert (stored[:, 0] <= x).all() and (stored[:, 1] >= x + w).all()
        assert (stored[:, 2] <= y).all() and (stored[:, 3] >= y + h).all()


def test_blocks_on_a_dask_cluster_write_the_same_file(tmp_path):
    """--scheduler tcp://...: the blocks go to dask.distributed (a worker process, so the
    block task pickles) and the file is the one local threads write."""
    distributed = pytest.importorskip("distributed")
    raster = classes_raster(tmp_path / "c.tif")
    (tmp_path / "local").mkdir()
    (tmp_path / "cluster").mkdir()
    local, remote = tmp_path / "local" / "p.gpkg", tmp_path / "cluster" / "p.gpkg"
    vectorize_to_file(raster, local, block_size=32)
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None
    ) as cluster:
        vectorize_to_file(raster, remote, block_size=32, scheduler=cluster.scheduler_address)
    assert sqlite_content(remote) == sqlite_content(local)
