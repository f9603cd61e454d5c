"""Training input: crops cut by data-loader workers are the crops of the training thread, the
stall figure is reported, torch threads leave the workers their cores, and a time budget stops
a run cleanly."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from reliability_util import tiny_training

from geoseg.train.data import CropSampler, loader_workers, step_batches, torch_threads
from geoseg.train.loop import train

TINY = tiny_training(n_over_clusters=8)


@pytest.fixture(scope="module")
def store(fixtures, tmp_path_factory):
    from geoseg.tiles.writer import tile

    out = tmp_path_factory.mktemp("loader") / "s.zarr"
    tile([fixtures["rgbn"]], out, tile_size=64, overlap=16, labels=fixtures["labels"])
    return out


def _sampler(store, **kw):
    from geoseg.tiles.store import open_store

    return CropSampler(open_store(store), crop_size=32, batch_size=3, min_valid=0.5, seed=7, **kw)


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if a[k] is None:
            assert b[k] is None, k
        else:
            assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def test_worker_batches_equal_the_training_thread_batches(store):
    """Steps 5..12 cut by two worker processes == cut here == cut with no tile cache."""
    here = list(step_batches(_sampler(store), 5, 13, workers=0))
    workers = list(step_batches(_sampler(store), 5, 13, workers=2, prefetch=2))
    uncached = [_sampler(store, cache_mb=0).batch(s) for s in range(5, 13)]
    assert len(here) == len(workers) == 8
    for a, b, c in zip(here, workers, uncached, strict=True):
        _same(a, b)
        _same(a, c)
    # a different step is a different batch (the test can fail)
    assert not torch.equal(here[0]["image"], here[1]["image"])


def test_workers_do_not_change_a_run_and_stall_is_reported(store, tmp_path):
    """The same run with the crops cut in this thread and by 2 workers (resumed half-way):
    identical weights; metrics.csv train rows carry data_stall and summary.json the figures."""
    common = TINY + ("schedule.steps=4", "schedule.eval_every=2", "schedule.checkpoint_every=2")
    a, b = tmp_path / "a", tmp_path / "b"
    train(store, a, overrides=common + ("data.workers=0",), device="cpu")
    train(store, b, overrides=common + ("data.workers=2", "schedule.steps=2"), device="cpu")
    train(store, b, overrides=("schedule.steps=4",), resume=True, device="cpu")
    wa = torch.load(a / "last.pt", weights_only=True)["model_state"]
    wb = torch.load(b / "last.pt", weights_only=True)["model_state"]
    for k, v in wa.items():
        assert torch.equal(v, wb[k]), k
    with (a / "metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "train"]
    assert len(rows) == 4 and all(0 <= float(r["data_stall"]) <= 1 for r in rows)
    summary = json.loads((b / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["workers"] == 2 and summary["crops"] == 4
    assert summary["stopped"] == "steps" and summary["device"] == "cpu"
    assert 0 <= summary["data_stall"] <= 1 and summary["steps_per_s"] > 0
    assert summary["wait_seconds"] <= summary["step_seconds"]


def test_time_budget_stops_after_the_first_step(store, tmp_path):
    run = tmp_path / "t"
    over = TINY + ("schedule.steps=50", "schedule.eval_every=50", "data.workers=0")
    train(store, run, overrides=over, device="cpu", max_seconds=1e-9)
    ckpt = torch.load(run / "last.pt", weights_only=True)
    assert ckpt["step"] == 1 and (run / "best.pt").is_file()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 1 and summary["stopped"] == "time"


def test_threads_leave_the_workers_their_cores(monkeypatch):
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(range(16)), raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert torch_threads(3) == 13 and torch_threads(20) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert torch_threads(3) == 4  # the user's (or test runner's) bound wins
    file_store = type("S", (), {"url": "/data/s.zarr"})()
    assert loader_workers(-1, cuda=True, store=file_store) == 8
    assert loader_workers(-1, cuda=False, store=file_store) == 1
    assert loader_workers(3, cuda=False, store=file_store) == 3
    # another process cannot open an in-memory store: its crops are cut here
    assert loader_workers(-1, cuda=True, store=type("S", (), {"url": "memory://x"})()) == 0
