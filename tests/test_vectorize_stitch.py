"""The raster-space join of border pieces (geoseg.vector.stitch) equals GEOS's union of them,
vertex for vertex, including where pixels or holes touch only at a corner (issue 11)."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from rasterio.windows import Window

import geoseg.vector.borders as borders
import geoseg.vector.vectorize as vz
from geoseg.vector.stitch import stitch


def border_components(make_raster, data: np.ndarray, size: int):
    """Border pieces of ``data`` cut in ``size``² blocks, and their component numbers."""
    raster = make_raster("classes.tif", data[None], nodata=255)
    opts = vz._options(raster, None, None, 0.0, 0.0, False, False)
    height, width = data.shape
    windows = [
        Window(c, r, min(size, width - c), min(size, height - r))
        for r in range(0, height, size)
        for c in range(0, width, size)
    ]
    results = [vz._block(opts, w) for w in windows]
    pieces = borders.Pieces.concat([edge for _, edge, _ in results])
    links = borders.links(
        windows, [e for _, _, e in results], [len(p.geoms) for _, p, _ in results]
    )
    same = pieces.values[links[:, 0]] == pieces.values[links[:, 1]]
    component = borders.components(len(pieces.geoms), links[same, 0], links[same, 1])
    cols, rows = np.arange(size, width, size), np.arange(size, height, size)
    return pieces.geoms, component, cols, rows


def pinches(shape, rng) -> np.ndarray:
    """Checkerboard-like 2x2 motifs: pixels of one value touching only at corners, holes
    touching holes and the outside at a corner, on and off block borders."""
    data = rng.integers(0, 2, shape, dtype=np.uint8)
    for _ in range(shape[0] * shape[1] // 20):
        r, c = rng.integers(0, shape[0] - 1), rng.integers(0, shape[1] - 1)
        data[r : r + 2, c : c + 2] = np.array([[1, 0], [0, 1]]) if rng.random() < 0.5 else 1
    return data


@pytest.mark.parametrize(
    ("kind", "size", "seed"),
    [("noise", 5, 0), ("noise", 7, 1), ("pinches", 4, 2), ("pinches", 6, 3), ("blobs", 8, 4)],
)
def test_stitch_equals_geos_union(make_raster, kind, size, seed):
    rng = np.random.default_rng(seed)
    shape = (53, 61)
    if kind == "noise":
        data = rng.integers(0, 3, shape, dtype=np.uint8)
        data[rng.random(shape) < 0.05] = 255
    elif kind == "pinches":
        data = pinches(shape, rng)
    else:
        yy, xx = np.mgrid[: shape[0], : shape[1]]
        data = ((np.sin(xx / 4.0) + np.cos(yy / 3.0) + rng.random(shape)) > 1).astype(np.uint8)
    geoms, component, cols, rows = border_components(make_raster, data, size)
    got, ok = stitch(geoms, component, cols, rows)
    assert ok.all()  # nothing left to GEOS
    order = np.argsort(component, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(component[order])) + 1)
    want = [shapely.simplify(shapely.union_all(geoms[g]), 0) for g in groups]
    got, want = shapely.normalize(got), shapely.normalize(np.array(want, dtype=object))
    assert (shapely.get_type_id(got) == shapely.GeometryType.POLYGON).all()
    assert shapely.is_valid(got).all()
    np.testing.assert_array_equal(shapely.to_wkb(got), shapely.to_wkb(want))
    assert (np.bincount(component) > 1).sum() > 5  # real joins happened


def test_blockwise_polygons_are_the_whole_rasters_vertex_for_vertex(make_raster):
    """Small blocks (many joins, every one by the stitch) against one block (no join)."""
    rng = np.random.default_rng(7)
    data = pinches((70, 90), rng)
    data[rng.random(data.shape) < 0.03] = 255
    raster = make_raster("classes.tif", data[None], nodata=255)
    whole = vz.vectorize(raster, block_size=4096)
    parts = vz.vectorize(raster, block_size=6)

    def canonical(gdf):
        wkb = shapely.to_wkb(shapely.normalize(gdf.geometry.values.to_numpy()))
        return sorted(zip(gdf.cluster.tolist(), wkb, gdf.area_m2.tolist(), strict=True))

    assert canonical(parts) == canonical(whole)


def test_a_component_the_stitch_cannot_follow_is_left_to_geos():
    """Pieces that overlap (not a block cut) are reported, not joined wrongly."""
    a, b = shapely.box(0, 0, 4, 4), shapely.box(2, 0, 6, 4)
    c, d = shapely.box(10, 0, 12, 2), shapely.box(12, 0, 14, 2)
    got, ok = stitch(np.array([a, b, c, d]), np.array([0, 0, 1, 1]), np.array([12]), np.array([]))
    assert ok.tolist() == [False, True]
    assert got[1].normalize().equals_exact(shapely.box(10, 0, 14, 2).normalize(), 0)


def test_components_stitched_in_batches_give_the_same_polygons(make_raster, monkeypatch):
    """Memory is bounded by joining components a batch of vertices at a time."""
    rng = np.random.default_rng(8)
    data = rng.integers(0, 3, (60, 80), dtype=np.uint8)
    raster = make_raster("classes.tif", data[None], nodata=255)
    one_batch = vz.vectorize(raster, block_size=7)
    monkeypatch.setattr(borders, "STITCH_VERTICES", 40)
    batches = vz.vectorize(raster, block_size=7)
    assert len(batches) == len(one_batch) > 100
    np.testing.assert_array_equal(
        shapely.to_wkb(batches.geometry.values.to_numpy()),
        shapely.to_wkb(one_batch.geometry.values.to_numpy()),
    )
