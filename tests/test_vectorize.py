"""vectorize: blockwise polygons equal whole-raster ones, metric filters (EPSG:4326)."""

from __future__ import annotations

import subprocess
import sys

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from click.testing import CliRunner
from pyproj import Geod, Transformer
from rasterio.features import shapes
from rasterio.transform import from_origin

from geoseg.cli import group
from geoseg.errors import BadInput, OutputExists
from geoseg.vector.vectorize import vectorize

NODATA = 255
#: ~0.5 m pixels at 36° N (SpaceNet Vegas): 0.5 m of latitude and of longitude there
DEG_Y = 0.5 / 110_950.0
DEG_X = 0.5 / 90_190.0
GEOD = Geod(ellps="WGS84")


def write(path, array, *, crs="EPSG:32611", transform=None, nodata=NODATA):
    transform = transform or from_origin(500_000.0, 4_000_000.0, 0.5, 0.5)
    h, w = array.shape
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=w,
        height=h,
        count=1,
        dtype=array.dtype.name,
        crs=crs,
        transform=transform,
        nodata=nodata,
    ) as dst:
        dst.write(array, 1)
    return path


def write_4326(path, array):
    return write(path, array, crs="EPSG:4326", transform=from_origin(-115.2, 36.2, DEG_X, DEG_Y))


def reference(path):
    """Polygonise the whole raster at once with rasterio (the result blockwise must equal)."""
    with rasterio.open(path) as src:
        data, valid, transform = src.read(1), src.read_masks(1) > 0, src.transform
    return [
        (shapely.geometry.shape(g), int(v)) for g, v in shapes(data, valid, transform=transform)
    ]


def assert_same_polygons(gdf, expected, rel=1e-9):
    """Same count per class and a one-to-one match with ~zero symmetric difference."""
    assert len(gdf) == len(expected)
    got = list(zip(gdf.geometry, gdf.cluster, strict=True))
    unmatched = list(range(len(got)))
    for geom, value in expected:
        hits = [
            i
            for i in unmatched
            if got[i][1] == value and got[i][0].symmetric_difference(geom).area < rel * geom.area
        ]
        assert len(hits) == 1, f"polygon of class {value} at {geom.centroid} matched {len(hits)}"
        unmatched.remove(hits[0])


def cross_shapes() -> np.ndarray:
    """16x16 with 8x8 blocks: a ring over four blocks, a U leaving and re-entering block
    (0, 0), and two pixels touching only diagonally across both block borders."""
    a = np.zeros((16, 16), np.uint8)
    a[4:12, 4:12] = 1  # spans the four blocks ...
    a[6:10, 6:10] = 0  # ... with a hole that does too
    a[0:12, 1] = 2  # U: two arms in block (0, 0) joined in block (1, 0)
    a[0:12, 3] = 2
    a[11, 1:4] = 2
    a[7, 14] = 3  # corner contact across the vertical and horizontal borders
    a[8, 15] = 3
    a[7, 15] = 4
    a[8, 14] = 4
    a[14, 5:7] = 3  # corner contact inside a block, for comparison
    a[15, 7] = 3
    return a


@pytest.mark.parametrize("block_size", [8, 5, 3])
def test_blockwise_equals_whole_raster_on_crafted_shapes(tmp_path, block_size):
    path = write(tmp_path / "c.tif", cross_shapes())
    gdf = vectorize(path, block_size=block_size)
    assert_same_polygons(gdf, reference(path))
    ring = gdf[gdf.cluster == 1].geometry
    assert len(ring) == 1 and len(ring.iloc[0].interiors) == 1
    assert (gdf.cluster == 2).sum() == 1  # the U is one polygon
    assert (gdf.cluster == 3).sum() == 4  # corner contacts never merge
    assert gdf.geometry.is_valid.all()


@pytest.mark.parametrize("block_size", [16, 7])
def test_blockwise_equals_whole_raster_on_noise_with_nodata(tmp_path, block_size):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 3, (45, 52)).astype(np.uint8)
    a[rng.random(a.shape) < 0.05] = NODATA
    a[10:20, 30:40] = NODATA
    path = write(tmp_path / "n.tif", a)
    gdf = vectorize(path, block_size=block_size)
    assert_same_polygons(gdf, reference(path))
    assert NODATA not in set(gdf.cluster)
    assert gdf.area.sum() == pytest.approx((a != NODATA).sum() * 0.25)
    hole = shapely.box(500_015.0, 4_000_000 - 10.0, 500_020.0, 4_000_000 - 5.0)
    assert gdf.intersection(hole).area.sum() == 0


