"""The fast paths of tile / predict / vectorize give the same outputs as the straightforward
ones (issue 11): every fast path is checked here against a plain reference implementation
that reads each window on its own, on real sample crops and on edge cases (striped files,
rasters smaller than a tile, nodata, many strips, column groups and lanes).
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

import geoseg.tiles.strips as strips
import geoseg.tiles.writer as writer
from geoseg.io.rasters import read_window
from geoseg.tiles.grid import tile_windows
from geoseg.tiles.store import open_store

# --- tile ------------------------------------------------------------------------------------


def reference_store(path, tile_size: int, overlap: int, min_valid: float = 0.0, nodata=None):
    """What a tile store must hold, the slow way: one boundless read per window, and the
    statistics from whole-raster histograms of the valid pixels (each pixel counted once)."""
    with rasterio.open(path) as src:
        bands = list(range(1, src.count + 1))
        windows = tile_windows(src.height, src.width, tile_size, overlap)
        tiles = [
            read_window(src, Window(c, r, tile_size, tile_size), bands, nodata) for r, c in windows
        ]
        data, valid = read_window(src, Window(0, 0, src.width, src.height), bands, nodata)
    kept = [k for k, (_, v) in enumerate(tiles) if v.sum() / tile_size**2 >= min_valid]
    stats = {"mean": [], "std": [], "p2": [], "p98": []}
    for band in data:
        values, counts = np.unique(band[valid], return_counts=True)
        values = values.astype(np.float64)
        total = counts.sum()
        mean = float((values * counts).sum() / total)
        stats["mean"].append(mean)
        stats["std"].append(float(np.sqrt(float((((values - mean) ** 2) * counts).sum() / total))))
        for key, q in (("p2", 2), ("p98", 98)):
            stats[key].append(float(np.percentile(band[valid], q, method="inverted_cdf")))
    return {
        "image": np.stack([tiles[k][0] for k in kept]),
        "valid": np.stack([tiles[k][1] for k in kept]),
        "origin": np.array([[0, *windows[k], tiles[k][1].sum()] for k in kept], np.int64),
        "stats": stats,
    }


def assert_store_equals(store, ref):
    np.testing.assert_array_equal(store.image[:], ref["image"])
    np.testing.assert_array_equal(store.valid[:], ref["valid"])
    np.testing.assert_array_equal(store.origin, ref["origin"])
    for key, values in ref["stats"].items():
        np.testing.assert_allclose(store.stats[key], values, rtol=1e-12, err_msg=key)
        if key in ("p2", "p98"):
            assert list(store.stats[key]) == values


@pytest.fixture
def small_strips(monkeypatch):
    """Strips, column groups and lanes far smaller than the defaults, so a small crop has
    many of each (the hand-over of rows between strips and lanes is what is under test).
    Yields the number of strips that started from rows handed over by their predecessor."""
    monkeypatch.setattr(strips, "STRIP_ROWS", 40)
    monkeypatch.setattr(strips, "GROUP_COLS", 100)
    monkeypatch.setattr(strips, "LANE_STRIPS", 3)
    monkeypatch.setattr(strips, "cores", lambda: 1)
    carried = [0]
    strip = strips._strip

    def counting(job, st, carry, write):
        carried[0] += carry is not None
        return strip(job, st, carry, write)

    monkeypatch.setattr(strips, "_strip", counting)
    return carried


@pytest.mark.parametrize(
    "crop, tile_size, overlap",
    [
        ("naip_rgbn_uint8.tif", 32, 8),
        ("atlanta_pan_uint16.tif", 48, 16),
        ("vegas_mul8_uint8.tif", 32, 0),
    ],
)
def test_one_pass_store_equals_per_window_reads(
    data_dir, tmp_path, small_strips, crop, tile_size, overlap
):
    src = data_dir / "crops" / crop
    store = writer.tile(src, tmp_path / "s.zarr", tile_size=tile_size, overlap=overlap)
    assert_store_equals(store, reference_store(src, tile_size, overlap))
    assert small_strips[0] > 0


def test_lanes_strips_and_column_groups(make_raster, tmp_path, small_strips):
    rng = np.random.default_rng(1)
    data = rng.integers(0, 65535, (2, 330, 260), dtype=np.uint16)
    src = make_raster("tiled.tif", data, tiled=True)  # 64-row blocks: 6 strips, 2 lanes
    store = writer.tile(src, tmp_path / "s.zarr", tile_size=64, overlap=16)
    assert_store_equals(store, reference_store(src, 64, 16))
    assert small_strips[0] >= 3


def test_striped_file_nodata_and_min_valid(make_raster, tmp_path, small_strips):
    rng = np.random.default_rng(0)
    data = rng.integers(1, 250, (3, 150, 170), dtype=np.uint8)
    data[:, :60, :90] = 0  # a nodata corner: several tiles below --min-valid
    data[1, 100:110, 100:110] = 0  # 0 in one band only stays valid (all-band nodata)
    src = make_raster("striped.tif", data, nodata=0)  # untiled: blocks of a few rows
    with rasterio.open(src) as ds:
        assert ds.block_shapes[0][0] < 40
    store = writer.tile(src, tmp_path / "s.zarr", tile_size=32, overlap=8, min_valid=0.5)
    ref = reference_store(src, 32, 8, min_valid=0.5)
    assert len(ref["image"]) < len(tile_windows(150, 170, 32, 8))
    assert_store_equals(store, ref)


def test_raster_smaller_than_a_tile_is_padded(make_raster, tmp_path, small_strips):
    data = np.arange(3 * 20 * 27, dtype=np.uint16).reshape(3, 20, 27)
    src = make_raster("small.tif", data)
    store = writer.tile(src, tmp_path / "s.zarr", tile_size=64, overlap=8)
    assert store.n_tiles == 1
    assert_store_equals(store, reference_store(src, 64, 8))


def test_direct_chunk_files_read_back_as_zarr_writes_them(data_dir, tmp_path):
    """Local stores get their chunk files written directly; a memory:// store goes through
    zarr's own __setitem__: both decode to the same arrays."""
    src = data_dir / "crops" / "naip_rgbn_uint8.tif"
    local = writer.tile(src, tmp_path / "s.zarr", tile_size=64, overlap=8)
    url = f"memory://geoseg-{uuid.uuid4().hex}/s.zarr"
    remote = writer.tile(src, url, tile_size=64, overlap=8)
    for name in ("image", "valid", "origin"):
        np.testing.assert_array_equal(local.group[name][:], open_store(url).group[name][:])
    assert local.stats.keys() == remote.stats.keys()
    assert all(np.array_equal(local.stats[k], remote.stats[k]) for k in local.stats)


