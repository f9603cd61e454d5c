"""Band contract (issue 10, part 1): bands are matched by name and dtype, never by count alone.

Models are real k-means runs trained through the CLI on the RGBN fixture (band descriptions
red, green, blue, nir; uint8); rasters are real crops (SpaceNet Shanghai / Vegas WorldView-3)
or copies of the fixture re-tagged the way GDAL tags RGBA and BGR files.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from reliability_util import CROPS, REPO, assert_refused, geoseg, read, train_kmeans, write_raster


@pytest.fixture(scope="module")
def rgbn_model(fixtures, tmp_path_factory):
    """k-means on red,green,blue,nir uint8 (names from the fixture's band descriptions)."""
    return train_kmeans([fixtures["rgbn"]], tmp_path_factory.mktemp("rgbn"))


@pytest.fixture(scope="module")
def rgb_model(fixtures, tmp_path_factory):
    """k-means on the red,green,blue bands of the fixture, selected by name."""
    return train_kmeans(
        [fixtures["rgbn"]], tmp_path_factory.mktemp("rgb"), "--bands", "red,green,blue"
    )


@pytest.fixture(scope="module")
def fixture_pixels(fixtures):
    return read(fixtures["rgbn"])


def test_uint16_8band_into_an_rgbn_uint8_model_is_refused(rgbn_model, tmp_path):
    """SpaceNet Shanghai MUL (8 bands, uint16) through an RGBN uint8 model: one line, exit 2.

    Today: 8 >= 4 bands, so bands 1..4 (coastal, blue, green, yellow) in uint16 go through a
    uint8 normalisation, exit 0.
    """
    out = tmp_path / "out"
    r = geoseg("predict", CROPS / "shanghai_mul8_uint16.tif", "-m", rgbn_model, "-o", out)
    assert_refused(r, "uint16", "uint8")
    assert not list(out.glob("*.tif")) if out.exists() else True


def test_rgba_alpha_is_never_taken_as_nir(rgbn_model, fixture_pixels, tmp_path):
    """An RGBA file (GDAL: Red, Green, Blue, Alpha) has no NIR: refused naming --bands."""
    rgba = fixture_pixels.copy()
    rgba[3] = 255
    # as GDAL writes RGBA: PHOTOMETRIC=RGB with an alpha extra sample (Red, Green, Blue, Alpha)
    path = write_raster(tmp_path / "rgba.tif", rgba, photometric="RGB", alpha="YES")
    r = geoseg("predict", path, "-m", rgbn_model, "-o", tmp_path / "out")
    assert_refused(r, "alpha", "nir", "--bands")


def test_an_explicit_band_mapping_is_honoured(rgbn_model, fixture_pixels, tmp_path):
    """The user may map bands by hand (--bands): the fourth band is then taken as NIR."""
    path = write_raster(tmp_path / "rgba.tif", fixture_pixels, photometric="RGB", alpha="YES")
    r = geoseg("predict", path, "-m", rgbn_model, "-o", tmp_path / "a", "--bands", "1,2,3,4")
    assert r.code == 0, r.err
    plain = write_raster(
        tmp_path / "plain.tif", fixture_pixels, descriptions=("red", "green", "blue", "nir")
    )
    r = geoseg("predict", plain, "-m", rgbn_model, "-o", tmp_path / "b")
    assert r.code == 0, r.err
    np.testing.assert_array_equal(
        read(tmp_path / "a" / "rgba_clusters.tif"), read(tmp_path / "b" / "plain_clusters.tif")
    )


def test_bgr_copy_is_read_by_colour_interpretation(rgb_model, fixture_pixels, tmp_path):
    """A BGR copy (GDAL: Blue, Green, Red) is named by colour interpretation and reordered.

    Today: ``geoseg info`` calls the bands red,green,blue (a guess from the count) and predict
    feeds blue as red.
    """
    rgb = write_raster(
        tmp_path / "rgb.tif", fixture_pixels[:3], colorinterp=("red", "green", "blue")
    )
    bgr = write_raster(
        tmp_path / "bgr.tif", fixture_pixels[2::-1].copy(), colorinterp=("blue", "green", "red")
    )
    info = geoseg("info", bgr, "--json", "--no-stats")
    assert info.code == 0, info.err
    assert [b["name"] for b in json.loads(info.out)["bands"]] == ["blue", "green", "red"]
    for path in (rgb, bgr):
        r = geoseg("predict", path, "-m", rgb_model, "-o", tmp_path / path.stem)
        assert r.code == 0, r.err
    np.testing.assert_array_equal(
        read(tmp_path / "rgb" / "rgb_clusters.tif"), read(tmp_path / "bgr" / "bgr_clusters.tif")
    )


def test_a_wider_raster_is_matched_by_band_name(rgbn_model, tmp_path):
    """WorldView-3 8-band uint8 (coastal, blue, green, yellow, red, ...) into an RGBN model
    reads red, green, blue, nir (bands 5, 3, 2, 7), not bands 1..4.
    """
    mul8 = CROPS / "vegas_mul8_uint8.tif"
    picked = read(mul8)[[4, 2, 1, 6]]
    rgbn = write_raster(tmp_path / "rgbn.tif", picked, descriptions=("red", "green", "blue", "nir"))
    for path in (mul8, rgbn):
        r = geoseg("predict", path, "-m", rgbn_model, "-o", tmp_path / path.stem)
        assert r.code == 0, r.err
    np.testing.assert_array_equal(
        read(tmp_path / "vegas_mul8_uint8" / "vegas_mul8_uint8_clusters.tif"),
        read(tmp_path / "rgbn" / "rgbn_clusters.tif"),
    )


@pytest.fixture(scope="module")
def generic_model(tmp_path_factory):
    """A 5-band raster without names (bands b1..b5) and its k-means model."""
    work = tmp_path_factory.mktemp("generic")
    rng = np.random.default_rng(0)
    data = rng.integers(0, 200, (5, 64, 64), dtype=np.uint8)
    path = write_raster(work / "five.tif", data)
    return train_kmeans([path], work, tile_size=32), data


def test_plain_band_names_that_cannot_be_matched_need_explicit_bands(generic_model, tmp_path):
    """b1..b5 in the model, b1..b6 in the raster: nothing says which five; --bands decides."""
    model, data = generic_model
    six = write_raster(tmp_path / "six.tif", np.concatenate([data, data[:1]]))
    r = geoseg("predict", six, "-m", model, "-o", tmp_path / "out")
    assert_refused(r, "--bands")
    r = geoseg("predict", six, "-m", model, "-o", tmp_path / "out", "--bands", "1,2,3,4,5")
    assert r.code == 0, r.err


def test_plain_band_names_match_the_same_plain_names(generic_model, tmp_path):
    """Same count, same dtype, both unnamed: b1..b5 is b1..b5 (accepted)."""
    model, data = generic_model
    same = write_raster(tmp_path / "same.tif", data[:, ::-1].copy())
    r = geoseg("predict", same, "-m", model, "-o", tmp_path / "out")
    assert r.code == 0, r.err


def test_band_names_dtype_and_stats_travel_in_store_and_checkpoint(rgb_model):
    """The store and the checkpoint both say which bands (by name), their dtype and stats."""
    store = rgb_model.parent.parent / "store.zarr"
    info = geoseg("info", store, "--json")
    assert info.code == 0, info.err
    described = json.loads(info.out)
    assert [b["name"] for b in described["bands"]] == ["red", "green", "blue"]
    assert described["dtype"] == "uint8"
    ckpt = torch.load(rgb_model, weights_only=True)
    assert ckpt["band_names"] == ["red", "green", "blue"]
    assert ckpt["dtype"] == "uint8"
    assert all(len(ckpt["norm"][k]) == 3 for k in ("mean", "std", "p2", "p98"))


def test_band_count_mismatch_names_what_to_pass(rgbn_model, fixture_pixels, tmp_path):
    """Two bands for a four-band model: exit 2, one line, naming the model's bands."""
    two = write_raster(tmp_path / "two.tif", fixture_pixels[:2].copy())
    r = geoseg("predict", two, "-m", rgbn_model, "-o", tmp_path / "out")
    assert_refused(r, "red,green,blue,nir")


def test_nir_that_gdal_tagged_alpha_is_still_nir(rgbn_model, tmp_path):
    """Real trap (NAIP sample): GDAL tags the 4th band of a plain 4-band uint8 GeoTIFF as
    Alpha. Graded values are data, not transparency: named nir, and the RGBN model reads it.
    """
    naip = CROPS / "naip_rgbn_uint8.tif"
    info = geoseg("info", naip, "--json", "--no-stats")
    assert [b["name"] for b in json.loads(info.out)["bands"]] == ["red", "green", "blue", "nir"]
    r = geoseg("predict", naip, "-m", rgbn_model, "-o", tmp_path / "out")
    assert r.code == 0, r.err


def test_described_band_codes_are_names_not_positions(fixture_pixels, tmp_path):
    """Sentinel-2 style descriptions (B02, B03, B04, B08) are names: a copy with the bands in
    another order (and its descriptions with them) gives the same map.
    """
    codes = ("B02", "B03", "B04", "B08")
    a = write_raster(tmp_path / "s2.tif", fixture_pixels[[2, 1, 0, 3]].copy(), descriptions=codes)
    order = [3, 0, 2, 1]
    b = write_raster(
        tmp_path / "s2_shuffled.tif",
        fixture_pixels[[2, 1, 0, 3]][order].copy(),
        descriptions=tuple(codes[i] for i in order),
    )
    model = train_kmeans([a], tmp_path / "m")
    for path in (a, b):
        r = geoseg("predict", path, "-m", model, "-o", tmp_path / "out")
        assert r.code == 0, r.err
    np.testing.assert_array_equal(
        read(tmp_path / "out" / "s2_clusters.tif"),
        read(tmp_path / "out" / "s2_shuffled_clusters.tif"),
    )


def test_map_applies_the_same_band_contract(rgbn_model, tmp_path):
    """`geoseg map --image` predicts too: Shanghai uint16 into the uint8 model is refused.
    Today: bands 1..4 of the uint16 file are read (count only), exit 0 or a late error.
    """
    labels = REPO / "geoseg" / "data" / "vegas_img2144" / "labels.geojson"
    r = geoseg(
        "map",
        rgbn_model,
        "--labels",
        labels,
        "--image",
        CROPS / "shanghai_mul8_uint16.tif",
        "-o",
        tmp_path / "mapped.pt",
    )
    assert_refused(r, "uint16", "uint8")
    assert not (tmp_path / "mapped.pt").exists()


class _CountingReads:
    """A real open dataset whose reads are recorded (every other attribute is the dataset's)."""

    def __init__(self, src):
        self._src, self.reads = src, []

    def __getattr__(self, name):
        return getattr(self._src, name)

    def read(self, *args, **kwargs):
        self.reads.append(kwargs)
        return self._src.read(*args, **kwargs)


@pytest.mark.parametrize("tiled", [True, False])
def test_alpha_check_samples_a_few_small_windows(tmp_path, tiled):
    """Whether an Alpha band is real transparency is decided on 9 windows of at most 64 px
    (each inside one block), never a decimated read of the whole band: on a tiled file that
    decodes every block, and `geoseg tile` of an 8192² RGBA file spent 90 s of 93 in it
    (once per reader; issue 11). Graded values are data; 0 / 255 only is a mask."""
    import rasterio

    from geoseg.io import bands

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (3, 700, 900), dtype=np.uint8)
    graded = np.concatenate([rgb, rng.integers(1, 254, (1, 700, 900), dtype=np.uint8)])
    alpha = np.concatenate([rgb, np.where(rng.random((1, 700, 900)) < 0.5, 0, 255)]).astype(
        np.uint8
    )
    layout = dict(tiled=True, blockxsize=256, blockysize=256) if tiled else {}
    for name, data, expected in (("graded", graded, False), ("alpha", alpha, True)):
        path = write_raster(
            tmp_path / f"{name}.tif", data, photometric="RGB", alpha="YES", **layout
        )
        with rasterio.open(path) as src:
            counting = _CountingReads(src)
            assert bands._sample_is_mask(counting, 4) is expected
            assert 1 <= len(counting.reads) <= 9
            for kwargs in counting.reads:
                window = kwargs["window"]
                assert "out_shape" not in kwargs and window.width <= 64 and window.height <= 64
            labels = bands.file_band_labels(src)
            assert (labels[3] == "alpha") is expected
            # asked again (every reader of a scene asks): answered without reading
            counting.reads.clear()
            assert bands._is_mask(counting, 4) is expected and not counting.reads