def test_classes_names_and_attributes(tmp_path):
    path = write(tmp_path / "c.tif", cross_shapes())
    gdf = vectorize(path, classes={"building": 1, "road": 2}, block_size=8)
    assert list(gdf.columns) == ["class", "cluster", "area_m2", "score", "geometry"]
    assert sorted(gdf["class"]) == ["building", "road"]
    assert gdf.crs == "EPSG:32611"
    ring = gdf[gdf["class"] == "building"].iloc[0]
    assert ring.area_m2 == pytest.approx((64 - 16) * 0.25)
    assert np.isnan(gdf.score).all()
    listed = vectorize(path, classes=[3], class_names={3: "tree"}, block_size=8)
    assert set(listed["class"]) == {"tree"} and len(listed) == 4


@pytest.mark.parametrize("n_bands", [1, 5])
def test_score_is_mean_probability_across_blocks(tmp_path, n_bands):
    """One band serves every class; with one band per cluster, class v reads band v + 1."""
    a = cross_shapes()
    probs = np.random.default_rng(2).random((n_bands, *a.shape)).astype(np.float32)
    path = write(tmp_path / "c.tif", a)
    prob_path = tmp_path / "p.tif"
    with rasterio.open(path) as src:
        profile = src.profile | {"dtype": "float32", "nodata": None, "count": n_bands}
    with rasterio.open(prob_path, "w", **profile) as dst:
        dst.write(probs)
    gdf = vectorize(path, classes=[1, 2], probabilities=prob_path, block_size=5)
    for value in (1, 2):
        score = gdf[gdf.cluster == value].score.iloc[0]
        band = probs[0 if n_bands == 1 else value]
        assert score == pytest.approx(band[a == value].mean(), rel=1e-6)
    if n_bands == 5:
        with pytest.raises(BadInput, match="--probabilities"):
            vectorize(write(tmp_path / "x.tif", a * 3), probabilities=prob_path)


def test_min_area_in_square_metres_on_4326(tmp_path):
    a = np.zeros((40, 40), np.uint8)
    a[5:15, 5:15] = 1  # 10x10 px = ~25 m²
    a[25:29, 25:29] = 1  # 4x4 px = ~4 m²
    path = write_4326(tmp_path / "g.tif", a)
    all_ = vectorize(path, classes=[1], block_size=16)
    big = all_.geometry[all_.area_m2.idxmax()]
    geodesic = abs(GEOD.geometry_area_perimeter(big)[0])
    assert all_.area_m2.max() == pytest.approx(geodesic, rel=2e-3)
    assert geodesic == pytest.approx(25.0, rel=0.02)
    assert len(vectorize(path, classes=[1], min_area=3.5)) == 2
    assert len(vectorize(path, classes=[1], min_area=20)) == 1
    assert len(vectorize(path, classes=[1], min_area=30)) == 0
    assert all_.crs == "EPSG:4326"


def test_simplify_tolerance_is_metres_on_4326(tmp_path):
    a = np.tril(np.ones((40, 40), np.uint8))  # a staircase hypotenuse, 0.5 m steps
    path = write_4326(tmp_path / "g.tif", a)
    raw = vectorize(path, classes=[1]).geometry.iloc[0]
    fine = vectorize(path, classes=[1], simplify=0.1).geometry.iloc[0]
    coarse = vectorize(path, classes=[1], simplify=1.0).geometry.iloc[0]
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32611", always_xy=True)

    def utm(g):
        return shapely.transform(g, lambda xy: np.column_stack(to_utm.transform(*xy.T)))

    assert len(fine.exterior.coords) == len(raw.exterior.coords)  # steps deviate ~0.35 m
    assert len(coarse.exterior.coords) <= 5 < len(raw.exterior.coords) // 10  # ~a triangle
    assert 0.2 < shapely.hausdorff_distance(utm(coarse), utm(raw)) <= 1.0
    assert -115.21 < coarse.centroid.x < -115.19  # still in degrees


def test_fill_holes_and_regularize(tmp_path):
    a = np.zeros((40, 40), np.uint8)
    a[2:20, 2:20] = 1
    a[4:6, 4:6] = 0  # 1 m² hole
    a[10:16, 10:16] = 0  # 9 m² hole
    a[25:39, 2:7] = 1  # L-shape: area 3/4 of its box, kept as is
    a[34:39, 2:20] = 1
    path = write(tmp_path / "h.tif", a)
    square = vectorize(path, classes=[1], fill_holes=True)
    assert shapely.get_num_interior_rings(square.geometry.values).sum() == 0
    some = vectorize(path, classes=[1], fill_holes=5.0)
    assert shapely.get_num_interior_rings(some.geometry.values).sum() == 1
    assert some.area_m2.sum() == pytest.approx(square.area_m2.sum() - 9.0)

    yy, xx = np.mgrid[0:80, 0:80] - 39.5
    u, v = xx * np.cos(0.5) + yy * np.sin(0.5), -xx * np.sin(0.5) + yy * np.cos(0.5)
    rotated = ((np.abs(u) < 25) & (np.abs(v) < 12)).astype(np.uint8)
    path = write(tmp_path / "r.tif", np.maximum(rotated, np.pad(a[25:, :20], ((0, 65), (0, 60)))))
    reg = vectorize(path, classes=[1], regularize=True).sort_values("area_m2")
    l_shape, building = reg.geometry.iloc[0], reg.geometry.iloc[1]
    assert len(building.exterior.coords) == 5  # a rectangle
    assert len(l_shape.exterior.coords) == 7  # unchanged
    corners = np.diff(np.asarray(building.exterior.coords), axis=0)
    assert abs(np.dot(corners[0], corners[1])) < 1e-6 * np.dot(corners[0], corners[0])


