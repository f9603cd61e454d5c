"""Labels (issue 10, part 4): exact rasterisation on any affine grid, label rasters on the
image grid only, and labels that cover nothing are an error, not "with labels".
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.features import rasterize
from reliability_util import assert_refused, geoseg, read, spawn, write_raster
from shapely.geometry import box, mapping


def _geojson(path, geoms, crs="EPSG:32611", values=None):
    epsg = crs.split(":")[1]
    feats = [
        {"type": "Feature", "properties": {"label": int(v)}, "geometry": mapping(g)}
        for g, v in zip(geoms, values or [1] * len(geoms), strict=True)
    ]
    path.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "crs": {"type": "name", "properties": {"name": f"urn:ogc:def:crs:EPSG::{epsg}"}},
                "features": feats,
            }
        )
    )
    return path


def _store_labels(store):
    from geoseg.tiles.store import open_store

    s = open_store(store)
    return s, s.label[:], s.origin


@pytest.mark.parametrize("angle", [20.0, -35.0, 90.0])
def test_rotated_grid_labels_are_rasterised_exactly(fixtures, tmp_path, angle):
    """Every tile's labels equal one whole-grid rasterisation (rasterio.features.rasterize).

    Today: each window's query box is built from two corners, which on a rotated grid misses
    part of the window, so polygons near some tile corners are dropped (2.3 % of pixels).
    """
    image = read(fixtures["rgbn"])
    h, w = image.shape[1:]
    transform = (
        Affine.translation(500000.0, 4000000.0) * Affine.rotation(angle) * Affine.scale(0.5, -0.5)
    )
    path = write_raster(tmp_path / "rot.tif", image, transform=transform)
    rng = np.random.default_rng(0)
    geoms = []
    for _ in range(60):
        r, c = rng.uniform(0, h), rng.uniform(0, w)
        x, y = transform * (c, r)
        s = rng.uniform(1, 4)
        geoms.append(box(x - s, y - s, x + s, y + s))
    labels = _geojson(tmp_path / "l.geojson", geoms)
    expected = rasterize(
        [(g, 1) for g in geoms], out_shape=(h, w), transform=transform, fill=0, dtype="uint8"
    )
    assert expected.sum() > 500
    store = tmp_path / "s.zarr"
    r = geoseg("tile", path, "-o", store, "--tile-size", 32, "--overlap", 8, "--labels", labels)
    assert r.code == 0, r.err
    _, lab, origin = _store_labels(store)
    for i, (_, row, col, _) in enumerate(origin):
        want = expected[row : row + 32, col : col + 32]
        np.testing.assert_array_equal(lab[i][: want.shape[0], : want.shape[1]], want)


def test_label_raster_on_another_transform_is_refused(fixtures, tmp_path):
    """Same size, shifted by 10 m: today accepted (size is the only check)."""
    with rasterio.open(fixtures["labels"]) as src:
        data = src.read()
    shifted = write_raster(
        tmp_path / "shifted.tif",
        data,
        transform=Affine.translation(500010.0, 4000000.0) * Affine.scale(0.5, -0.5),
    )
    r = geoseg(
        "tile", fixtures["rgbn"], "-o", tmp_path / "s.zarr", "--tile-size", 64, "--labels", shifted
    )
    assert_refused(r, "--labels", "transform", "shifted.tif")
    assert not (tmp_path / "s.zarr").exists()


def test_label_raster_in_another_crs_is_refused(fixtures, tmp_path):
    with rasterio.open(fixtures["labels"]) as src:
        data = src.read()
    other = write_raster(tmp_path / "other_crs.tif", data, crs="EPSG:32612")
    r = geoseg(
        "tile", fixtures["rgbn"], "-o", tmp_path / "s.zarr", "--tile-size", 64, "--labels", other
    )
    assert_refused(r, "--labels", "crs", "other_crs.tif")


def test_labels_that_do_not_overlap_the_image_are_refused(fixtures, tmp_path):
    """Footprints of another town: today the store says "with labels" and holds only zeros."""
    far = _geojson(tmp_path / "far.geojson", [box(600000, 4100000, 600050, 4100050)])
    r = geoseg(
        "tile", fixtures["rgbn"], "-o", tmp_path / "s.zarr", "--tile-size", 64, "--labels", far
    )
    assert_refused(r, "--labels", "far.geojson", "--allow-empty-labels")
    assert not (tmp_path / "s.zarr").exists()


def test_an_empty_label_file_is_refused(fixtures, tmp_path):
    empty = tmp_path / "empty.geojson"
    empty.write_text('{"type": "FeatureCollection", "features": []}')
    r = geoseg(
        "tile", fixtures["rgbn"], "-o", tmp_path / "s.zarr", "--tile-size", 64, "--labels", empty
    )
    assert_refused(r, "--labels", "empty.geojson")


def test_allow_empty_labels_warns_loudly_and_does_not_claim_labels(fixtures, tmp_path):
    """A real process, so the warning is seen on stderr as a user sees it."""
    far = _geojson(tmp_path / "far.geojson", [box(600000, 4100000, 600050, 4100050)])
    proc = spawn(
        "tile",
        fixtures["rgbn"],
        "-o",
        tmp_path / "s.zarr",
        "--tile-size",
        64,
        "--labels",
        far,
        "--allow-empty-labels",
    )
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "warning" in err.lower() and "far.geojson" in err
    assert "with labels" not in out


def test_quebec_mask_with_nodata_zero_keeps_background(tmp_path):
    """Real trap (shared/data quebec-aerial): a {0,1} building mask declaring nodata=0 —
    0 is background there, not missing; labels must be 1 on buildings and 0 elsewhere, and
    the mask's nodata must not invalidate image pixels.
    """
    rng = np.random.default_rng(2)
    image = rng.integers(1, 255, (3, 64, 64), dtype=np.uint8)
    mask = np.zeros((1, 64, 64), np.uint8)
    mask[0, 10:30, 20:40] = 1
    img = write_raster(tmp_path / "img.tif", image)
    lab = write_raster(tmp_path / "mask.tif", mask, nodata=0)
    store = tmp_path / "s.zarr"
    r = geoseg("tile", img, "-o", store, "--tile-size", 64, "--labels", lab)
    assert r.code == 0, r.err
    s, labels, _ = _store_labels(store)
    assert labels[0].sum() == 400 and set(np.unique(labels[0])) == {0, 1}
    assert s.valid[:].all()
