"""Errors name the file and the fix (issue 10, part 6): damaged inputs, data problems that
surfaced as internal exceptions, a full disk, and concurrent writers.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest
from reliability_util import (
    CROPS,
    assert_refused,
    geoseg,
    spawn,
    train_kmeans,
    wait_for,
    write_raster,
)


@pytest.fixture(scope="module")
def truncated(tmp_path_factory) -> Path:
    """A real crop (SpaceNet Vegas WV-3) cut to 60 % of its bytes, as an interrupted copy."""
    data = (CROPS / "vegas_mul8_uint8.tif").read_bytes()
    path = tmp_path_factory.mktemp("trunc") / "vegas_cut.tif"
    path.write_bytes(data[: len(data) * 6 // 10])
    return path


@pytest.fixture(scope="module")
def model8(tmp_path_factory):
    return train_kmeans(
        [CROPS / "vegas_mul8_uint8.tif"], tmp_path_factory.mktemp("m8"), tile_size=32
    )


def test_info_on_a_truncated_geotiff_names_the_file(truncated):
    """Today: garbage statistics (min > max, negative std) and exit 0."""
    assert_refused(geoseg("info", truncated), "vegas_cut.tif")


def test_tile_on_a_truncated_geotiff_names_the_file(truncated, tmp_path):
    """Today: "RasterioIOError: Read failed. See previous exception", exit 1."""
    r = geoseg("tile", truncated, "-o", tmp_path / "s.zarr", "--tile-size", 32)
    assert_refused(r, "vegas_cut.tif")
    assert not list(tmp_path.iterdir())


def test_predict_on_a_truncated_geotiff_names_the_file(truncated, model8, tmp_path):
    r = geoseg("predict", truncated, "-m", model8, "-o", tmp_path / "out")
    assert_refused(r, "vegas_cut.tif")
    assert not [p for p in (tmp_path / "out").glob("*")] if (tmp_path / "out").exists() else True


def test_a_store_missing_an_array_names_the_store(fixtures, tmp_path):
    """A store whose ``valid`` array is gone (a bad copy): today KeyError: 'valid', exit 1."""
    store = tmp_path / "s.zarr"
    assert geoseg("tile", fixtures["rgbn"], "-o", store, "--tile-size", 64).code == 0
    shutil.rmtree(store / "valid")
    for args in (("info", store), ("train", store, "-o", tmp_path / "run", "--method", "kmeans")):
        assert_refused(geoseg(*args), "s.zarr", "valid")


@pytest.mark.parametrize("damage", ["cut", "flipped"])
def test_a_store_with_a_damaged_chunk_names_the_store(fixtures, tmp_path, damage):
    """A chunk (shard) file cut in half (a partial copy): today "RuntimeError: error during
    blosc decompression", exit 1. Or one byte inside a tile changed (a bad disk): the tile's
    checksum names it (LZ4 alone would decode garbage)."""
    store = tmp_path / "cut.zarr"
    assert geoseg("tile", fixtures["rgbn"], "-o", store, "--tile-size", 64).code == 0
    chunks = sorted(p for p in (store / "image").rglob("c*") if p.is_file())
    for chunk in chunks:
        data = bytearray(chunk.read_bytes())
        if damage == "cut":
            chunk.write_bytes(data[: len(data) // 2])
        else:  # the middle of the first tile: past Blosc's header, before the index
            data[len(data) // 8] ^= 0xFF
            chunk.write_bytes(bytes(data))
    r = geoseg("train", store, "-o", tmp_path / "run", "--method", "kmeans")
    assert_refused(r, "cut.zarr", "damaged")


def test_a_one_pixel_raster_in_kmeans_says_what_to_do(tmp_path):
    """Today: scikit-learn's "n_samples=1 should be >= n_clusters=6", exit 1."""
    one = write_raster(tmp_path / "one.tif", np.full((3, 1, 1), 7, np.uint8))
    store = tmp_path / "one.zarr"
    assert geoseg("tile", one, "-o", store, "--tile-size", 16).code == 0
    r = geoseg("train", store, "-o", tmp_path / "run", "--method", "kmeans")
    assert_refused(r, "one.zarr", "n_clusters")


def test_invalid_geometry_is_a_user_error_naming_the_file(fixtures, tmp_path):
    """A hand-edited label polygon whose ring is not closed: GEOS cannot build it. Today:
    "GEOSException: IllegalArgumentException: Points of LinearRing do not form a closed
    linestring", exit 1; now exit 2 naming the file.
    """
    bad = tmp_path / "bad_ring.geojson"
    bad.write_text(
        '{"type":"FeatureCollection","crs":{"type":"name","properties":{"name":'
        '"urn:ogc:def:crs:EPSG::32611"}},"features":[{"type":"Feature","properties":{},'
        '"geometry":{"type":"Polygon","coordinates":[[[500001,3999990],[500010,3999990],'
        "[500011,3999980]]]}}]}"
    )
    r = geoseg(
        "tile", fixtures["rgbn"], "-o", tmp_path / "s.zarr", "--tile-size", 64, "--labels", bad
    )
    assert_refused(r, "bad_ring.geojson")
    assert not (tmp_path / "s.zarr").exists()


