"""Polygon pieces cut by block borders: which pieces face each other across a border, their
components, and the join of each component as soon as no block still to come can add to it.

:mod:`geoseg.vector.vectorize` traces blocks in raster order and hands this module the pieces
touching an inner border with, for each of the block's four edges, which piece owns each
pixel there. Two pieces of neighbouring blocks share an edge exactly where 4-adjacent pixels
across their common border belong to them; a component is stitched in raster space
(:mod:`geoseg.vector.stitch`) once the last block any of its pieces touches is done.
"""

from __future__ import annotations

import logging
import mmap
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import IO

import numpy as np
import shapely
from rasterio.windows import Window

from geoseg.vector.stitch import ranges, segments, stitch

log = logging.getLogger(__name__)

#: vertices of border pieces joined in one call of the stitch (memory, not speed: it is linear)
STITCH_VERTICES = 200_000
#: bytes of WKB of the joined border polygons handed to the writer at a time
JOINED_BATCH_BYTES = 8 << 20


@dataclass
class Pieces:
    """Polygons in global pixel coordinates with what is needed to finish them."""

    geoms: np.ndarray = field(default_factory=lambda: np.empty(0, object))
    values: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    counts: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    prob_sums: np.ndarray = field(default_factory=lambda: np.empty(0, np.float64))

    def take(self, index: np.ndarray) -> Pieces:
        return Pieces(
            self.geoms[index], self.values[index], self.counts[index], self.prob_sums[index]
        )

    @staticmethod
    def concat(parts: Sequence[Pieces]) -> Pieces:
        if not parts:
            return Pieces()
        names = [f.name for f in fields(Pieces)]
        return Pieces(*(np.concatenate([getattr(p, n) for p in parts]) for n in names))


class Border:
    """The border pieces of the blocks done so far, each component joined and finished as soon
    as no block still to come can add to it.

    Blocks arrive in raster order, so a piece can only gain neighbours from the blocks to its
    right and below. A component is complete once the last block any of its pieces touches is
    done; it is then stitched and finished, and its WKB goes to a temporary file (every border
    piece of the scene joined at the end, with several working copies, was the peak of an
    8192² run; the finished polygons kept in memory were still 36 MiB of WKB there). They are
    yielded at the end ordered by their lowest piece (block order, then trace order), the
    order of the join of all blocks at once, so the output rows are the same.
    """

    def __init__(
        self,
        windows: Sequence[Window],
        block_size: int,
        size: tuple[int, int],
        finish: Callable[..., dict[str, np.ndarray]],
    ) -> None:
        self.finish = finish  # pieces, keys -> finished polygons (vectorize's filters)
        height, width = size
        self.cols = np.arange(block_size, width, block_size)
        self.rows = np.arange(block_size, height, block_size)
        where = {(int(w.row_off), int(w.col_off)): k for k, w in enumerate(windows)}

        def at(row, col) -> int:
            return where.get((int(row), int(col)), -1)

        self.right = [at(w.row_off, w.col_off + w.width) for w in windows]
        self.below = [at(w.row_off + w.height, w.col_off) for w in windows]
        self.left, self.above = [-1] * len(windows), [-1] * len(windows)
        for k, (right, below) in enumerate(zip(self.right, self.below, strict=True)):
            if right >= 0:
                self.left[right] = k
            if below >= 0:
                self.above[below] = k
        self.offsets: dict[int, int] = {}  # first global piece index of each block
        self.edges: dict[int, dict[str, np.ndarray]] = {}  # right/bottom ids still needed
        self.count = 0  # border pieces seen
        # open pieces, by global index: their component's lowest index and last block needed
        self.open = Pieces()
        self.index = np.empty(0, np.int64)
        self.root = np.empty(0, np.int64)
        self.need = np.empty(0, np.int64)
        # finished polygons: their attributes here, their WKB in a temporary file until the end
        self.finished: list[dict[str, np.ndarray]] = []
        self.spill: IO[bytes] | None = None
        self.spilled = 0  # bytes written to it

    def __enter__(self) -> Border:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.spill is not None:
            self.spill.close()

    def add(self, k: int, pieces: Pieces, edges: dict[str, np.ndarray]) -> None:
        """Take block ``k``'s border pieces (blocks arrive in order) and finish what it closes."""
        n = len(pieces.geoms)
        offset = self.offsets[k] = self.count
        self.count += n
        need = np.full(n, k, np.int64)
        pairs = []
        for earlier, side, mine in (
            (self.left[k], "right", "left"),
            (self.above[k], "bottom", "top"),
        ):
            theirs = self.edges.get(earlier, {}).pop(side, None)
            if earlier in self.edges and not self.edges[earlier]:
                del self.edges[earlier]  # both later neighbours done
            if theirs is not None and edges:
                pairs.append(_pair_links(theirs, edges[mine], self.offsets[earlier], offset))
        for later, side in ((self.right[k], "right"), (self.below[k], "bottom")):
            if later >= 0 and edges:
                touching = np.unique(edges[side][edges[side] > 0]) - 1
                need[touching] = np.maximum(need[touching], later)
                self.edges.setdefault(k, {})[side] = edges[side]
        self.open = Pieces.concat([self.open, pieces])
        self.index = np.r_[self.index, np.arange(offset, offset + n)]
        self.root = np.r_[self.root, np.arange(offset, offset + n)]
        self.need = np.r_[self.need, need]
        if pairs:
            self._link(np.concatenate(pairs))
        self._finish_complete(k)

    def _link(self, pairs: np.ndarray) -> None:
        """Join the components of linked pieces of one value (lowest index as the label)."""
        left, right = np.searchsorted(self.index, pairs.T)
        same = self.open.values[left] == self.open.values[right]  # adjacent pixels of one value
        root = _lowest(np.searchsorted(self.index, self.root), left[same], right[same])
        self.root = self.index[root]

    def _finish_complete(self, k: int) -> None:
        """Stitch, finish and keep the components no block after ``k`` can touch."""
        root = np.searchsorted(self.index, self.root)
        last = np.zeros(len(root), np.int64)
        np.maximum.at(last, root, self.need)
        done = last[root] <= k
        if not done.any():
            return
        keys, component = np.unique(self.root[done], return_inverse=True)
        joined = _join(self.open.take(done), component, self.cols, self.rows)
        finished = self.finish(joined, keys=keys)
        wkb = shapely.to_wkb(finished.pop("geometry"))
        finished["size"] = np.fromiter(map(len, wkb), np.int64, len(wkb))
        finished["offset"] = self.spilled + np.cumsum(finished["size"]) - finished["size"]
        if self.spill is None:
            # closed by __exit__ (the file outlives this call)
            self.spill = tempfile.TemporaryFile(prefix="geoseg-vectorize-")  # noqa: SIM115
        self.spill.write(b"".join(wkb))
        self.spilled += int(finished["size"].sum())
        self.finished.append(finished)
        if len(self.finished) >= 64:  # a few arrays per block add up over thousands of blocks
            self.finished = [_concat(self.finished)]
        del joined, finished
        keep = ~done
        self.open = self.open.take(keep)
        self.index, self.root, self.need = self.index[keep], self.root[keep], self.need[keep]

    def joined(self) -> Iterator[dict[str, np.ndarray]]:
        """The finished polygons in the order of their lowest piece, a few MiB at a time."""
        if len(self.open.geoms):
            raise AssertionError("border pieces left open after the last block")
        if self.spill is None:
            return
        merged, self.finished = _concat(self.finished), []
        order = np.argsort(merged.pop("key"), kind="stable")
        offset, size = merged.pop("offset")[order], merged.pop("size")[order]
        batch = np.cumsum(size) // JOINED_BATCH_BYTES
        self.spill.flush()
        with mmap.mmap(self.spill.fileno(), 0, access=mmap.ACCESS_READ) as wkb:
            for part in np.split(np.arange(len(order)), np.flatnonzero(np.diff(batch)) + 1):
                out = {name: values[order[part]] for name, values in merged.items()}
                blobs = [wkb[o : o + n] for o, n in zip(offset[part], size[part], strict=True)]
                yield {"geometry": shapely.from_wkb(blobs), **out}


