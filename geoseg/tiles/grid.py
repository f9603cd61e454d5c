"""The tile grid: where tiles sit on a raster.

One definition of the windows, shared by tile (training tiles), predict (inference tiles) and
map (mapping tiles), so a tile at the same place means the same pixels everywhere.
"""

from __future__ import annotations

from geoseg.errors import BadInput


def tile_windows(height: int, width: int, tile_size: int, overlap: int) -> list[tuple[int, int]]:
    """Top-left (row, col) of every tile covering a ``height`` × ``width`` raster.

    The stride is ``tile_size - overlap``; the last row/column of tiles is snapped to the
    raster edge so every pixel is covered without padding, and a raster smaller than a tile
    gives one tile at (0, 0) that is padded when read.

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


def tile_starts(n: int, size: int, stride: int) -> list[int]:
    if n <= size:
        return [0]
    return [*range(0, n - size, stride), n - size]


def owned_span(starts: list[int], start: int, n: int) -> tuple[int, int]:
    """The part [a, b) of the tile at ``start`` that no earlier tile counts (stats count once)."""
    i = starts.index(start)
    return start, (starts[i + 1] if i + 1 < len(starts) else n)
