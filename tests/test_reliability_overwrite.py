"""Overwrite is a swap (issue 10, part 3): the new run / store / outputs are written beside the
old ones and replace them only on success; an output equal to or inside an input, or a folder
geoseg did not create, is refused before anything is touched.
"""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest
from reliability_util import assert_refused, geoseg, read, write_raster


def _digest(folder):
    """Content hash of every file under ``folder`` (path + bytes)."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def store(fixtures, tmp_path_factory):
    out = tmp_path_factory.mktemp("ow") / "s.zarr"
    assert geoseg("tile", fixtures["rgbn"], "-o", out, "--tile-size", 64).code == 0
    return out


@pytest.fixture
def run(store, tmp_path):
    out = tmp_path / "run"
    r = geoseg("train", store, "-o", out, "--method", "kmeans", "--set", "n_clusters=3")
    assert r.code == 0, r.err
    return out


def test_train_output_equal_to_the_store_is_refused(store, tmp_path):
    """Today: ``-o STORE --overwrite`` deletes the store, then fails."""
    store = shutil.copytree(store, tmp_path / "copy.zarr")
    before = _digest(store)
    r = geoseg("train", store, "-o", store, "--method", "kmeans", "--overwrite")
    assert_refused(r, "--output", "input")
    assert _digest(store) == before


def test_train_output_inside_the_store_is_refused(store):
    r = geoseg("train", store, "-o", store / "run", "--method", "kmeans")
    assert_refused(r, "--output", "inside")
    assert not (store / "run").exists()


def test_failed_retrain_keeps_the_previous_run(store, run):
    """Today: --overwrite removes the old run first; a failing retrain leaves nothing."""
    before = _digest(run)
    r = geoseg(
        "train",
        store,
        "-o",
        run,
        "--overwrite",
        "--set",
        "model.width=0.125",
        "--set",
        "data.crop_size=48",
        "--set",
        "schedule.steps=20",
        "--set",
        "optim.lr=1e30",
        "--set",
        "schedule.eval_every=1",
        "--set",
        "schedule.eval_batches=1",
    )
    assert r.code == 1, r.err
    assert _digest(run) == before
    assert [p.name for p in run.parent.iterdir() if p.name.startswith(".")] == []


def test_successful_retrain_replaces_the_run_as_a_whole(store, run):
    """No file of the old run survives the swap (e.g. a stale quicklook or last.pt)."""
    stale = run / "quicklook" / "epoch_999.png"
    stale.parent.mkdir(exist_ok=True)
    stale.write_bytes(b"old")
    r = geoseg(
        "train", store, "-o", run, "--method", "kmeans", "--set", "n_clusters=5", "--overwrite"
    )
    assert r.code == 0, r.err
    assert not stale.exists()
    assert (run / "best.pt").is_file()


def test_overwrite_refuses_a_folder_geoseg_did_not_create(store, tmp_path):
    """Today: ``-o ~/Documents --overwrite`` wipes the folder."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "thesis.docx").write_bytes(b"precious")
    r = geoseg("train", store, "-o", folder, "--method", "kmeans", "--overwrite")
    assert_refused(r, "--output", "not created by geoseg")
    assert (folder / "thesis.docx").read_bytes() == b"precious"


def test_tile_overwrite_refuses_a_folder_that_is_not_a_store(fixtures, tmp_path):
    folder = tmp_path / "photos.zarr"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"x")
    r = geoseg("tile", fixtures["rgbn"], "-o", folder, "--tile-size", 64, "--overwrite")
    assert_refused(r, "--output", "not created by geoseg")
    assert (folder / "a.jpg").exists()


def test_tile_output_equal_to_an_input_is_refused(fixtures, tmp_path):
    src = write_raster(tmp_path / "scene.tif", read(fixtures["rgbn"]))
    before = src.read_bytes()
    r = geoseg("tile", src, "-o", src, "--tile-size", 64, "--overwrite")
    assert_refused(r, "--output", "input")
    assert src.read_bytes() == before


def test_tile_overwrite_keeps_the_old_store_when_the_new_one_fails(fixtures, store, tmp_path):
    """A retile that is refused midway (no tile passes --min-valid) leaves the old store."""
    copy = tmp_path / "copy.zarr"
    shutil.copytree(store, copy)
    before = _digest(copy)
    nod = write_raster(tmp_path / "empty.tif", np.zeros((4, 64, 64), np.uint8), nodata=0)
    r = geoseg("tile", nod, "-o", copy, "--tile-size", 64, "--overwrite", "--min-valid", "0.5")
    assert r.code == 2, r.err
    assert _digest(copy) == before


def test_predict_output_folder_equal_to_the_raster_folder_is_fine_but_the_raster_is_not(
    fixtures, run, tmp_path
):
    """-o pointing at the input raster itself is refused (it is a file, not a folder)."""
    src = write_raster(tmp_path / "scene.tif", read(fixtures["rgbn"]))
    before = src.read_bytes()
    r = geoseg("predict", src, "-m", run, "-o", src, "--overwrite")
    assert r.code == 2, r.err
    assert src.read_bytes() == before


def test_predict_overwrite_keeps_old_outputs_when_it_fails(fixtures, run, tmp_path):
    """A refused second predict (here: unknown class id) leaves the first outputs as they were."""
    src = write_raster(tmp_path / "scene.tif", read(fixtures["rgbn"]))
    out = tmp_path / "out"
    assert geoseg("predict", src, "-m", run, "-o", out).code == 0
    before = _digest(out)
    r = geoseg("predict", src, "-m", run, "-o", out, "--overwrite", "--class", "roof=99")
    assert r.code == 2
    assert _digest(out) == before
