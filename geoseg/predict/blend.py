"""The core of tiled inference: blending the tiles of a block of the global tile grid
(:mod:`geoseg.tiles.grid`).

Seams are avoided by defining everything on ONE global tile grid: a block computes exactly the
tiles that touch it, with the same windows and the same blend weights a whole-scene run would
use, and adds them up in the same (row-major) order. The class map is therefore the same
whatever the block size; only the cost changes (a tile straddling a block border is computed
by both blocks).

Nothing here reads files: a block gets its pixels from the caller and its probabilities from
a ``segment`` callable, so the same code serves predict (file blocks), predict_array (one
in-memory block) and the tests (a fixed function with spatial context).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from geoseg.io.bands import model_input
from geoseg.tiles.grid import Block, blend_weight

#: segment(x float32 (B, C, T, T)) -> probabilities float32 (B, K, T, T)
Segment = Callable[[np.ndarray], np.ndarray]


def blend_block(
    block: Block,
    x: np.ndarray,
    segment: Segment,
    *,
    tile: int,
    overlap: int,
    batch_size: int,
    n_classes: int,
    valid: np.ndarray | None = None,
    norm: Mapping[str, Sequence[float]] | None = None,
) -> np.ndarray:
    """Blended probabilities (K, h, w) float32 of ``block``'s output window.

    Tiles are normalised batch by batch, so the block itself stays in its source dtype (a
    quarter of float32 for uint8): the block's peak memory is what bounds predict's. Invalid
    pixels are fed as 0, the band mean after normalisation. A tile with no valid pixel is
    skipped: every pixel it covers is nodata anyway, and scenes often carry large nodata
    collars. Pixels no tile reached get probability 0.

    Args:
        block: the block (from :func:`plan_blocks`).
        x: the input over ``block.read_rows`` x ``block.read_cols``, (C, h, w): source dtype
            with ``norm``, else already normalised.
        segment: the model, tiles in → probabilities out (see :data:`Segment`).
        tile, overlap: the global grid parameters used to plan ``block``.
        batch_size: tiles per ``segment`` call.
        n_classes: K, the number of probability channels ``segment`` returns.
        valid: (h, w) bool over the read window, or ``None`` when every pixel is valid.
        norm: statistics for :func:`geoseg.io.bands.model_input`, or ``None``.
    """
    rr0, cc0 = block.read_rows[0], block.read_cols[0]
    need_h = max(r for r, _ in block.tiles) + tile - rr0
    need_w = max(c for _, c in block.tiles) + tile - cc0
    if x.shape[1] < need_h or x.shape[2] < need_w:
        # A scene smaller than one tile: padding is invalid, so it is fed as the band mean.
        pad = ((0, 0), (0, need_h - x.shape[1]), (0, need_w - x.shape[2]))
        valid = np.pad(np.ones(x.shape[1:], bool) if valid is None else valid, pad[1:])
        x = np.pad(x, pad)
    tiles = block.tiles
    if valid is not None:
        tiles = tuple(
            (r, c)
            for r, c in tiles
            if valid[r - rr0 : r - rr0 + tile, c - cc0 : c - cc0 + tile].any()
        )
    weight = blend_weight(tile, overlap)
    (r0, r1), (c0, c1) = block.rows, block.cols
    acc = np.zeros((n_classes, r1 - r0, c1 - c0), np.float32)
    wsum = np.zeros((r1 - r0, c1 - c0), np.float32)
    for start in range(0, len(tiles), batch_size):
        batch = tiles[start : start + batch_size]
        windows = [
            (slice(r - rr0, r - rr0 + tile), slice(c - cc0, c - cc0 + tile)) for r, c in batch
        ]
        xb = np.stack([x[:, rs, cs] for rs, cs in windows])
        vb = None if valid is None else np.stack([valid[rs, cs] for rs, cs in windows])
        xb, _ = model_input(xb, vb, norm)
        probs = segment(xb)
        for (r, c), p in zip(batch, probs, strict=True):
            # Intersection of this tile with the output window, in block and in tile coordinates.
            top, bottom = max(r, r0), min(r + tile, r1)
            left, right = max(c, c0), min(c + tile, c1)
            tr, tc = slice(top - r, bottom - r), slice(left - c, right - c)
            br, bc = slice(top - r0, bottom - r0), slice(left - c0, right - c0)
            w = weight[tr, tc]
            acc[:, br, bc] += p[:, tr, tc] * w
            wsum[br, bc] += w
    np.divide(acc, wsum, out=acc, where=wsum > 0)
    return acc