# --- predict ---------------------------------------------------------------------------------


def test_predict_computes_each_tile_once_and_equals_per_block_computation(
    tmp_path, make_raster, monkeypatch
):
    """Tiles shared by several blocks are computed once and handed to each: the maps equal
    those of blocks that each compute every tile they touch (the old way), bit for bit."""
    import torch
    from make_fixtures import synthetic_scene
    from test_predict import tiny_checkpoint

    import geoseg.predict.raster as raster

    image, _ = synthetic_scene(150, 190, seed=3)
    image[:, :40, :50] = 0  # a nodata corner: its tiles are skipped, shared or not
    scene = make_raster("scene.tif", image, nodata=0)
    ckpt = tiny_checkpoint(tmp_path / "m.pt")
    seen = []
    make_segment = raster.segmenter

    def counting(*args, **kwargs):
        segment = make_segment(*args, **kwargs)

        def run(x):
            seen.append(len(x))
            return segment(x)

        return run

    monkeypatch.setattr(raster, "segmenter", counting)
    # One tile per forward pass: torch may sum a convolution in another order for another
    # batch size, which would flip float ties whichever way tiles are grouped; with one tile
    # per pass the model gives each tile the same bits in both runs, so any difference left
    # would be the blending's.
    torch.set_num_threads(1)
    kw = dict(tile_size=32, overlap=8, block_size=48, batch_size=1, probabilities=True)
    once = raster.predict(scene, ckpt, tmp_path / "once", **kw)
    grid_tiles = len(tile_windows(150, 190, 32, 8))
    assert sum(seen) < grid_tiles  # every tile at most once (nodata tiles skipped)
    seen.clear()
    monkeypatch.setattr(raster, "shared_tiles", lambda blocks, tile: ({}, [[] for _ in blocks]))
    every = raster.predict(scene, ckpt, tmp_path / "every", **kw)
    assert sum(seen) > grid_tiles  # the old way recomputes the tiles on block borders
    for role in ("clusters", "probabilities"):
        with rasterio.open(once[role]) as a, rasterio.open(every[role]) as b:
            np.testing.assert_array_equal(a.read(), b.read())
            for f in a.overviews(1):
                shape = (a.count, a.height // f, a.width // f)
                np.testing.assert_array_equal(a.read(out_shape=shape), b.read(out_shape=shape))


# --- vectorize -------------------------------------------------------------------------------


def test_raster_space_links_equal_the_geometric_search(make_raster):
    """Border pieces joined through 4-adjacent pixels across block borders (raster space)
    form the same components as the geometric search they replace: pieces of one value
    whose boundaries share a stretch of positive length (STRtree + DE-9IM), never a corner."""
    import shapely
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    import geoseg.vector.borders as borders
    import geoseg.vector.vectorize as vz

    rng = np.random.default_rng(5)
    data = rng.integers(0, 3, (97, 131), dtype=np.uint8)
    data[rng.random(data.shape) < 0.05] = 255  # nodata speckle
    raster = make_raster("classes.tif", data[None], nodata=255)
    opts = vz._options(raster, None, None, 0.0, 0.0, False, False)
    size = 20
    windows = [
        Window(c, r, min(size, 131 - c), min(size, 97 - r))
        for r in range(0, 97, size)
        for c in range(0, 131, size)
    ]
    results = [vz._block(opts, w) for w in windows]
    pieces = borders.Pieces.concat([edge for _, edge, _ in results])
    links = borders.links(
        windows, [e for _, _, e in results], [len(p.geoms) for _, p, _ in results]
    )
    same = pieces.values[links[:, 0]] == pieces.values[links[:, 1]]
    left, right = shapely.STRtree(pieces.geoms).query(pieces.geoms, predicate="touches")
    pair = (left < right) & (pieces.values[left] == pieces.values[right])
    left, right = left[pair], right[pair]
    edge = shapely.relate_pattern(pieces.geoms[left], pieces.geoms[right], "****1****")
    n = len(pieces.geoms)

    def components(a, b):
        graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n))
        return connected_components(graph, directed=False)[1]

    raster_space = components(links[same, 0], links[same, 1])
    geometric = components(left[edge], right[edge])
    assert n > 100 and same.sum() > 50
    np.testing.assert_array_equal(raster_space, geometric)


