"""The core of tiled inference: blending the tiles of a block of the global tile grid
(:mod:`geoseg.tiles.grid`).

Seams are avoided by defining everything on ONE global tile grid: a block computes exactly the
tiles that touch it, with the same windows and the same blend weights a whole-scene run would
use, and adds them up in the same (row-major) order. The class map is therefore the same
whatever the block size. A tile straddling a block border is computed ONCE: the tiles that
touch several blocks are grouped by the blocks they touch (:func:`shared_tiles`), computed by
their own task (:func:`segment_tiles`) and handed to each of those blocks, so predict runs
the model on exactly the tiles of the scene's grid, as a bare loop over it would.

Nothing here reads files: a block gets its pixels from the caller and its probabilities from
a ``segment`` callable, so the same code serves predict (file blocks), predict_array (one
in-memory block) and the tests (a fixed function with spatial context).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from geoseg.io.bands import model_input
from geoseg.predict.scratch import Scratch
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
    shared: Mapping[tuple[int, int], np.ndarray] | None = None,
    scratch: Scratch | None = None,
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
        shared: probabilities (K, T, T) of tiles computed elsewhere (those shared with other
            blocks, from :func:`segment_tiles`), by ``(row, col)``, or ``(part, (dr, dc))``:
            the part of the tile covering this block, from tile row/column ``dr``/``dc``; the
            others are computed here, batch by batch, in row-major order.
        scratch: this thread's reusable arrays (:mod:`geoseg.predict.scratch`); the result is
            then one of them, valid until this thread's next block.
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
    scratch = scratch or Scratch()
    acc = scratch.array("acc", (n_classes, r1 - r0, c1 - c0), np.float32)
    wsum = scratch.array("wsum", (r1 - r0, c1 - c0), np.float32)
    acc.fill(0)
    wsum.fill(0)
    shared = shared or {}
    own = [t for t in tiles if t not in shared]  # computed here, in row-major order
    done: dict[tuple[int, int], np.ndarray] = {}
    for r, c in tiles:
        dr = dc = 0
        if (r, c) in shared:
            p = shared[(r, c)]
            if isinstance(p, tuple):  # the part of the tile this block needs, and its offset
                p, (dr, dc) = p
        else:
            if not done:  # the next batch of this block's own tiles
                batch, own = own[:batch_size], own[batch_size:]
                probs = _segment(x, valid, batch, rr0, cc0, tile, norm, segment, scratch)
                done = dict(zip(batch, probs, strict=True))
            p = done.pop((r, c))
        # Intersection of this tile with the output window, in block and in tile coordinates.
        top, bottom = max(r, r0), min(r + tile, r1)
        left, right = max(c, c0), min(c + tile, c1)
        tr, tc = slice(top - r, bottom - r), slice(left - c, right - c)
        br, bc = slice(top - r0, bottom - r0), slice(left - c0, right - c0)
        w = weight[tr, tc]
        pr, pc = slice(tr.start - dr, tr.stop - dr), slice(tc.start - dc, tc.stop - dc)
        product = scratch.array("product", (n_classes, *w.shape), np.float32)
        np.multiply(p[:, pr, pc], w, out=product)
        acc[:, br, bc] += product
        wsum[br, bc] += w
    np.divide(acc, wsum, out=acc, where=wsum > 0)
    return acc


def _segment(
    x, valid, batch, rr0: int, cc0: int, tile: int, norm, segment, scratch: Scratch | None = None
) -> np.ndarray:
    """Probabilities (B, K, T, T) of the tiles ``batch`` cut from ``x`` (read from ``rr0, cc0``).

    The batch is cut and normalised into ``scratch``'s arrays: ``segment`` must be done with
    its input when it returns (it is: the forward pass has run).
    """
    scratch = scratch or Scratch()
    windows = [(slice(r - rr0, r - rr0 + tile), slice(c - cc0, c - cc0 + tile)) for r, c in batch]
    shape = (len(batch), x.shape[0], tile, tile)
    xb = np.stack([x[:, rs, cs] for rs, cs in windows], out=scratch.array("tiles", shape, x.dtype))
    vb = None
    if valid is not None:
        vb = scratch.array("valid", (len(batch), tile, tile), bool)
        np.stack([valid[rs, cs] for rs, cs in windows], out=vb)
    out = scratch.array("input", shape, np.float32) if norm is not None else None
    xb, _ = model_input(xb, vb, norm, out)
    return segment(xb)


# --- tiles shared by several blocks ----------------------------------------------------------


def shared_tiles(
    blocks: Sequence[Block], tile: int
) -> tuple[dict[tuple, tuple[tuple[int, int], ...]], list[list[tuple]]]:
    """Group the tiles that touch more than one block by the blocks they touch.

    Returns ``(groups, uses)``: ``groups`` maps a key (the row-block and column-block indices
    a tile touches) to its tiles in row-major order, and ``uses[i]`` lists the keys of the
    groups block ``i`` needs. Tiles inside one block are in no group: that block computes them.
    """
    row_edges = sorted({b.rows for b in blocks})
    col_edges = sorted({b.cols for b in blocks})

    def touched(edges, start):
        return tuple(k for k, (a, z) in enumerate(edges) if start < z and start + tile > a)

    groups: dict[tuple, list[tuple[int, int]]] = {}
    for b in blocks:
        for r, c in b.tiles:
            key = (touched(row_edges, r), touched(col_edges, c))
            if len(key[0]) > 1 or len(key[1]) > 1:
                groups.setdefault(key, [])
                if (r, c) not in groups[key]:
                    groups[key].append((r, c))
    uses = [
        [
            key
            for key in groups
            if row_edges.index(b.rows) in key[0] and col_edges.index(b.cols) in key[1]
        ]
        for b in blocks
    ]
    return {k: tuple(sorted(v)) for k, v in groups.items()}, uses


def segment_tiles(
    x: np.ndarray,
    valid: np.ndarray | None,
    tiles: Sequence[tuple[int, int]],
    origin: tuple[int, int],
    segment: Segment,
    *,
    tile: int,
    batch_size: int,
    norm: Mapping[str, Sequence[float]] | None = None,
    scratch: Scratch | None = None,
) -> dict[tuple[int, int], np.ndarray]:
    """Probabilities (K, T, T) of ``tiles`` cut from ``x`` (read from scene pixel ``origin``),
    by ``(row, col)``; tiles without a valid pixel are left out (no block blends them).
    ``scratch`` holds the batches' input arrays (:func:`blend_block`)."""
    rr0, cc0 = origin
    if valid is not None:
        tiles = [
            (r, c)
            for r, c in tiles
            if valid[r - rr0 : r - rr0 + tile, c - cc0 : c - cc0 + tile].any()
        ]
    out: dict[tuple[int, int], np.ndarray] = {}
    for start in range(0, len(tiles), batch_size):
        batch = list(tiles[start : start + batch_size])
        probs = _segment(x, valid, batch, rr0, cc0, tile, norm, segment, scratch)
        out.update(zip(batch, probs, strict=True))
    return out
