"""What keeps predict's memory the block's, not the scene's (issue 11): blocks run in the
order planned, so the border tiles kept between blocks are one row of them; on a CPU tiles go
through the model one at a time, so a tile's probabilities do not depend on its batch."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from make_fixtures import synthetic_scene
from test_predict import tiny_checkpoint

import geoseg.predict.block as block
import geoseg.predict.raster as raster
from geoseg.models.baselines import KMeansSegmenter
from geoseg.predict.segment import segmenter
from geoseg.progress import run_in_order


def test_run_in_order_starts_calls_in_the_order_given():
    started: list[int] = []
    lock = threading.Lock()

    def call(i):
        def run():
            with lock:
                started.append(i)
            time.sleep(0.002 * (i % 3))  # finishing out of order must not reorder starts
            return i * i

        return run

    assert run_in_order([call(i) for i in range(40)], workers=2) == [i * i for i in range(40)]
    assert started == list(range(40))


def test_run_in_order_stops_at_the_first_failure():
    ran: list[int] = []

    def call(i):
        def run():
            ran.append(i)
            if i == 3:
                raise ValueError("block 3 is broken")
            time.sleep(0.01)

        return run

    with pytest.raises(ValueError, match="block 3"):
        run_in_order([call(i) for i in range(50)], workers=2)
    assert len(ran) < 50  # the calls not yet started were cancelled
    ran.clear()
    with pytest.raises(ValueError, match="block 3"):
        run_in_order([call(i) for i in range(50)], workers=1)
    assert ran == [0, 1, 2, 3]


def test_kept_border_tiles_are_one_row_of_blocks(tmp_path, make_raster, monkeypatch):
    """Run in a shuffled order (dask's own: 64 blocks of 8192² kept 100 groups, 250 MiB),
    the kept border tiles grew with the scene's height; in the planned order they are the
    borders of about one row of blocks."""
    image, _ = synthetic_scene(352, 352, seed=5)
    scene = make_raster("big.tif", image)
    ckpt = tiny_checkpoint(tmp_path / "m.pt")
    most = []
    take = block.SharedTiles.take

    def observed(self, i, data, valid):
        out = take(self, i, data, valid)
        most.append(len(self.kept))
        return out

    monkeypatch.setattr(block.SharedTiles, "take", observed)
    raster.predict(scene, ckpt, tmp_path / "out", block_size=64)
    cols = round(len(most) ** 0.5)  # blocks are aligned to the tile grid: a square of them
    assert len(most) == cols * cols > 25  # every block took its shared tiles
    # one row's horizontal borders (cols groups) and corners (cols - 1), the vertical ones of
    # the row in progress, and what the second thread holds of the next row
    print(f"kept groups at most {max(most)} for {cols} x {cols} blocks")
    assert max(most) <= 3 * cols + 2


@pytest.mark.parametrize("kind", ["kmeans", "conv"])
def test_cpu_probabilities_do_not_depend_on_the_batch(kind, tmp_path):
    torch.manual_seed(0)
    if kind == "kmeans":
        model = KMeansSegmenter(4, [6])
        model.centroids.copy_(torch.randn(6, 4))
    else:
        from geoseg.checkpoint import Checkpoint

        model = Checkpoint.load(tiny_checkpoint(tmp_path / "m.pt")).build_model()
    segment = segmenter(model.eval())
    x = np.random.default_rng(1).normal(size=(8, 4, 64, 64)).astype(np.float32)
    batch = segment(x)
    alone = np.concatenate([segment(x[i : i + 1]) for i in range(len(x))])
    np.testing.assert_array_equal(batch.view(np.uint32), alone.view(np.uint32))
    assert batch.shape == (8, 6 if kind == "kmeans" else 5, 64, 64)