@pytest.mark.parametrize("suffix", [".gpkg", ".geojson", ".json", ".fgb", ".parquet"])
def test_formats_round_trip(tmp_path, suffix):
    path = write_4326(tmp_path / "g.tif", cross_shapes())
    out = tmp_path / f"polys{suffix}"
    gdf = vectorize(path, out, block_size=8)
    back = gpd.read_parquet(out) if suffix == ".parquet" else gpd.read_file(out)
    assert out.with_suffix(".qml").exists()
    assert list(back.columns) == list(gdf.columns) and len(back) == len(gdf)
    assert back.crs.equals(gdf.crs)
    assert sorted(back["class"]) == sorted(gdf["class"])
    assert_same_polygons(
        back, list(zip(gdf.geometry, gdf.cluster, strict=True)), rel=1e-6
    )  # FGB reorders


@pytest.mark.parametrize("suffix", [".gpkg", ".geojson", ".fgb", ".parquet"])
def test_empty_result_is_a_valid_empty_layer(tmp_path, suffix):
    path = write(tmp_path / "c.tif", cross_shapes())
    out = tmp_path / f"none{suffix}"
    gdf = vectorize(path, out, classes={"building": 9})
    assert len(gdf) == 0
    back = gpd.read_parquet(out) if suffix == ".parquet" else gpd.read_file(out)
    assert len(back) == 0 and back.crs == "EPSG:32611"
    if suffix != ".geojson":  # GeoJSON has no schema: GDAL infers fields from features
        assert {"class", "cluster", "area_m2", "score"} <= set(back.columns)


def test_library_refuses_bad_input(tmp_path):
    path = write(tmp_path / "c.tif", cross_shapes())
    (tmp_path / "out.gpkg").touch()
    with pytest.raises(OutputExists):
        vectorize(path, tmp_path / "out.gpkg")
    with pytest.raises(BadInput, match="--output"):
        vectorize(path, tmp_path / "out.shp")
    with pytest.raises(BadInput, match="INPUT"):
        vectorize(tmp_path / "missing.tif")
    with pytest.raises(BadInput, match="--min-area"):
        vectorize(path, min_area=-1)
    rgb = write(tmp_path / "f.tif", np.zeros((4, 4), np.float32), nodata=None)
    with pytest.raises(BadInput, match="integer class raster"):
        vectorize(rgb)


def test_cli_writes_polygons_and_style(tmp_path):
    path = write(tmp_path / "c.tif", cross_shapes())
    out = tmp_path / "b.gpkg"
    args = ["-q", "vectorize", str(path), "-o", str(out), "--class", "building=1"]
    res = CliRunner().invoke(group, [*args, "--block-size", "8", "--min-area", "1"])
    assert res.exit_code == 0, res.output
    back = gpd.read_file(out)
    assert list(back["class"]) == ["building"] and back.area_m2.iloc[0] == pytest.approx(12.0)
    assert out.with_suffix(".qml").exists()
    assert CliRunner().invoke(group, [*args, "--class", "x=y"]).exit_code == 2


def test_cli_exit_codes(tmp_path):
    """Bad input exits 2 with one line; the existing output is left alone."""
    path = write(tmp_path / "c.tif", cross_shapes())
    out = tmp_path / "b.gpkg"
    out.write_text("keep me")
    missing = CliRunner().invoke(
        group, ["vectorize", "missing.tif", "-o", str(tmp_path / "x.gpkg")]
    )
    assert isinstance(missing.exception, BadInput) and missing.exception.exit_code == 2
    res = subprocess.run(
        [sys.executable, "-m", "geoseg", "vectorize", str(path), "-o", str(out)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "--overwrite" in res.stderr
    assert out.read_text() == "keep me"


def test_components_numbered_as_scipy_numbers_them():
    """The border-piece merge's own union-find (no scipy import at start-up, issue 11)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from geoseg.vector.borders import components as _components

    rng = np.random.default_rng(0)
    for n, m in [(1, 0), (7, 0), (10, 5), (1000, 800), (300, 2000)]:
        left, right = rng.integers(0, n, m), rng.integers(0, n, m)
        graph = coo_matrix((np.ones(m), (left, right)), shape=(n, n))
        _, want = connected_components(graph, directed=False)
        np.testing.assert_array_equal(_components(n, left, right), want)
