"""One block of a prediction: read its window once, segment its tiles (those shared with
neighbouring blocks computed once, by the first block to need them, from its own read, and
kept cropped for the others), blend, arg-max, and hand the arrays to the writer.

:func:`geoseg.predict.raster.predict` plans the blocks and runs them in order; the window and
weight math is :mod:`geoseg.predict.blend`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from functools import partial

import numpy as np

from geoseg.predict.blend import Segment, blend_block, segment_tiles
from geoseg.predict.scratch import Scratch
from geoseg.tiles.grid import Block


def classify(
    probs: np.ndarray, valid: np.ndarray, dtype: str, nodata: int, scratch: Scratch
) -> np.ndarray:
    """Arg-max over the classes of (K, h, w) ``probs``, straight into ``dtype``; ``nodata``
    where not ``valid``.

    One pass per class over the running maximum instead of ``probs.argmax(axis=0)``, which
    copies the whole (K, h, w) array to make the class axis the last one and returns int64
    (measured 1.5x slower at 1152² x 6). Ties go to the first class, as argmax's; a NaN (which
    argmax would pick) sends the block through argmax itself.
    """
    best = scratch.array("best", probs.shape[1:], probs.dtype)
    higher = scratch.array("higher", probs.shape[1:], bool)
    out = np.zeros(probs.shape[1:], dtype)
    np.copyto(best, probs[0])
    for k in range(1, len(probs)):
        np.greater(probs[k], best, out=higher)
        np.copyto(out, k, where=higher, casting="unsafe")
        np.maximum(best, probs[k], out=best)
    if np.isnan(best).any():
        out = probs.argmax(axis=0).astype(dtype)
    out[~valid] = nodata
    return out


def predict_block(
    path: str,
    block: Block,
    *,
    bands: Sequence[int],
    norm: Mapping[str, Sequence[float]],
    segment: Segment,
    tile: int,
    overlap: int,
    batch_size: int,
    n_classes: int,
    classes: Mapping[str, Sequence[int]],
    probabilities: bool,
    nodata: float | str | None = None,
    sink=None,
    shared: Sequence[Mapping[tuple[int, int], np.ndarray]] | Callable = (),
    scratch: Scratch | None = None,
) -> dict[str, np.ndarray] | None:
    """Read, normalise, segment and blend one block; the arrays to write over its window.

    ``shared`` holds the probabilities of the block's tiles that other blocks use too
    (computed once by :func:`predict_tiles`), or is ``shared(data, valid)`` giving them from
    the block's own read (:class:`SharedTiles`); the block computes the others itself.
    Returns ``{"clusters": ..., "<class>": ..., "probabilities": ...}`` or, with a ``sink``,
    hands them to ``sink(block, arrays)`` and returns ``None`` so the scheduler keeps nothing.
    ``scratch`` (with a ``sink`` only: the arrays are its own until the thread's next block)
    holds the block's work arrays, reused by the thread's next block.
    """
    import rasterio
    from rasterio.windows import Window

    from geoseg.io.palette import class_dtype
    from geoseg.io.rasters import read_window

    (rr0, rr1), (cc0, cc1) = block.read_rows, block.read_cols
    with rasterio.open(path) as src:
        data, valid = read_window(src, Window(cc0, rr0, cc1 - cc0, rr1 - rr0), bands, nodata)
    if callable(shared):
        shared = shared(data, valid)
    tiles = {k: v for part in shared for k, v in part.items()}
    probs = blend_block(
        block,
        data,
        segment,
        tile=tile,
        overlap=overlap,
        batch_size=batch_size,
        n_classes=n_classes,
        valid=valid,
        norm=norm,
        shared=tiles,
        scratch=scratch,
    )
    del tiles
    (r0, r1), (c0, c1) = block.rows, block.cols
    inside = valid[r0 - rr0 : r1 - rr0, c0 - cc0 : c1 - cc0]
    dtype, out_nodata = class_dtype(n_classes)
    clusters = classify(probs, inside, dtype, out_nodata, scratch or Scratch())
    arrays = {"clusters": clusters}
    for name, ids in classes.items():
        mask = np.isin(clusters, ids).astype("uint8")
        mask[~inside] = 255
        arrays[name] = mask
        # the class probability, only to give each polygon its ``score`` (mean inside it)
        score = probs[ids].sum(axis=0)
        score[~inside] = np.nan
        arrays[f"{name}:score"] = score
    if probabilities:
        probs[:, ~inside] = np.nan
        arrays["probabilities"] = probs
    if sink is None:
        return arrays
    sink(block, arrays)
    return None


class SharedTiles:
    """Shared tile groups of a local run: computed once, on first use, by the block that
    needs them first, then kept (cropped to the windows of the blocks still to use them)
    until the last of those blocks is done."""

    def __init__(self, groups, uses, blocks, tile: int, compute):
        self.groups, self.uses, self.blocks, self.tile = groups, uses, blocks, tile
        self.compute = compute
        self.lock = threading.Lock()
        self.locks = {key: threading.Lock() for key in groups}
        self.users = {key: {i for i, u in enumerate(uses) if key in u} for key in groups}
        self.kept: dict[tuple, dict] = {}

    def take(self, i: int, data: np.ndarray, valid: np.ndarray) -> list[dict]:
        """The groups block ``i`` needs (tile -> probabilities, or (array, (dr, dc))); a
        group not computed yet is computed from ``data``/``valid``, the block's own read.

        A group's tiles touch the block, so they lie inside its read window (the union of
        its touching tiles): reading each group's window again decoded the same source
        blocks a second time (a quarter of a k-means 8192² run's decoding).
        """
        block = self.blocks[i]
        origin = (block.read_rows[0], block.read_cols[0])
        out = []
        for key in self.uses[i]:
            with self.locks[key]:
                if key in self.kept:
                    out.append(self.kept[key])
                    continue
                full = self.compute(data, valid, self.groups[key], origin)
                later = [self.blocks[j] for j in self.users[key] if j != i]
                self.kept[key] = {t: crop_to(p, t, later, self.tile) for t, p in full.items()}
                out.append(full)
        return out

    def done(self, i: int) -> None:
        with self.lock:
            for key in self.uses[i]:
                self.users[key].discard(i)
                if not self.users[key]:
                    self.kept.pop(key, None)


def crop_to(p: np.ndarray, origin: tuple[int, int], blocks: Sequence[Block], tile: int):
    """The part of tile probabilities ``p`` (at scene ``origin``) inside any of ``blocks``'
    output windows, as ``(copy, (row, col) offset in the tile)``."""
    r, c = origin
    rows = [(max(b.rows[0], r) - r, min(b.rows[1], r + tile) - r) for b in blocks]
    cols = [(max(b.cols[0], c) - c, min(b.cols[1], c + tile) - c) for b in blocks]
    r0, r1 = min(a for a, _ in rows), max(z for _, z in rows)
    c0, c1 = min(a for a, _ in cols), max(z for _, z in cols)
    if r1 <= r0 or c1 <= c0:
        return p[:, :0, :0].copy(), (0, 0)
    return p[:, r0:r1, c0:c1].copy(), (r0, c0)


def cached_block(path: str, block: Block, cache: SharedTiles, i: int, **kwargs):
    """:func:`predict_block` with its shared tiles from ``cache``."""
    try:
        return predict_block(path, block, shared=partial(cache.take, i), **kwargs)
    finally:
        cache.done(i)


def predict_tiles(
    path: str,
    tiles: Sequence[tuple[int, int]],
    *,
    bands: Sequence[int],
    norm: Mapping[str, Sequence[float]],
    segment: Segment,
    tile: int,
    batch_size: int,
    nodata: float | str | None = None,
    scratch: Scratch | None = None,
) -> dict[tuple[int, int], np.ndarray]:
    """Probabilities of tiles that several blocks share, computed once for all of them."""
    import rasterio
    from rasterio.windows import Window

    from geoseg.io.rasters import read_window

    r0, c0 = min(r for r, _ in tiles), min(c for _, c in tiles)
    r1, c1 = max(r for r, _ in tiles) + tile, max(c for _, c in tiles) + tile
    with rasterio.open(path) as src:
        data, valid = read_window(src, Window(c0, r0, c1 - c0, r1 - r0), bands, nodata)
    return segment_tiles(
        data,
        valid,
        tiles,
        (r0, c0),
        segment,
        tile=tile,
        batch_size=batch_size,
        norm=norm,
        scratch=scratch,
    )
