"""Mode overviews computed by geoseg (issue 11) equal GDAL's, pixel for pixel and in the COG's
bytes: GDAL itself computes the reference here, on odd sizes (windows of 1 to 3 pixels),
nodata, tied windows and a real class map.
"""

from __future__ import annotations

import filecmp
import shutil
import subprocess

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from make_fixtures import write_class_raster
from rasterio.transform import from_origin

from geoseg.predict import overviews
from geoseg.predict.cog import scratch_codec, write_cog


def class_raster(path, data: np.ndarray, nodata=255, colormap=None):
    """A class map as predict's scratch file is written (its codec included)."""
    return write_class_raster(path, data, nodata=nodata, colormap=colormap, **scratch_codec())


def gdal_cog(src, dst, blocksize=512):
    """The COG driver computing its own MODE overviews: the reference."""
    rasterio.shutil.copy(
        str(src),
        str(dst),
        driver="COG",
        COMPRESS="DEFLATE",
        BLOCKSIZE=blocksize,
        OVERVIEWS="IGNORE_EXISTING",
        OVERVIEW_RESAMPLING="MODE",
        NUM_THREADS="ALL_CPUS",
        BIGTIFF="IF_SAFER",
    )
    return dst


def levels_of(path) -> list[np.ndarray]:
    with rasterio.open(path) as src:
        n = len(src.overviews(1))
    out = []
    for k in range(n):
        with rasterio.open(path, OVERVIEW_LEVEL=k) as level:
            out.append(level.read(1))
    return out


def maps(data_dir, shape, kind, rng):
    h, w = shape
    if kind == "speckle":  # 4 values at random: most 2x2 windows are ties
        return rng.integers(0, 4, shape).astype(np.uint8)
    with rasterio.open(data_dir / "crops" / "naip_rgbn_uint8.tif") as src:
        img = src.read(out_shape=(src.count, h, w)).astype(np.int32)
    # a real map: the band-sum cut into 6 classes (smooth regions, ragged borders)
    total = img.sum(axis=0)
    data = np.digitize(total, np.quantile(total, [0.2, 0.4, 0.6, 0.8, 0.9])).astype(np.uint8)
    if kind == "nodata":
        data[rng.random(shape) < 0.3] = 255
        data[: h // 3, : w // 3] = 255  # windows of nodata only
    return data


@pytest.mark.parametrize("shape", [(650, 650), (777, 1001), (2049, 1301), (300, 2600), (1025, 513)])
@pytest.mark.parametrize("kind", ["real", "speckle", "nodata"])
def test_mode_overviews_equal_gdal(data_dir, tmp_path, shape, kind):
    rng = np.random.default_rng(sum(shape))
    src = class_raster(tmp_path / "src.tif", maps(data_dir, shape, kind, rng))
    reference = levels_of(gdal_cog(src, tmp_path / "gdal.tif"))
    assert reference, "the reference has overviews"
    assert [level.shape[::-1] for level in reference] == overviews.cog_levels(*shape[::-1], 512)
    with overviews.mode_overviews(src, 512, scratch_codec()) as vrt:
        ours = levels_of(vrt)
        made = sorted(p.name for p in tmp_path.iterdir())
    for k, (a, b) in enumerate(zip(ours, reference, strict=True)):
        assert a.shape == b.shape, k
        assert np.array_equal(a, b), f"level {k}: {int((a != b).sum())} pixels differ"
    assert len(made) > 3 and sorted(p.name for p in tmp_path.iterdir()) == ["gdal.tif", "src.tif"]


def test_strips_give_the_same_levels(data_dir, tmp_path, monkeypatch):
    """Levels are written strip by strip (memory of a strip, not a level): a strip edge that
    cuts the source windows anywhere changes nothing."""
    data = maps(data_dir, (2049, 1301), "nodata", np.random.default_rng(3))
    src = class_raster(tmp_path / "src.tif", data)
    reference = levels_of(gdal_cog(src, tmp_path / "gdal.tif"))
    monkeypatch.setattr(overviews, "STRIP_ROWS", 37)
    with overviews.mode_overviews(src, 512, scratch_codec()) as vrt:
        for a, b in zip(levels_of(vrt), reference, strict=True):
            assert np.array_equal(a, b)


def test_write_cog_is_byte_identical_to_gdals(data_dir, tmp_path):
    """The COG written from geoseg's overviews is the very file GDAL writes computing them:
    pixels, overviews, colour table, nodata, georeferencing and layout."""
    colormap = {i: (40 * i, 255 - 40 * i, 128, 255) for i in range(6)}
    data = maps(data_dir, (1300, 1100), "nodata", np.random.default_rng(5))
    src = class_raster(tmp_path / "src.tif", data, colormap=colormap)
    gdal_cog(src, tmp_path / "gdal.tif")
    write_cog(src, tmp_path / "ours.tif", overview_resampling="mode")
    assert filecmp.cmp(tmp_path / "ours.tif", tmp_path / "gdal.tif", shallow=False)
    with rasterio.open(tmp_path / "ours.tif") as cog:
        assert cog.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert cog.overviews(1) == [2, 4]
        assert cog.colormap(1)[3] == colormap[3]


def test_other_rasters_keep_gdals_overviews(tmp_path):
    """Probabilities (float, average) and multi-band rasters are left to the COG driver."""
    data = np.random.default_rng(0).random((2, 1200, 1100)).astype(np.float32)
    profile = dict(
        driver="GTiff", width=1100, height=1200, count=2, dtype="float32", tiled=True,
        crs="EPSG:32614", transform=from_origin(0, 1200, 1, 1),
    )  # fmt: skip
    with rasterio.open(tmp_path / "p.tif", "w", **profile) as dst:
        dst.write(data)
        assert not overviews.supported(dst)
    write_cog(tmp_path / "p.tif", tmp_path / "p_cog.tif", overview_resampling="average")
    with rasterio.open(tmp_path / "p_cog.tif") as cog:
        assert cog.overviews(1) == [2, 4]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.tif", "p_cog.tif"]


def test_a_nodata_a_byte_cannot_hold_is_left_to_gdal(tmp_path):
    """GDAL reads an out-of-range nodata (-1) on a byte band and its mode then skips 0,
    while rasterio reports no nodata: such a raster keeps GDAL's overviews, and its COG is
    still GDAL's file."""
    edit = shutil.which("gdal_edit.py")
    if edit is None:
        pytest.skip("gdal_edit.py (GDAL's command-line tools) is not installed")
    data = np.random.default_rng(1).integers(0, 4, (1300, 1100)).astype(np.uint8)
    path = class_raster(tmp_path / "odd.tif", data, nodata=None)
    # rasterio refuses to write such a nodata; GDAL's own tools (and other writers) do not
    subprocess.run([edit, "-a_nodata", "-1", str(path)], check=True, capture_output=True)
    with overviews.mode_overviews(path, 512, scratch_codec()) as vrt:
        assert vrt is None
    gdal_cog(path, tmp_path / "gdal.tif")
    write_cog(path, tmp_path / "ours.tif", overview_resampling="mode")
    assert filecmp.cmp(tmp_path / "ours.tif", tmp_path / "gdal.tif", shallow=False)