def _concat(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def edge_ids(border: Pieces, window: Window) -> dict[str, np.ndarray]:
    """Index + 1 of the border piece owning each pixel of the block's outer rows and columns
    (0: no border piece there).

    Read from the pieces' outlines, not rasterised: outside the block is no piece, so the
    pixels a piece has in the top row are exactly the stretches of its outline on the block's
    top line (likewise for the other sides). Rasterising every border piece over the block
    to read four lines of it was a third of a one-class run.
    """
    if not len(border.geoms):
        return {}
    x0, y0, x1, y1, piece = segments(border.geoms, np.arange(1, len(border.geoms) + 1))
    col0, row0 = int(window.col_off), int(window.row_off)
    col1, row1 = col0 + int(window.width), row0 + int(window.height)
    flat, upright = y0 == y1, x0 == x1
    sides = {
        "top": (flat & (y0 == row0), x0, x1, col0, window.width),
        "bottom": (flat & (y0 == row1), x0, x1, col0, window.width),
        "left": (upright & (x0 == col0), y0, y1, row0, window.height),
        "right": (upright & (x0 == col1), y0, y1, row0, window.height),
    }
    edges = {}
    for side, (on, a, b, origin, length) in sides.items():
        start = np.minimum(a[on], b[on]) - origin
        sizes = np.abs(b[on] - a[on])
        ids = np.zeros(int(length), np.int32)
        ids[ranges(start, sizes)] = np.repeat(piece[on], sizes)
        edges[side] = ids
    return edges


def links(windows: Sequence[Window], edges: Sequence[dict], counts: Sequence[int]) -> np.ndarray:
    """Pairs of border pieces (indices into the concatenated pieces) that share an edge, over
    the whole scene at once: :class:`Border` finds the same pairs a block at a time (tests
    hold it and the stitch to this reference).

    Found in raster space: two pieces of neighbouring blocks share an edge exactly where
    4-adjacent pixels across their common border belong to them; a shared corner alone never
    pairs pixels. (Pairs of pieces of different values are not joined: :class:`Border`.) This
    replaces a geometric search (STRtree + DE-9IM relate of every candidate pair), which took
    as long as the merge itself.
    """
    offsets = np.concatenate([[0], np.cumsum(counts)])
    where = {(int(w.row_off), int(w.col_off)): k for k, w in enumerate(windows)}
    pairs = []
    for k, w in enumerate(windows):
        right = where.get((int(w.row_off), int(w.col_off + w.width)))
        below = where.get((int(w.row_off + w.height), int(w.col_off)))
        for other, mine, theirs in ((right, "right", "left"), (below, "bottom", "top")):
            if other is None or not edges[k] or not edges[other]:
                continue
            pairs.append(
                _pair_links(edges[k][mine], edges[other][theirs], offsets[k], offsets[other])
            )
    if not pairs:
        return np.zeros((0, 2), np.int64)
    return np.unique(np.concatenate(pairs), axis=0)


def _pair_links(a: np.ndarray, b: np.ndarray, offset_a: int, offset_b: int) -> np.ndarray:
    """Pairs of pieces facing each other across one block border: ``a`` and ``b`` are the two
    blocks' piece ids (index + 1, 0 for none) along it, ``offset_*`` their first global index."""
    both = (a > 0) & (b > 0)
    return np.stack([a[both] - 1 + offset_a, b[both] - 1 + offset_b], axis=1).astype(np.int64)


def _join(pieces: Pieces, component: np.ndarray, cols: np.ndarray, rows: np.ndarray) -> Pieces:
    """One polygon per ``component`` (``0..k-1``, numbered by lowest piece), in raster space
    (:mod:`geoseg.vector.stitch`); a component the stitch cannot follow is unioned with GEOS,
    which is exact on these integer coordinates but overlays every vertex (it was 55 % of an
    8192² run)."""
    order = np.argsort(component, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(component[order])) + 1)
    sizes = np.bincount(component)
    geoms = np.empty(len(groups), dtype=object)
    single = sizes == 1
    geoms[single] = pieces.geoms[order[np.r_[0, np.cumsum(sizes)[:-1]][single]]]
    joined = ~single[component]
    if joined.any():
        multi = np.flatnonzero(~single)
        vertices = np.bincount(
            component, weights=shapely.get_num_coordinates(pieces.geoms), minlength=len(sizes)
        )[multi]
        # components in batches of about STITCH_VERTICES vertices: the stitch's working arrays
        # are a few hundred bytes a vertex, and one batch of every border piece of an 8192²
        # map (2.4 M vertices) tripled the run's peak memory
        batch = (np.cumsum(vertices) - vertices) // STITCH_VERTICES
        for b in np.unique(batch):
            mine = multi[batch == b]
            local = np.full(len(sizes), -1)
            local[mine] = np.arange(len(mine))
            chosen = local[component] >= 0
            stitched, ok = stitch(pieces.geoms[chosen], local[component[chosen]], cols, rows)
            geoms[mine[ok]] = stitched[ok]
            for k in mine[~ok]:
                log.debug("component of %d border pieces unioned by GEOS", sizes[k])
                geoms[k] = shapely.simplify(shapely.union_all(pieces.geoms[groups[k]]), 0)
    return Pieces(
        geoms,
        np.array([pieces.values[i[0]] for i in groups], np.int64),
        np.array([pieces.counts[i].sum() for i in groups], np.int64),
        np.array([pieces.prob_sums[i].sum() for i in groups], np.float64),
    )


def components(n: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Connected component of each of ``n`` nodes linked by the pairs ``left``-``right``,
    numbered in the order of each component's lowest node (as scipy's connected_components
    numbers them, whose import alone was a tenth of a one-class vectorize run).

    Every node points at the lowest node it is known to be connected to; links pull both ends
    down to the lower pointer and pointers are followed to their end, until nothing changes
    (a few rounds: border pieces form short chains across block borders).
    """
    return np.unique(_lowest(np.arange(n), left, right), return_inverse=True)[1]


def _lowest(root: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """``root`` (each node's lowest known connected node, pointing at itself for a component's
    lowest) updated with the links ``left``-``right``: links pull both ends and their roots
    down to the lower root and pointers are followed to their end, until nothing changes.
    (Pulling the roots too is what lets nodes linked earlier follow: :class:`Border` links
    pieces a block at a time and does not see the earlier links again.)"""
    while True:
        low = np.minimum(root[left], root[right])
        before = root.copy()
        for ends in (left, right, before[left], before[right]):
            np.minimum.at(root, ends, low)
        while True:  # pointer jumping: every node straight to its root
            jumped = root[root]
            if np.array_equal(jumped, root):
                break
            root = jumped
        if np.array_equal(root, before):
            return root
