"""Interruptions (issue 10, part 6): Ctrl-C exits 130 with one line, SIGTERM cleans up too,
and partial files of a killed run are removed by the next run.

These tests need real processes and real signals, so they spawn ``python -m geoseg``.
"""

from __future__ import annotations

import signal

import numpy as np
import pytest
from reliability_util import geoseg, spawn, train_kmeans, wait_for, write_raster


@pytest.fixture(scope="module")
def scene_and_model(fixtures, tmp_path_factory):
    """A 2048² RGBN scene (several seconds of predict on 2 cores) and a k-means model."""
    work = tmp_path_factory.mktemp("sig")
    model = train_kmeans([fixtures["rgbn"]], work)
    rng = np.random.default_rng(0)
    data = rng.integers(0, 255, (4, 2048, 2048), dtype=np.uint8)
    return write_raster(work / "big.tif", data), model


def _stopped(proc) -> bool:
    """Whether the kernel has stopped ``proc`` (state T), so nothing of it runs any more."""
    try:
        with open(f"/proc/{proc.pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
    except FileNotFoundError:
        return False


def _freeze_midway(proc, midway) -> None:
    """Stop ``proc`` and make sure it stopped mid-way (``midway()`` still true, not exited).

    On a loaded machine a run seen half-done could finish between the check and the signal,
    and the test would then check nothing; freezing first (SIGSTOP) and checking again while
    frozen makes "the signal arrived mid-run" a fact instead of a likelihood.
    """
    proc.send_signal(signal.SIGSTOP)
    wait_for(lambda: _stopped(proc) or proc.poll() is not None, 10, every=0.005)
    if proc.poll() is not None or not midway():
        proc.kill()
        raise AssertionError(
            f"the run finished before it could be interrupted: {proc.communicate()}"
        )


def _interrupt(proc, sig, midway) -> None:
    """Deliver ``sig`` while the run is surely mid-way: freeze it, queue the signal, go on."""
    _freeze_midway(proc, midway)
    proc.send_signal(sig)
    proc.send_signal(signal.SIGCONT)


def _hidden(folder):
    return sorted(p.name for p in folder.glob(".*")) if folder.exists() else []


def _predict_until_partial(scene, model, out):
    proc = spawn("-q", "predict", scene, "-m", model, "-o", out, "--block-size", 256, "--overwrite")
    appeared = wait_for(lambda: bool(_hidden(out)) or proc.poll() is not None, 120)
    if not appeared or proc.poll() is not None:
        proc.kill()
        raise AssertionError(f"predict ended before writing anything: {proc.communicate()}")
    return proc


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_predict_exits_128_plus_signal_and_leaves_nothing(
    scene_and_model, tmp_path, sig, code
):
    """Today: Ctrl-C prints "Aborted." with exit 1 and the hidden stitch files stay forever."""
    scene, model = scene_and_model
    out = tmp_path / "out"
    proc = _predict_until_partial(scene, model, out)
    _interrupt(proc, sig, lambda: bool(_hidden(out)))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0].lower(), err
    assert _hidden(out) == []
    assert not list(out.glob("*.tif"))


def test_the_next_run_removes_what_a_killed_predict_left(scene_and_model, tmp_path):
    """SIGKILL cannot be caught: the partial files stay until the next predict removes them."""
    scene, model = scene_and_model
    out = tmp_path / "out"
    proc = _predict_until_partial(scene, model, out)
    _freeze_midway(proc, lambda: bool(_hidden(out)))
    proc.kill()
    proc.wait(timeout=30)
    left = _hidden(out)
    assert left, "a killed run leaves its partial files"
    small = write_raster(tmp_path / "big.tif", np.full((4, 64, 64), 9, np.uint8))
    r = geoseg("predict", small, "-m", model, "-o", out, "--overwrite")
    assert r.code == 0, r.err
    assert _hidden(out) == []


def test_ctrl_c_in_tile_exits_130_and_keeps_a_resumable_store(scene_and_model, tmp_path):
    """tile's partial store is its resume point: kept on Ctrl-C, finished by the rerun."""
    scene, _ = scene_and_model
    store = tmp_path / "s.zarr"
    args = (
        "-q",
        "tile",
        scene,
        "-o",
        store,
        "--tile-size",
        64,
        "--overlap",
        0,
        "--scheduler",
        "sync",
    )
    proc = spawn(*args)
    # the one-pass writer fills the store in a few large batches: interrupt it as soon as the
    # partial store exists, whatever it holds yet; the rerun resumes from there
    assert wait_for(lambda: (tmp_path / ".s.zarr.partial").exists(), 60)
    _interrupt(proc, signal.SIGINT, (tmp_path / ".s.zarr.partial").exists)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err.lower()
    rerun = spawn(*args)
    _, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    assert geoseg("info", store).code == 0