# --- a full disk: a real (tiny) tmpfs --------------------------------------------------------


@pytest.fixture
def full_disk(tmp_path):
    """A 1 MiB tmpfs mounted for the test (needs root; skipped elsewhere), almost filled."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True
    )
    if done.returncode:
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(mnt: Path, leave: int) -> None:
    """Fill ``mnt`` to ``leave`` bytes free with a real file."""
    filler = mnt / f"filler-{uuid.uuid4().hex[:6]}"
    free = shutil.disk_usage(mnt).free
    filler.write_bytes(b"\0" * max(0, free - leave))


def test_train_on_a_full_disk_says_no_space_left_on_the_path(fixtures, tmp_path, full_disk):
    """Today: "enforce fail at inline_container.cc" from torch.save, exit 1."""
    store = tmp_path / "s.zarr"
    assert geoseg("tile", fixtures["rgbn"], "-o", store, "--tile-size", 64).code == 0
    _fill(full_disk, 4096)
    r = geoseg("train", store, "-o", full_disk / "run", "--method", "kmeans")
    assert_refused(r, "no space left on", str(full_disk), code=1)


def test_predict_on_a_full_disk_says_no_space_left_on_the_path(fixtures, tmp_path, full_disk):
    model = train_kmeans([fixtures["rgbn"]], tmp_path)
    _fill(full_disk, 4096)
    r = geoseg("predict", fixtures["rgbn"], "-m", model, "-o", full_disk / "out")
    assert_refused(r, "no space left on", str(full_disk), code=1)
    assert not [p for p in (full_disk / "out").glob(".*")]


def test_tile_on_a_full_disk_says_no_space_left_on_the_path(fixtures, full_disk):
    _fill(full_disk, 16384)
    r = geoseg("tile", fixtures["rgbn"], "-o", full_disk / "s.zarr", "--tile-size", 32)
    assert_refused(r, "no space left on", str(full_disk), code=1)


def test_a_read_only_output_folder_is_named(fixtures, tmp_path):
    """A real read-only filesystem (tmpfs mounted ro; needs root): exit 2 naming the output.
    Today: "OSError: [Errno 30] Read-only file system ...", exit 1."""
    mnt = tmp_path / "ro"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mnt)], capture_output=True
    )
    if done.returncode:
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        model = train_kmeans([fixtures["rgbn"]], tmp_path / "m")
        r = geoseg("predict", fixtures["rgbn"], "-m", model, "-o", mnt)
        assert_refused(r, str(mnt), "cannot write")
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


# --- concurrent writers ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_scene(tmp_path_factory) -> Path:
    """2048² RGBN uint8 noise: a few seconds of tiling into 16 px tiles, long enough to race
    (1536² in 32 px tiles took ~1 s of CPU once tiles were written in shards, issue 11: the
    first writer could finish before the second had started)."""
    rng = np.random.default_rng(0)
    data = rng.integers(0, 255, (4, 2048, 2048), dtype=np.uint8)
    return write_raster(tmp_path_factory.mktemp("big") / "big.tif", data)


def test_a_second_tile_writer_meets_the_lock(big_scene, tmp_path):
    """Two `geoseg tile` on one store: the second stops at once, exit 2, naming the store;
    the first finishes a complete store. Today: the loser crashes with KeyError or leaves
    half-written chunks.
    """
    store = tmp_path / "s.zarr"
    args = (
        "-q",
        "tile",
        big_scene,
        "-o",
        store,
        "--tile-size",
        16,
        "--overlap",
        0,
        "--scheduler",
        "sync",
    )
    first = spawn(*args)
    try:
        assert wait_for(lambda: (tmp_path / ".s.zarr.partial" / "zarr.json").exists(), 60)
        second = spawn(*args)
        _, err = second.communicate(timeout=60)
        assert second.returncode == 2, err
        lines = [x for x in err.splitlines() if x.strip()]
        assert len(lines) == 1 and "s.zarr" in lines[0] and "another" in lines[0], err
        assert first.poll() is None, "the first writer should still be running"
        _, err1 = first.communicate(timeout=120)
        assert first.returncode == 0, err1
    finally:
        first.kill()
    r = geoseg("info", store)
    assert r.code == 0, r.err
