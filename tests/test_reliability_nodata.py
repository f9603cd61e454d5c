"""NaN and nodata (issue 10, part 2): a pixel with NaN in any band is invalid; no NaN reaches
a batch, a loss or an output pixel; a non-finite loss stops training loudly.

The float32 rasters are the RGBN fixture in reflectance units (÷ 255) with NaN put in ONE band
of a few pixels, as float products carry (a saturated or dropped band, not a scene collar).
"""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from reliability_util import assert_refused, geoseg, read, tiny_training, train_kmeans, write_raster
from scipy import ndimage

#: a tiny, fast IIC run (as tests/test_train.py)
TINY = tiny_training(data__crop_size=48)


def _nan_pixels(shape, n=40, seed=0):
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, shape[1], n)
    cols = rng.integers(0, shape[2], n)
    bands = rng.integers(0, shape[0], n)
    return bands, rows, cols


@pytest.fixture(scope="module")
def reflectance(fixtures):
    """(clean float32 image, the same with NaN in one band of 40 pixels)."""
    clean = read(fixtures["rgbn"]).astype(np.float32) / 255.0
    dirty = clean.copy()
    b, r, c = _nan_pixels(clean.shape)
    dirty[b, r, c] = np.nan
    return clean, dirty


@pytest.mark.parametrize("declared", [True, False], ids=["nodata=nan", "no-nodata"])
def test_nan_in_one_band_never_reaches_a_batch_or_the_loss(reflectance, tmp_path, declared):
    """Today: all-band nodata semantics keep single-band NaN pixels valid, the loss is NaN by
    the first steps, best.pt is never written, yet train exits 0 printing its path.
    """
    _, dirty = reflectance
    path = write_raster(tmp_path / "nan.tif", dirty, nodata=float("nan") if declared else None)
    store = tmp_path / "s.zarr"
    r = geoseg("tile", path, "-o", store, "--tile-size", 64, "--overlap", 16)
    assert r.code == 0, r.err
    from geoseg.tiles.store import open_store

    s = open_store(store)
    image, valid = s.image[:], s.valid[:]
    assert not np.isnan(image[np.broadcast_to(valid[:, None], image.shape)]).any()
    assert all(np.isfinite(s.stats[k]).all() for k in ("mean", "std", "p2", "p98"))
    run = tmp_path / "run"
    r = geoseg(
        "train",
        store,
        "-o",
        run,
        *[a for kv in TINY for a in ("--set", kv)],
        "--set",
        "schedule.steps=6",
        "--set",
        "schedule.eval_every=3",
    )
    assert r.code == 0, r.err
    assert (run / "best.pt").is_file()
    with (run / "metrics.csv").open() as f:
        losses = [float(row["loss"]) for row in csv.DictReader(f)]
    assert losses and all(math.isfinite(v) for v in losses)


def test_predict_writes_nodata_wherever_a_band_is_nan(reflectance, tmp_path):
    """40 single-band NaN pixels → exactly 40 nodata pixels; the rest as on the clean raster.

    Today: NaN spreads through the normalisation into the model and those pixels (and their
    neighbours under a conv net) are written as cluster 0.
    """
    clean, dirty = reflectance
    clean_path = write_raster(tmp_path / "clean.tif", clean)
    dirty_path = write_raster(tmp_path / "dirty.tif", dirty, nodata=float("nan"))
    model = train_kmeans([clean_path], tmp_path / "km")
    for path in (clean_path, dirty_path):
        r = geoseg("predict", path, "-m", model, "-o", tmp_path / "out")
        assert r.code == 0, r.err
    a = read(tmp_path / "out" / "clean_clusters.tif")[0]
    b = read(tmp_path / "out" / "dirty_clusters.tif")[0]
    bad = np.isnan(dirty).any(axis=0)
    assert (b == 255).sum() == bad.sum()
    assert (b[bad] == 255).all()
    far = ~ndimage.binary_dilation(bad, iterations=3)
    np.testing.assert_array_equal(a[far], b[far])


def test_non_finite_loss_stops_training_with_exit_1_and_keeps_good_checkpoints(fixtures, tmp_path):
    """A learning rate that blows up the weights: exit 1, one line saying so; any checkpoint
    left behind holds finite weights, and no best.pt path is printed that does not exist.

    Today: the loss turns NaN, training runs on, exit 0, and best.pt (printed) is missing.
    """
    store = tmp_path / "s.zarr"
    assert geoseg("tile", fixtures["rgbn"], "-o", store, "--tile-size", 64).code == 0
    run = tmp_path / "run"
    r = geoseg(
        "train",
        store,
        "-o",
        run,
        *[a for kv in TINY for a in ("--set", kv)],
        "--set",
        "schedule.steps=20",
        "--set",
        "optim.lr=1e30",
        "--set",
        "schedule.checkpoint_every=1",
        "--set",
        "schedule.eval_every=1",
    )
    assert_refused(r, "non-finite", code=1)
    assert r.out.strip() == ""
    for name in ("best.pt", "last.pt"):
        if (run / name).exists():
            ckpt = torch.load(run / name, weights_only=True)
            assert all(
                torch.isfinite(v).all()
                for v in ckpt["model_state"].values()
                if v.is_floating_point()
            )


def test_constant_float_band_and_inf_are_handled(tmp_path):
    """+inf is not a measurement either: invalid like NaN (stats stay finite)."""
    rng = np.random.default_rng(1)
    data = rng.random((3, 40, 40), dtype=np.float32)
    data[1, 5, 5] = np.inf
    data[2, 7, 9] = -np.inf
    path = write_raster(tmp_path / "inf.tif", data)
    store = tmp_path / "s.zarr"
    r = geoseg("tile", path, "-o", store, "--tile-size", 32, "--overlap", 8)
    assert r.code == 0, r.err
    from geoseg.tiles.store import open_store

    s = open_store(store)
    for k in ("mean", "std", "p2", "p98"):
        assert np.isfinite(s.stats[k]).all(), (k, s.stats[k])
    assert not s.valid[:].all()


def test_nan_nodata_declared_on_an_integer_raster_is_refused(tmp_path):
    """--nodata nan on uint8 cannot mark anything: refused as a bad option, not ignored."""
    data = np.ones((3, 32, 32), np.uint8)
    path = write_raster(tmp_path / "u8.tif", data)
    r = geoseg("tile", path, "-o", tmp_path / "s.zarr", "--tile-size", 32, "--nodata", "nan")
    assert_refused(r, "--nodata")
