"""The tile store: grid math, statistics, labels, resume, fsspec URLs, real crops."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
import rasterio
import zarr

from geoseg.errors import BadInput, OutputExists
from geoseg.info import describe
from geoseg.tiles.grid import tile_windows
from geoseg.tiles.store import open_store
from geoseg.tiles.writer import tile


def _covered(height, width, size, overlap):
    cover = np.zeros((height, width), int)
    for r, c in tile_windows(height, width, size, overlap):
        cover[r : r + size, c : c + size] += 1
    return cover


@pytest.mark.parametrize(
    "height, width, size, overlap",
    [(100, 130, 32, 0), (100, 130, 32, 8), (64, 64, 32, 0), (65, 97, 32, 16), (20, 50, 64, 8)],
)
def test_windows_cover_every_pixel_inside_the_raster(height, width, size, overlap):
    windows = tile_windows(height, width, size, overlap)
    assert len(set(windows)) == len(windows)
    assert (_covered(height, width, size, overlap) >= 1).all()
    for r, c in windows:
        # snapped to the edge: no tile starts past the last full-tile position
        assert r <= max(0, height - size) and c <= max(0, width - size)


def test_windows_stride_and_snap():
    assert tile_windows(100, 32, 32, 0) == [(0, 0), (32, 0), (64, 0), (68, 0)]
    assert tile_windows(64, 64, 32, 0) == [(0, 0), (0, 32), (32, 0), (32, 32)]
    assert [r for r, _ in tile_windows(100, 32, 32, 8)] == [0, 24, 48, 68]
    assert tile_windows(10, 20, 64, 8) == [(0, 0)]
    with pytest.raises(BadInput, match="overlap"):
        tile_windows(100, 100, 32, 32)


def test_tile_store_matches_the_source(fixtures, tmp_path):
    out = tmp_path / "s.zarr"
    store = tile(
        [fixtures["rgbn"]], out, bands="nir,red", tile_size=48, overlap=8, scheduler="sync"
    )
    with rasterio.open(fixtures["rgbn"]) as src:
        full = src.read([4, 1])
        transform, crs = src.transform, src.crs
    assert store.bands == [4, 1] and store.band_names == ["nir", "red"]
    assert store.n_tiles == len(tile_windows(96, 128, 48, 8)) == 9
    assert store.image.dtype == np.uint8 and store.image.shape == (9, 2, 48, 48)
    for i in range(store.n_tiles):
        t = store.read(i)
        source, row, col, n_valid = t["origin"]
        assert source == 0 and n_valid == t["valid"].sum() == 48 * 48
        np.testing.assert_array_equal(t["image"], full[:, row : row + 48, col : col + 48])
        assert store.tile_transform(i) == transform @ transform.translation(col, row)
        assert store.crs(i) == crs
    assert not store.has_labels and store.read(0)["label"] is None
    # statistics over every source pixel exactly once, as numpy computes them
    flat = full.reshape(2, -1).astype(np.float64)
    np.testing.assert_allclose(store.stats["mean"], flat.mean(1))
    np.testing.assert_allclose(store.stats["std"], flat.std(1))
    for key, q in (("p2", 2), ("p98", 98)):
        expected = np.percentile(flat, q, axis=1, method="inverted_cdf")
        np.testing.assert_array_equal(store.stats[key], expected)
    assert not list(tmp_path.glob(".*partial*"))


def test_stats_ignore_nodata_and_min_valid_skips_tiles(fixtures, tmp_path):
    with rasterio.open(fixtures["rgbn_nodata"]) as src:
        data = src.read().astype(np.float64)
    everything = tile(fixtures["rgbn_nodata"], tmp_path / "a.zarr", tile_size=16, overlap=0)
    assert everything.n_tiles == 6 * 8
    valid = data[:, :, 20:].reshape(4, -1)
    np.testing.assert_allclose(everything.stats["mean"], valid.mean(1))
    kept = tile(
        fixtures["rgbn_nodata"], tmp_path / "b.zarr", tile_size=16, overlap=0, min_valid=0.5
    )
    # columns 0..19 are nodata: tiles at col 0 have no valid pixel, at col 16 12/16 columns
    assert kept.n_tiles == 6 * 7
    assert (kept.origin[:, 2] >= 16).all()
    assert set(kept.origin[kept.origin[:, 2] == 16, 3]) == {16 * 12}
    np.testing.assert_allclose(kept.stats["mean"], everything.stats["mean"])


def test_edge_tiles_are_padded_and_invalid(make_raster, tmp_path):
    image = np.arange(1, 1 + 3 * 20 * 30, dtype=np.uint16).reshape(3, 20, 30)
    path = make_raster("small.tif", image)
    store = tile(path, tmp_path / "s.zarr", tile_size=32, overlap=4)
    assert store.n_tiles == 1
    t = store.read(0)
    assert t["image"].dtype == np.uint16
    np.testing.assert_array_equal(t["image"][:, :20, :30], image)
    assert (t["image"][:, 20:] == 0).all() and t["valid"].sum() == 600 == t["origin"][3]


def test_vector_labels_burned_in_the_source_crs(data_dir, tmp_path):
    crop = data_dir / "crops" / "vegas_mul8_uint8.tif"
    labels = data_dir.parent.parent / "geoseg" / "data" / "vegas_img2144" / "labels.geojson"
    store = tile(crop, tmp_path / "s.zarr", tile_size=64, overlap=16, labels=labels)
    assert store.has_labels and store.label_classes == {"1": 1, "2": 2, "3": 3}
    burned = np.concatenate([store.read(i)["label"].ravel() for i in range(store.n_tiles)])
    assert set(np.unique(burned)) <= {0, 1, 2, 3} and (burned > 0).sum() > 100
    # the same polygons rasterised on the whole crop give the same pixels in every tile
    import geopandas as gpd
    from rasterio.features import rasterize

    gdf = gpd.read_file(labels)
    with rasterio.open(crop) as src:
        full = rasterize(
            zip(gdf.geometry, gdf["label"], strict=True),
            out_shape=(src.height, src.width),
            transform=src.transform,
            dtype="uint8",
        )
    for i in range(store.n_tiles):
        _, row, col, _ = store.origin[i]
        np.testing.assert_array_equal(store.read(i)["label"], full[row : row + 64, col : col + 64])


def test_isprs_colour_labels_map_to_classes(data_dir, make_raster, tmp_path):
    from PIL import Image

    index = np.asarray(Image.open(data_dir / "isprs" / "potsdam_2_10_label_512.png"))[:64, :64]
    colours = {
        1: (255, 255, 255),
        2: (0, 0, 255),
        3: (0, 255, 255),
        4: (0, 255, 0),
        5: (255, 255, 0),
        6: (255, 0, 0),
        0: (0, 0, 0),
    }
    rgb = np.zeros((3, 64, 64), np.uint8)
    for cls, colour in colours.items():
        rgb[:, index == cls] = np.array(colour, np.uint8)[:, None]
    image = make_raster("img.tif", np.full((4, 64, 64), 9, np.uint8))
    label = make_raster("lab.tif", rgb)
    store = tile(image, tmp_path / "s.zarr", tile_size=32, overlap=0, labels=label)
    assert store.label_classes["building"] == 2
    np.testing.assert_array_equal(store.read(3)["label"], index[32:, 32:])


def test_resume_after_interruption_equals_a_full_run(fixtures, tmp_path):
    kwargs = dict(tile_size=16, overlap=4, labels=fixtures["labels"])
    reference = tile(fixtures["rgbn"], tmp_path / "ref.zarr", **kwargs)
    assert reference.n_tiles > 32  # several write batches
    # an interrupted run: a partial store with two batches' tiles and flags missing
    out = tmp_path / "out.zarr"
    partial = tmp_path / ".out.zarr.partial"
    tile(fixtures["rgbn"], partial, **kwargs)
    group = zarr.open_group(str(partial), mode="r+")
    group.attrs["complete"] = False
    group["done"][0:32] = False
    for name in ("image", "valid", "label"):
        group[name][0:32] = 0
    with pytest.raises(BadInput, match="incomplete"):
        open_store(partial)
    resumed = tile(fixtures["rgbn"], out, **kwargs)
    assert not partial.exists()
    for name in ("image", "valid", "label", "origin"):
        np.testing.assert_array_equal(resumed.group[name][:], reference.group[name][:])
    assert json.dumps(resumed.attrs["stats"]) == json.dumps(reference.attrs["stats"])


def test_existing_output_is_refused_and_overwritten(fixtures, tmp_path):
    out = tmp_path / "s.zarr"
    tile(fixtures["rgbn"], out, tile_size=64, overlap=0)
    with pytest.raises(OutputExists):
        tile(fixtures["rgbn"], out, tile_size=64, overlap=0)
    store = tile(fixtures["rgbn"], out, tile_size=32, overlap=0, overwrite=True)
    assert store.n_tiles == 12


def test_memory_url_store_and_resume(fixtures):
    url = f"memory://geoseg-{uuid.uuid4().hex}/s.zarr"
    store = tile(fixtures["rgbn"], url, tile_size=32, overlap=0)
    assert store.n_tiles == 12 and open_store(url).stats["mean"].shape == (4,)
    with pytest.raises(OutputExists):
        tile(fixtures["rgbn"], url, tile_size=32, overlap=0)
    group = zarr.open_group(url, mode="r+")
    expected = group["image"][:]
    group.attrs["complete"] = False
    group["done"][:] = False
    group["image"][:] = 0
    tile(fixtures["rgbn"], url, tile_size=32, overlap=0)
    np.testing.assert_array_equal(open_store(url).image[:], expected)


def test_band_stack_and_mixed_inputs(data_dir, tmp_path):
    stack = tile(data_dir / "crops" / "vegas_rgbn", tmp_path / "s.zarr", tile_size=32, overlap=0)
    assert stack.band_names == ["red", "green", "blue", "nir"]
    with rasterio.open(data_dir / "crops" / "vegas_rgbn" / "vegas_rgbn-N.tif") as src:
        nir = src.read(1)
    np.testing.assert_array_equal(stack.read(0)["image"][3], nir[:32, :32])
    with pytest.raises(BadInput, match="one sensor"):
        tile(
            [
                data_dir / "crops" / "naip_rgbn_uint8.tif",
                data_dir / "crops" / "vegas_rgb_uint16.tif",
            ],
            tmp_path / "x.zarr",
        )


CROPS = {
    "vegas_mul8_uint8.tif": (8, "uint8", "EPSG:4326"),
    "vegas_rgb_uint16.tif": (3, "uint16", "EPSG:4326"),
    "shanghai_mul8_uint16.tif": (8, "uint16", "EPSG:4326"),
    "atlanta_pan_uint16.tif": (1, "uint16", "EPSG:32616"),
    "naip_rgbn_uint8.tif": (4, "uint8", "EPSG:26914"),
    "massachusetts_rgb_nodata255.tif": (3, "uint8", "EPSG:26986"),
}


@pytest.mark.parametrize("name", sorted(CROPS))
def test_real_crops_tile_and_describe(data_dir, tmp_path, name):
    count, dtype, crs = CROPS[name]
    path = data_dir / "crops" / name
    with rasterio.open(path) as src:
        data = src.read().reshape(count, -1).astype(np.float64)
        height, width = src.height, src.width
    out = tmp_path / "s.zarr"
    tile(path, out, tile_size=32, overlap=8)
    info = describe(out)
    assert info["tiles"] == len(tile_windows(height, width, 32, 8))
    assert len(info["bands"]) == count and info["dtype"] == dtype and info["crs"] == [crs]
    np.testing.assert_allclose([b["mean"] for b in info["bands"]], data.mean(1))
    raster = describe(path)
    assert raster["count"] == count and raster["crs"] == crs


def test_partial_store_with_other_settings_needs_overwrite(fixtures, tmp_path):
    partial = tmp_path / ".out.zarr.partial"
    tile(fixtures["rgbn"], partial, tile_size=32, overlap=0)
    zarr.open_group(str(partial), mode="r+").attrs["complete"] = False
    with pytest.raises(BadInput, match="other settings") as err:
        tile(fixtures["rgbn"], tmp_path / "out.zarr", tile_size=64, overlap=0)
    assert err.value.param == "--output"
    store = tile(fixtures["rgbn"], tmp_path / "out.zarr", tile_size=64, overlap=0, overwrite=True)
    assert store.n_tiles == 4 and not partial.exists()


def test_distributed_scheduler_writes_the_same_store(fixtures, tmp_path):
    distributed = pytest.importorskip("distributed")
    local = tile(fixtures["rgbn"], tmp_path / "local.zarr", tile_size=32, overlap=8)
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    ) as cluster:
        remote = tile(
            fixtures["rgbn"],
            tmp_path / "remote.zarr",
            tile_size=32,
            overlap=8,
            scheduler=cluster.scheduler_address,
        )
    np.testing.assert_array_equal(remote.image[:], local.image[:])
    assert remote.attrs["stats"] == local.attrs["stats"]


def test_float_stats_are_close_and_bounded(make_raster, tmp_path):
    rng = np.random.default_rng(1)
    image = rng.gamma(2.0, 0.1, size=(2, 60, 70)).astype(np.float32)
    image[:, :5, :5] = np.nan
    store = tile(
        make_raster("f.tif", image, nodata=float("nan")),
        tmp_path / "s.zarr",
        tile_size=32,
        overlap=8,
    )
    flat = image.reshape(2, -1)
    flat = flat[:, ~np.isnan(flat).all(0)].astype(np.float64)
    np.testing.assert_allclose(store.stats["mean"], flat.mean(1), rtol=1e-3)
    np.testing.assert_allclose(store.stats["std"], flat.std(1), rtol=1e-3)
    expected = np.percentile(flat, 98, axis=1, method="inverted_cdf")
    np.testing.assert_allclose(store.stats["p98"], expected, rtol=1e-3)
    assert store.image.dtype == np.float32 and not store.read(0)["valid"][:5, :5].any()


def test_store_of_the_previous_layout_reads_and_resumes(fixtures, tmp_path, monkeypatch):
    """A partial store in the layout before shards (issue 11: one file per tile, Blosc zstd-1
    image chunks without a checksum) resumes in its own layout (each chunk encoded with its
    array's own codecs) and reads back equal to a store written in shards."""
    from zarr.codecs import BloscCodec

    import geoseg.tiles.writer as writer
    from geoseg.tiles.chunks import sharded

    kwargs = dict(tile_size=16, overlap=4, labels=fixtures["labels"])
    reference = tile(fixtures["rgbn"], tmp_path / "ref.zarr", **kwargs)
    size = sharded(reference.group["image"])
    assert size > 1 and sharded(reference.group["label"]) == size
    n_files = len(list((tmp_path / "ref.zarr" / "image").glob("c.*")))
    assert n_files == -(-reference.n_tiles // size)  # one file per shard, not per tile
    assert reference.group["done"][:].all()  # flags written as whole chunks, one per shard
    partial = tmp_path / ".old.zarr.partial"
    with monkeypatch.context() as m:
        m.setattr(writer, "shard_tiles", lambda nbytes: 1)
        old = BloscCodec(cname="zstd", clevel=1, shuffle="shuffle")
        m.setattr(writer, "_image_codec", lambda: old)
        tile(fixtures["rgbn"], partial, **kwargs)
    group = zarr.open_group(str(partial), mode="r+")
    group.attrs["complete"] = False
    group["done"][0:32] = False
    group["image"][0:32] = 0
    resumed = tile(fixtures["rgbn"], tmp_path / "old.zarr", **kwargs)
    assert not sharded(resumed.group["image"]) and resumed.group["done"][:].all()
    assert resumed.group["image"].metadata.codecs[-1].cname.value == "zstd"
    for name in ("image", "valid", "label", "origin"):
        np.testing.assert_array_equal(resumed.group[name][:], reference.group[name][:])


@pytest.mark.parametrize("shape", [(1, 7), (1023, 1025), (2048, 1025)])
def test_byte_histograms_count_every_value_exactly(shape):
    """8-bit histograms are counted two pixels at a time above 512k values (issue 11): odd
    sizes, strided views and both paths count each value exactly as np.unique does."""
    from geoseg.tiles.stats import histogram

    rng = np.random.default_rng(3)
    band = rng.integers(0, 256, shape, dtype=np.uint8)
    band[: shape[0] // 2] = rng.integers(250, 256, band[: shape[0] // 2].shape, dtype=np.uint8)
    for values in (band, band[:, 1:], band.ravel()[band.ravel() > 3]):
        got_values, got_counts = histogram(values, values.dtype)
        expected_values, expected_counts = np.unique(values, return_counts=True)
        np.testing.assert_array_equal(got_values, expected_values)
        np.testing.assert_array_equal(got_counts, expected_counts)
