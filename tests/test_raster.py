"""Raster reading: band selection, nodata semantics, windowed reads, describe."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from geoseg.errors import BadInput
from geoseg.info import describe
from geoseg.io.bands import band_names, resolve_bands
from geoseg.io.rasters import open_raster, read_window, valid_mask


def test_resolve_bands_indices_names_and_presets():
    assert resolve_bands(8, None) == list(range(1, 9))
    assert resolve_bands(8, "5,3,2") == [5, 3, 2]
    # WorldView-3 preset: "nir" means nir1
    assert resolve_bands(8, "red,green,blue,nir") == [5, 3, 2, 7]
    assert resolve_bands(4, ["nir", 1]) == [4, 1]
    assert resolve_bands(["B04", "B08"], "b08") == [2]
    assert band_names([None] * 5) == ["b1", "b2", "b3", "b4", "b5"]


@pytest.mark.parametrize("bands, needle", [("9", "1..8"), ("0", "1..8"), ("swir", "coastal")])
def test_resolve_bands_errors_name_the_valid_choices(bands, needle):
    with pytest.raises(BadInput) as err:
        resolve_bands(8, bands)
    assert err.value.param == "--bands" and needle in str(err.value)


def test_valid_mask_needs_all_bands_at_nodata():
    data = np.array([[[255, 255, 7]], [[255, 10, 7]], [[255, 255, 7]]], np.uint8)
    assert valid_mask(data, 255).tolist() == [[False, True, True]]
    assert valid_mask(data, None).all()
    assert valid_mask(data, 255, mask=np.array([[255, 255, 0]])).tolist() == [[False, True, False]]
    floats = np.full((2, 1, 2), np.nan)
    floats[0, 0, 1] = 1.0
    # NaN in any band is invalid (issue 10): one NaN band poisons the whole pixel vector
    assert valid_mask(floats, float("nan")).tolist() == [[False, False]]
    assert valid_mask(floats, None).tolist() == [[False, False]]


def test_massachusetts_white_roof_stays_valid(data_dir, tmp_path):
    """The real sample declares nodata=255 on uint8 RGB; a pixel at 255 in one band is a roof."""
    src_path = data_dir / "crops" / "massachusetts_rgb_nodata255.tif"
    with rasterio.open(src_path) as src:
        assert src.nodata == 255
        data, profile = src.read(), src.profile
    data[0, 10, 10] = 255  # saturated red roof
    data[:, 20, 20] = 255  # every band at nodata: a real hole
    edited = tmp_path / "mass.tif"
    with rasterio.open(edited, "w", **profile) as dst:
        dst.write(data)
    with open_raster(edited) as src:
        _, valid = read_window(src, Window(0, 0, src.width, src.height), [1, 2, 3])
    assert valid[10, 10] and not valid[20, 20]
    assert valid.sum() == valid.size - 1


def test_read_window_pads_outside_the_raster(fixtures):
    with open_raster(fixtures["rgbn"]) as src:
        full = src.read([2, 4])
        data, valid = read_window(src, Window(100, 80, 64, 64), [2, 4])
    assert data.shape == (2, 64, 64)
    np.testing.assert_array_equal(data[:, :16, :28], full[:, 80:, 100:])
    assert valid[:16, :28].all() and not valid[16:].any() and not valid[:, 28:].any()
    assert (data[:, 16:] == 0).all()


def test_read_window_nodata_override(fixtures):
    with open_raster(fixtures["rgbn_nodata"]) as src:
        window = Window(0, 0, 40, 40)
        assert not read_window(src, window, [1, 2, 3, 4])[1][:, :20].any()
        assert read_window(src, window, [1, 2, 3, 4], "none")[1].all()


def test_open_raster_errors(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a raster")
    with pytest.raises(BadInput, match="not a raster"):
        open_raster(text)
    with pytest.raises(BadInput, match="does not exist"):
        open_raster(tmp_path / "missing.tif", param="--labels")


def test_describe_raster_and_vrt(fixtures, tmp_path):
    info = describe(fixtures["rgbn"])
    with rasterio.open(fixtures["rgbn"]) as src:
        data = src.read().astype(np.float64)
    assert (info["width"], info["height"], info["count"]) == (128, 96, 4)
    assert info["crs"] == "EPSG:32611" and info["resolution"] == [0.5, 0.5]
    assert [b["name"] for b in info["bands"]] == ["red", "green", "blue", "nir"]
    np.testing.assert_allclose([b["mean"] for b in info["bands"]], data.mean(axis=(1, 2)))
    assert not list(fixtures["rgbn"].parent.glob("*.aux.xml"))  # the user's folder stays clean
    vrt = tmp_path / "one.vrt"
    vrt.write_text(
        f'<VRTDataset rasterXSize="128" rasterYSize="96"><VRTRasterBand dataType="Byte" band="1">'
        f"<SimpleSource><SourceFilename>{fixtures['rgbn']}</SourceFilename><SourceBand>4"
        "</SourceBand></SimpleSource></VRTRasterBand></VRTDataset>"
    )
    vinfo = describe(vrt)
    assert vinfo["driver"] == "VRT" and vinfo["count"] == 1
    assert vinfo["bands"][0]["max"] == data[3].max()