def test_shards_complete_band_by_band(make_raster, tmp_path, small_strips, monkeypatch):
    """Memory of a wide scene: a shard holds consecutive row-major tiles, so its tiles come
    from every column group; lanes that ran one group at a time kept nearly every shard
    waiting in memory for the last group (275 MiB of encoded tiles at 8192²). A lane now
    finishes every group of a band of rows before the next band, so only the shards of the
    band in progress wait."""
    import geoseg.tiles.chunks as chunks

    rng = np.random.default_rng(2)
    data = rng.integers(0, 65535, (2, 650, 260), dtype=np.uint16)
    src = make_raster("tiled.tif", data, tiled=True)
    monkeypatch.setattr(chunks, "SHARD_BYTES", 3 * 2 * 64 * 64 * 2)  # 3 tiles per shard
    waiting = []
    add = chunks.ShardAssembler.add

    def counting(self, shard, tiles, count):
        written = add(self, shard, tiles, count)
        waiting.append(len(self.pending))
        return written

    monkeypatch.setattr(chunks.ShardAssembler, "add", counting)
    store = writer.tile(src, tmp_path / "s.zarr", tile_size=64, overlap=16)
    assert_store_equals(store, reference_store(src, 64, 16))
    lanes = strips.plan(0, 650, 260, 64, 16, block_rows=64, first_index=0, lanes_min=1)
    n_groups = len({st.read_cols for lane in lanes for st in lane})
    widths = {len(st.cols) for lane in lanes for st in lane}
    assert n_groups > 1 and max(widths) - min(widths) <= 1  # groups of even width
    n_shards = -(-len(store.origin) // 3)
    # a band of rows (at most two tile rows of 6 tiles here) spans at most 5 shards
    assert 0 < max(waiting) <= 5 < n_shards
