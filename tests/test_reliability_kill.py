"""Kill and rerun (issue 10, part 7): SIGKILL a real `geoseg tile` / `predict` / `train` at a
random moment, rerun the same command, and compare with an uninterrupted run.

The kill moment is drawn from a seeded generator (the seed is in the test id, so a failure
can be replayed). One point per command runs in the default suite; ``-m slow`` tries more.
"""

from __future__ import annotations

import random
import signal
import time

import numpy as np
import pytest
import torch
from reliability_util import geoseg, read, spawn, tiny_training, train_kmeans, write_raster

FAST_SEEDS = [0]
SLOW_SEEDS = [1, 2, 3, 4, 5]


def _seeds():
    return [pytest.param(s, id=f"seed{s}") for s in FAST_SEEDS] + [
        pytest.param(s, id=f"seed{s}", marks=pytest.mark.slow) for s in SLOW_SEEDS
    ]


def _kill_at_random(args, seed: int, span: float) -> str:
    """Run ``geoseg ARGS`` and SIGKILL it after a random delay in [0.3, span] s."""
    delay = random.Random(seed).uniform(0.3, span)
    proc = spawn(*args)
    start = time.monotonic()
    while proc.poll() is None and time.monotonic() - start < delay:
        time.sleep(0.01)
    finished = proc.poll() is not None
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    return f"killed after {delay:.2f} s" + (" (had already finished)" if finished else "")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 255, (4, 768, 768), dtype=np.uint8)
    return write_raster(tmp_path_factory.mktemp("kill") / "scene.tif", data)


@pytest.mark.parametrize("seed", _seeds())
def test_tile_killed_then_rerun_equals_an_uninterrupted_run(scene, tmp_path, seed):
    args = ("tile", scene, "--tile-size", 32, "--overlap", 8, "--scheduler", "sync")
    ref, out = tmp_path / "ref.zarr", tmp_path / "s.zarr"
    assert geoseg(*args, "-o", ref).code == 0
    note = _kill_at_random(("-q", *args, "-o", out), seed, 4.0)
    r = geoseg(*args, "-o", out)
    assert r.code in (0, 2), r.err
    if r.code == 2:  # the killed run had finished: its store exists
        assert "already exists" in r.err, (note, r.err)
    from geoseg.tiles.store import open_store

    a, b = open_store(ref), open_store(out)
    for name in ("image", "valid", "origin"):
        np.testing.assert_array_equal(a.group[name][:], b.group[name][:], err_msg=note)
    assert a.attrs["stats"] == b.attrs["stats"]
    assert not [p for p in tmp_path.glob(".*")], note


@pytest.fixture(scope="module")
def model(fixtures, tmp_path_factory):
    return train_kmeans([fixtures["rgbn"]], tmp_path_factory.mktemp("kmodel"))


@pytest.mark.parametrize("seed", _seeds())
def test_predict_killed_then_rerun_equals_an_uninterrupted_run(scene, model, tmp_path, seed):
    args = ("predict", scene, "-m", model, "--block-size", 256, "--overwrite")
    assert geoseg(*args, "-o", tmp_path / "ref").code == 0
    note = _kill_at_random(("-q", *args, "-o", tmp_path / "out"), seed, 8.0)
    r = geoseg(*args, "-o", tmp_path / "out")
    assert r.code == 0, (note, r.err)
    np.testing.assert_array_equal(
        read(tmp_path / "ref" / "scene_clusters.tif"),
        read(tmp_path / "out" / "scene_clusters.tif"),
        err_msg=note,
    )
    assert not list((tmp_path / "out").glob(".*")), note


TINY = tiny_training(schedule__steps=8, schedule__eval_every=4, schedule__checkpoint_every=2)


@pytest.fixture(scope="module")
def store(fixtures, tmp_path_factory):
    out = tmp_path_factory.mktemp("kstore") / "s.zarr"
    assert geoseg("tile", fixtures["rgbn"], "-o", out, "--tile-size", 64).code == 0
    return out


@pytest.mark.parametrize("seed", _seeds())
def test_train_killed_then_resumed_equals_an_uninterrupted_run(store, tmp_path, seed):
    sets = [a for kv in TINY for a in ("--set", kv)]
    ref, run = tmp_path / "ref", tmp_path / "run"
    r = geoseg("train", store, "-o", ref, *sets)
    assert r.code == 0, r.err
    note = _kill_at_random(("-q", "train", store, "-o", run, *sets), seed, 10.0)
    if (run / "last.pt").exists():
        r = geoseg("train", store, "-o", run, "--resume")
    else:
        r = geoseg("train", store, "-o", run, *sets, "--overwrite")
    assert r.code == 0, (note, r.err)
    a = torch.load(ref / "last.pt", weights_only=True)
    b = torch.load(run / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 8
    for k, v in a["model_state"].items():
        assert torch.equal(v, b["model_state"][k]), (note, k)
    assert not [p for p in tmp_path.glob(".*")], note
