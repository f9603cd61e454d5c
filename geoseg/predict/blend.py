"""The core of tiled inference: the global tile grid, blocks and blending.

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
from dataclasses import dataclass

import numpy as np

#: segment(x float32 (B, C, T, T)) -> probabilities float32 (B, K, T, T)
Segment = Callable[[np.ndarray], np.ndarray]


def tile_origins(length: int, tile: int, overlap: int) -> np.ndarray:
    """Top/left offsets of the tiles covering ``length`` pixels along one axis.

    Tiles step by ``tile - overlap``; the last one is pulled back to end at the scene edge (so no
    tile reads past the scene) unless the scene is shorter than one tile, when a single tile at 0
    is padded.
    """
    stride = tile - overlap
    if length <= tile:
        return np.zeros(1, np.int64)
    origins = list(range(0, length - tile, stride))
    origins.append(length - tile)
    return np.asarray(origins, np.int64)


def block_edges(length: int, tile: int, overlap: int, block: int) -> list[tuple[int, int]]:
    """Split one axis into blocks of about ``block`` pixels, as ``(start, stop)`` pairs.

    Blocks span whole strides and their borders sit ``overlap`` pixels into a tile, where only
    that tile covers the pixels; so each border costs one extra tile row/column, the least
    possible, and a block needs a halo of just ``overlap`` pixels before its start.
    """
    stride = tile - overlap
    step = max(1, round(block / stride)) * stride
    edges = list(range(step + overlap, length, step))
    starts = [0, *edges]
    stops = [*edges, length]
    return list(zip(starts, stops, strict=True))


def ramp(tile: int, overlap: int) -> np.ndarray:
    """1-D blend weight: a raised-cosine rise over ``overlap`` pixels at each end, 1 inside.

    Every value is strictly positive (half-pixel offsets), so a pixel covered by a single tile
    at the scene edge keeps that tile's probabilities exactly after normalisation.
    """
    w = np.ones(tile, np.float64)
    n = min(overlap, tile // 2)
    if n > 0:
        rise = np.sin(0.5 * np.pi * (np.arange(n) + 0.5) / n) ** 2
        w[:n] = rise
        w[tile - n :] = rise[::-1]
    return w


def blend_weight(tile: int, overlap: int) -> np.ndarray:
    """The separable 2-D weight ``ramp ⊗ ramp`` (T, T) float32 applied to each tile's softmax."""
    r = ramp(tile, overlap)
    return np.outer(r, r).astype(np.float32)


@dataclass(frozen=True)
class Block:
    """One block of the scene: the output window and the global tiles that touch it.

    Attributes:
        rows, cols: output window ``(start, stop)`` in scene pixels.
        read_rows, read_cols: input window to read (the tiles' union clipped to the scene).
        tiles: ``(row, col)`` scene offsets of every touching tile, in row-major order.
    """

    rows: tuple[int, int]
    cols: tuple[int, int]
    read_rows: tuple[int, int]
    read_cols: tuple[int, int]
    tiles: tuple[tuple[int, int], ...]

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows[1] - self.rows[0], self.cols[1] - self.cols[0]


def _touching(origins: np.ndarray, tile: int, start: int, stop: int) -> np.ndarray:
    return origins[(origins < stop) & (origins + tile > start)]


def plan_blocks(height: int, width: int, *, tile: int, overlap: int, block: int) -> list[Block]:
    """All blocks of a ``height`` x ``width`` scene, each with its tiles and read window."""
    row_origins = tile_origins(height, tile, overlap)
    col_origins = tile_origins(width, tile, overlap)
    blocks = []
    for r0, r1 in block_edges(height, tile, overlap, block):
        rows = _touching(row_origins, tile, r0, r1)
        for c0, c1 in block_edges(width, tile, overlap, block):
            cols = _touching(col_origins, tile, c0, c1)
            blocks.append(
                Block(
                    rows=(r0, r1),
                    cols=(c0, c1),
                    read_rows=(int(rows[0]), min(int(rows[-1]) + tile, height)),
                    read_cols=(int(cols[0]), min(int(cols[-1]) + tile, width)),
                    tiles=tuple((int(r), int(c)) for r in rows for c in cols),
                )
            )
    return blocks


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
        norm: statistics for :func:`geoseg.io.bands.normalize`, or ``None``.
    """
    from geoseg.io.bands import normalize

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
        xb = np.asarray(normalize(xb, norm) if norm is not None else xb, np.float32)
        if valid is not None:
            vb = np.stack([valid[rs, cs] for rs, cs in windows])
            np.copyto(xb, 0, where=~vb[:, None])  # not a product: NaN nodata stays NaN
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
