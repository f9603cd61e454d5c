"""predict's reused per-thread arrays and its fused arg-max give what fresh arrays and
``argmax`` give (issue 11: no block allocates arrays of its own size)."""

from __future__ import annotations

import threading

import numpy as np

from geoseg.io.bands import model_input
from geoseg.predict.blend import blend_block
from geoseg.predict.block import classify as _classify
from geoseg.predict.scratch import Scratch
from geoseg.tiles.grid import plan_blocks


def test_classify_matches_argmax_ties_and_nan():
    rng = np.random.default_rng(0)
    probs = rng.integers(0, 4, (6, 40, 50)).astype(np.float32)  # many ties: first class wins
    valid = rng.random((40, 50)) > 0.1
    want = probs.argmax(axis=0).astype("uint8")
    want[~valid] = 255
    np.testing.assert_array_equal(_classify(probs, valid, "uint8", 255, Scratch()), want)
    probs[3, 5, 7] = np.nan  # argmax picks a NaN: so must predict
    want = probs.argmax(axis=0).astype("uint8")
    want[~valid] = 255
    assert want[5, 7] == 3 or not valid[5, 7]
    np.testing.assert_array_equal(_classify(probs, valid, "uint8", 255, Scratch()), want)


def test_scratch_reused_per_thread_not_across_threads():
    scratch = Scratch()
    a = scratch.array("x", (4, 5), np.float32)
    b = scratch.array("x", (2, 3), np.float32)
    assert np.shares_memory(a, b) and b.flags.c_contiguous
    other = []
    t = threading.Thread(target=lambda: other.append(scratch.array("x", (4, 5), np.float32)))
    t.start()
    t.join()
    assert not np.shares_memory(a, other[0])


def test_model_input_into_out_is_the_same_numbers():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (3, 4, 16, 16)).astype("uint8")
    valid = rng.random((3, 16, 16)) > 0.2
    norm = {
        "mean": [100.0] * 4,
        "std": [40.0, 0.0, 30.0, 20.0],
        "p2": [3.0] * 4,
        "p98": [240.0] * 4,
    }
    want, _ = model_input(x, valid, norm)
    out = np.full(x.shape, 7.0, np.float32)
    got, _ = model_input(x, valid, norm, out)
    assert got is out
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))  # bit for bit


def test_blend_block_with_reused_scratch_is_bit_identical():
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (4, 90, 110)).astype("uint8")
    valid = rng.random((90, 110)) > 0.05
    norm = {"mean": [120.0] * 4, "std": [50.0] * 4, "p2": [5.0] * 4, "p98": [250.0] * 4}

    def segment(xb):  # spatial context and a softmax, as a model would
        logits = np.stack(
            [xb.sum(1) * (k + 1) / 7 + np.roll(xb[:, k % 4], 1, -1) for k in range(5)], 1
        )
        e = np.exp(logits - logits.max(1, keepdims=True))
        return (e / e.sum(1, keepdims=True)).astype(np.float32)

    kw = dict(tile=32, overlap=8, batch_size=3, n_classes=5, norm=norm)
    scratch = Scratch()
    for block in plan_blocks(90, 110, tile=32, overlap=8, block=40):
        (rr0, rr1), (cc0, cc1) = block.read_rows, block.read_cols
        xs, vs = x[:, rr0:rr1, cc0:cc1], valid[rr0:rr1, cc0:cc1]
        fresh = blend_block(block, xs, segment, valid=vs, **kw)
        reused = blend_block(block, xs, segment, valid=vs, scratch=scratch, **kw)
        np.testing.assert_array_equal(reused.view(np.uint32), fresh.view(np.uint32))
