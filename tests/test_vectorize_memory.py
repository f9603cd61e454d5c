"""vectorize's memory follows the block, not the scene (issue 11): pieces cut by block borders
are joined as soon as every block they touch is done, and the joined polygons wait in a
temporary file rather than in memory, so a scene eight times taller does not hold eight times
the border pieces. Measured with tracemalloc (numpy arrays, WKB and Python objects; GEOS's own
allocations are not seen, and those follow the same pieces)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import shapely

import geoseg.vector.borders as borders
from geoseg.vector.vectorize import vectorize, vectorize_to_file


def blobs(rows: int, cols: int = 256) -> np.ndarray:
    """Ragged blobs about a 64 px block across, on a lattice: most cross a block border, none
    spans the scene (class 1; class 0 around them is one region, so it is not polygonised)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:rows, :cols]
    field = np.sin(xx / 10.0) * np.sin(yy / 8.0) + 0.4 * rng.random((rows, cols))
    return (field > 0.5).astype(np.uint8)


def traced_peak(raster, output) -> tuple[int, int]:
    """(tracemalloc peak in bytes, polygons written) of one streamed run."""
    tracemalloc.start()
    try:
        count = vectorize_to_file(
            raster, output, classes=[1], block_size=64, scheduler="sync", overwrite=True
        )
        return tracemalloc.get_traced_memory()[1], count
    finally:
        tracemalloc.stop()


def test_peak_memory_follows_the_block_rows_not_the_scene(make_raster, tmp_path, monkeypatch):
    # joined polygons go to the writer 64 KiB at a time, as the default 8 MiB does on a scene
    monkeypatch.setattr(borders, "JOINED_BATCH_BYTES", 1 << 16)
    warm = make_raster("warm.tif", blobs(64)[None], nodata=255)
    traced_peak(warm, tmp_path / "warm.gpkg")  # imports and first-call caches out of the way
    short = make_raster("short.tif", blobs(256)[None], nodata=255)
    tall = make_raster("tall.tif", blobs(2048)[None], nodata=255)
    short_peak, short_count = traced_peak(short, tmp_path / "short.gpkg")
    tall_peak, tall_count = traced_peak(tall, tmp_path / "tall.gpkg")
    assert tall_count > 7 * short_count > 4000
    # 8x the rows: measured 2.7x the peak (per-block bookkeeping of a few hundred bytes);
    # all border pieces joined at the end, as before, was 8.1x
    assert tall_peak < 4 * short_peak, (short_peak, tall_peak)


def test_joined_polygons_in_small_batches_are_the_same_rows(make_raster, monkeypatch):
    """Polygons read back from the temporary file a few at a time, in the order of the join
    of all blocks at once, whatever the batch size."""
    data = blobs(300, 200)
    data[np.random.default_rng(1).random(data.shape) < 0.02] = 2  # a second class, speckled
    raster = make_raster("classes.tif", data[None], nodata=255)
    whole = vectorize(raster, block_size=4096)
    parts = vectorize(raster, block_size=37)
    monkeypatch.setattr(borders, "JOINED_BATCH_BYTES", 1000)
    small = vectorize(raster, block_size=37)
    assert len(parts) == len(small) == len(whole) > 100
    np.testing.assert_array_equal(
        shapely.to_wkb(small.geometry.values.to_numpy()),
        shapely.to_wkb(parts.geometry.values.to_numpy()),
    )
    for column in ("cluster", "area_m2", "score"):
        np.testing.assert_array_equal(small[column], parts[column])
    assert rows(parts) == rows(whole)


def rows(gdf) -> list:
    """(class value, normalised WKB) of every polygon, sorted: the layer without its order."""
    wkb = shapely.to_wkb(shapely.normalize(gdf.geometry.values.to_numpy()))
    return sorted(zip(gdf.cluster.tolist(), wkb, strict=True))


@pytest.mark.parametrize("block", [5, 16])
def test_a_region_spanning_every_block_is_joined_once(make_raster, block):
    """A comb of one value touching every block closes only with the last block: its pieces
    wait until then and it comes out as one polygon, equal to the whole-raster one."""
    data = np.zeros((40, 45), np.uint8)
    data[::4, :] = 1
    data[:, ::6] = 1
    raster = make_raster("comb.tif", data[None], nodata=255)
    whole = vectorize(raster, classes=[1], block_size=4096)
    parts = vectorize(raster, classes=[1], block_size=block)
    assert len(parts) == len(whole) == 1
    assert shapely.normalize(parts.geometry.iloc[0]).equals_exact(
        shapely.normalize(whole.geometry.iloc[0]), 0
    )
