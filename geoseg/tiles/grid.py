"""The tile grid: where tiles sit on a raster, how they group into blocks, how they blend.

One definition of the windows, shared by tile (training tiles), predict (inference tiles and
blocks) and map (mapping tiles), so a tile at the same place means the same pixels everywhere:
tiles step by ``size - overlap`` from the top-left corner and the last row/column is pulled
back to end at the raster edge (no tile reads past the raster, none is padded) unless the
raster is smaller than one tile, when a single tile at 0 is padded.

The pure functions (``tile_starts``, ``tile_windows``, ``plan_blocks``, ``blend_weight``) are
the grid, torchgeo-style; :class:`TileGrid` carries one ``(size, overlap)`` pair with its
validation and defaults, so callers never recompute them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geoseg.errors import BadInput

#: tile edge of ``geoseg tile`` when none is given (pixels)
DEFAULT_TILE_SIZE = 256


def tile_starts(n: int, size: int, stride: int) -> list[int]:
    """Offsets of the tiles of ``size`` covering ``n`` pixels along one axis, ``stride`` apart."""
    if n <= size:
        return [0]
    return [*range(0, n - size, stride), n - size]


def tile_origins(length: int, tile: int, overlap: int) -> np.ndarray:
    """:func:`tile_starts` of one axis as an int64 array (tiles step by ``tile - overlap``)."""
    return np.asarray(tile_starts(length, tile, tile - overlap), np.int64)


def tile_windows(height: int, width: int, tile_size: int, overlap: int) -> list[tuple[int, int]]:
    """Top-left (row, col) of every tile covering a ``height`` × ``width`` raster, row-major.

    Raises:
        BadInput: ``overlap`` not smaller than ``tile_size`` (``--overlap``).
    """
    if tile_size < 1 or not 0 <= overlap < tile_size:
        raise BadInput(
            f"overlap {overlap} must be >= 0 and smaller than the tile size {tile_size}",
            param="--overlap",
        )
    rows = tile_starts(height, tile_size, tile_size - overlap)
    cols = tile_starts(width, tile_size, tile_size - overlap)
    return [(r, c) for r in rows for c in cols]


def owned_span(starts: list[int], start: int, n: int) -> tuple[int, int]:
    """The part [a, b) of the tile at ``start`` that no earlier tile counts (stats count once)."""
    i = starts.index(start)
    return start, (starts[i + 1] if i + 1 < len(starts) else n)


# --- blocks: groups of tiles that predict computes together ---------------------------------


def block_edges(length: int, tile: int, overlap: int, block: int) -> list[tuple[int, int]]:
    """Split one axis into blocks of about ``block`` pixels, as ``(start, stop)`` pairs.

    Blocks span whole strides and their borders sit ``overlap`` pixels into a tile, where only
    that tile covers the pixels; so each border costs one extra tile row/column, the least
    possible, and a block needs a halo of just ``overlap`` pixels before its start.

    The axis is shared out evenly between as many blocks as ``block``-sized steps need, rather
    than cut into full steps and a short remainder: blocks run in parallel, and a scene of a
    few blocks otherwise ends with its largest block running alone (1536² with 1024 px
    blocks: 1152 + 384 px per axis, now 928 + 608). No block is larger than a full step, and
    blocks differ by one stride at most.
    """
    stride = tile - overlap
    step = max(1, round(block / stride))  # strides per block at most
    strides = max(1, -(-(length - overlap) // stride))  # strides the axis needs
    n = -(-strides // step)
    # strides // n each, one more for the first strides % n blocks: sizes differ by one stride
    counts = [strides // n + (k < strides % n) for k in range(n)]
    edges = [sum(counts[:k]) * stride + overlap for k in range(1, n)]
    edges = [e for e in edges if e < length]
    starts = [0, *edges]
    stops = [*edges, length]
    return list(zip(starts, stops, strict=True))


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


# --- blend weights ---------------------------------------------------------------------------


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


# --- one (size, overlap) pair with its rules --------------------------------------------------


@dataclass(frozen=True)
class TileGrid:
    """Tiles of ``size`` pixels overlapping by ``overlap``: the grid of a store or a prediction.

    Build it with :meth:`for_tiling` (``geoseg tile``'s defaults and rule: overlap smaller than
    the tile) or :meth:`for_prediction` (predict / map: blending needs overlap <= size / 2 and
    the model's size multiple), so the CLI and the library get the same grid from the same
    arguments.
    """

    size: int
    overlap: int

    @classmethod
    def for_tiling(cls, size: int | None = None, overlap: int | None = None) -> TileGrid:
        """The store grid: 256 px tiles by default; overlap 32 px, a quarter under 128 px.

        Raises:
            BadInput: ``overlap`` negative or not smaller than ``size`` (``--overlap``).
        """
        size = DEFAULT_TILE_SIZE if size is None else int(size)
        overlap = min(32, size // 4) if overlap is None else int(overlap)
        if size < 1 or not 0 <= overlap < size:
            raise BadInput(
                f"overlap {overlap} must be >= 0 and smaller than the tile size {size}",
                param="--overlap",
            )
        return cls(size, overlap)

    @classmethod
    def for_prediction(cls, size: int, overlap: int | None = None, multiple: int = 1) -> TileGrid:
        """The inference grid: overlap an eighth of the tile by default, at most half of it.

        Raises:
            BadInput: ``size`` not a multiple of the model's ``multiple`` (``--tile-size``), or
                ``overlap`` outside ``0..size // 2`` (``--overlap``).
        """
        if size % multiple:
            fit = -(-size // multiple) * multiple
            raise BadInput(
                f"{size} is not a multiple of {multiple}, which this model needs; use {fit}",
                param="--tile-size",
            )
        overlap = size // 8 if overlap is None else overlap
        if not 0 <= overlap <= size // 2:
            raise BadInput(
                f"{overlap} must be between 0 and half the tile size ({size // 2})",
                param="--overlap",
            )
        return cls(size, overlap)

    @property
    def stride(self) -> int:
        return self.size - self.overlap

    def windows(self, height: int, width: int) -> list[tuple[int, int]]:
        """Top-left (row, col) of every tile of a ``height`` × ``width`` raster."""
        return tile_windows(height, width, self.size, self.overlap)

    def blocks(self, height: int, width: int, block: int) -> list[Block]:
        """Blocks of about ``block`` pixels with the tiles that touch each (for predict)."""
        return plan_blocks(height, width, tile=self.size, overlap=self.overlap, block=block)

    def weight(self) -> np.ndarray:
        """The (size, size) blend weight of one tile's softmax."""
        return blend_weight(self.size, self.overlap)
