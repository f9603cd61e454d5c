"""Resume fingerprints its inputs (issue 10, part 5): an interrupted store is finished only
from the very inputs it was started with.
"""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from reliability_util import assert_refused, geoseg, read, spawn, wait_for, write_raster


def _interrupted_tile(scene, store):
    """Start `geoseg tile` in a real process and SIGKILL it after its first written batch."""
    proc = spawn(
        "-q", "tile", scene, "-o", store, "--tile-size", 32, "--overlap", 0, "--scheduler", "sync"
    )
    partial = store.with_name(f".{store.name}.partial")
    ok = wait_for(lambda: (partial / "done" / "c").exists() or proc.poll() is not None, 60)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert ok and partial.exists() and not store.exists(), "the run finished before the kill"
    return partial


@pytest.fixture
def scene(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 255, (4, 1024, 1024), dtype=np.uint8)
    return write_raster(tmp_path / "scene.tif", data)


def test_a_changed_input_refuses_to_resume(scene, tmp_path):
    """Re-exported under the same name, same size, same mtime, other pixels: refused.

    Today: the rerun writes the remaining batches from the new pixels next to the old ones.
    """
    store = tmp_path / "s.zarr"
    _interrupted_tile(scene, store)
    stat = scene.stat()
    data = read(scene)
    write_raster(scene, (255 - data).astype(np.uint8))
    os.utime(scene, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert scene.stat().st_size == stat.st_size
    r = geoseg("tile", scene, "-o", store, "--tile-size", 32, "--overlap", 0)
    assert_refused(r, "input changed since the store was started", "--overwrite", "scene.tif")
    r = geoseg("tile", scene, "-o", store, "--tile-size", 32, "--overlap", 0, "--overwrite")
    assert r.code == 0, r.err


def test_an_unchanged_input_resumes(scene, tmp_path):
    store = tmp_path / "s.zarr"
    _interrupted_tile(scene, store)
    r = geoseg("tile", scene, "-o", store, "--tile-size", 32, "--overlap", 0)
    assert r.code == 0, r.err


def test_fingerprint_sees_size_mtime_and_pixels(scene, tmp_path):
    """The fingerprint function itself: stable for the same file; other pixels under the same
    size and mtime change its hash; a new mtime alone changes it too.
    """
    from geoseg.io.fingerprint import fingerprint

    a = fingerprint(scene)
    assert a == fingerprint(scene)
    assert a["path"] == str(scene.resolve())
    stat = scene.stat()
    write_raster(scene, (read(scene) // 2).astype(np.uint8))
    os.utime(scene, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    b = fingerprint(scene)
    assert (a["size"], a["mtime_ns"]) == (b["size"], b["mtime_ns"])
    assert a["hash"] != b["hash"]
    os.utime(scene, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    c = fingerprint(scene)
    assert c["hash"] == b["hash"] and c != b


def test_train_resume_on_a_changed_store_is_refused(fixtures, tmp_path):
    """The store re-tiled from other pixels under the same path: --resume would mix them."""
    store, run = tmp_path / "s.zarr", tmp_path / "run"
    assert geoseg("tile", fixtures["rgbn"], "-o", store, "--tile-size", 64).code == 0
    keys = (
        "model.width=0.125",
        "data.crop_size=32",
        "schedule.steps=2",
        "schedule.eval_batches=1",
        "n_over_clusters=0",
    )
    sets = [a for kv in keys for a in ("--set", kv)]
    assert geoseg("train", store, "-o", run, *sets).code == 0
    other = write_raster(tmp_path / "other.tif", (read(fixtures["rgbn"]) // 2).astype(np.uint8))
    assert geoseg("tile", other, "-o", store, "--tile-size", 64, "--overwrite").code == 0
    r = geoseg("train", store, "-o", run, "--resume", "--set", "schedule.steps=4")
    assert_refused(r, "changed since the run was started", "--overwrite")
