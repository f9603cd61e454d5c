"""Cloud Optimized GeoTIFF outputs: layout, overviews (mode), colour table, nodata, georeference."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from make_fixtures import synthetic_scene, write_class_raster, write_raster
from test_predict import tiny_checkpoint

from geoseg.errors import OutputExists
from geoseg.io.palette import class_colormap, colour_table
from geoseg.predict.cog import write_cog
from geoseg.predict.raster import predict


def _stitched(path, data, *, nodata=255, colormap=True):
    """A tiled GeoTIFF as predict fills it block by block."""
    return write_class_raster(
        path, data, nodata=nodata, colormap=class_colormap(4, nodata) if colormap else None
    )


def test_write_cog_overviews_take_the_most_frequent_class(tmp_path):
    # each 2x2 cell: top-left 2 (what GDAL's nearest picks), the other three 1 → mode says 1
    data = np.ones((1024, 1024), np.uint8)
    data[::2, ::2] = 2
    cog = write_cog(_stitched(tmp_path / "s.tif", data), tmp_path / "c.tif")
    with rasterio.open(cog) as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.overviews(1) == [2]
        overview = src.read(1, out_shape=(512, 512))
    assert (overview == 1).all()


def test_write_cog_refuses_an_existing_output(tmp_path):
    src = _stitched(tmp_path / "s.tif", np.zeros((64, 64), np.uint8))
    (tmp_path / "c.tif").write_text("keep me")
    with pytest.raises(OutputExists):
        write_cog(src, tmp_path / "c.tif")
    assert (tmp_path / "c.tif").read_text() == "keep me"


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
    """A 600x600 scene (large enough for one overview level) with a nodata collar."""
    tmp = tmp_path_factory.mktemp("cog")
    image, _ = synthetic_scene(600, 600, seed=7)
    image[:, :, :37] = 0
    image[:, 590:, :] = 0
    scene = write_raster(tmp / "scene.tif", image, nodata=0, origin=(612345.5, 3987654.0), res=0.3)
    ckpt = tiny_checkpoint(tmp / "m.pt", k=6, tile=128)
    paths = predict(
        scene, ckpt, tmp / "out", block_size=256, probabilities=True, classes={"building": [2]}
    )
    return scene, paths


def test_cluster_raster_is_a_valid_cog(predicted):
    scene, paths = predicted
    with rasterio.open(scene) as src, rasterio.open(paths["clusters"]) as out:
        assert out.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert out.overviews(1) == [2]
        assert out.dtypes[0] == "uint8" and out.nodata == 255
        assert out.crs == src.crs and out.transform == src.transform
        assert (out.width, out.height) == (src.width, src.height)
        cmap = out.colormap(1)
        assert all(cmap[i] == colour for i, colour in colour_table(6).items())
        clusters = out.read(1)
        invalid = (src.read() == 0).all(axis=0)
    assert invalid.sum() > 0
    np.testing.assert_array_equal(clusters == 255, invalid)
    assert clusters[~invalid].max() < 6
    assert paths["clusters:style"].exists()


def test_probabilities_are_float16_cog_summing_to_one(predicted):
    _, paths = predicted
    with rasterio.open(paths["probabilities"]) as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.count == 6 and src.tags(1, ns="IMAGE_STRUCTURE")["NBITS"] == "16"
        probs = src.read()
    valid = ~np.isnan(probs[0])
    assert np.isfinite(probs[:, valid]).all()  # 600 px: partial edge tiles, padded by GDAL
    np.testing.assert_allclose(probs[:, valid].sum(0), 1, atol=5e-3)


def test_class_raster_is_a_binary_cog_with_nodata(predicted):
    _, paths = predicted
    with rasterio.open(paths["building"]) as b, rasterio.open(paths["clusters"]) as c:
        assert b.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and b.nodata == 255
        building, clusters = b.read(1), c.read(1)
    np.testing.assert_array_equal(building == 255, clusters == 255)
    np.testing.assert_array_equal(building == 1, clusters == 2)
