"""Join pixel polygons cut by block borders, in raster space (no geometric union).

Pieces traced block by block have integer corners in global pixel coordinates. The union of
pieces that share edges is found from their edges alone: with every ring oriented so the
polygon lies on its left, an edge shared by two pieces of one component appears once in each
direction and cancels; the edges left over are the union's boundary, and following them
end to start gives its rings. This is linear in the number of vertices and runs in numpy,
where GEOS's ``union_all`` nodes and overlays every vertex (55 % of an 8192² run, issue 11).

Only edges on block borders can be shared, so only those are cut into unit steps before
cancelling; every vertex that lies on a straight run afterwards is dropped, as GDAL never
emits one. Rings are *minimal*, as GEOS builds them: where a boundary passes a pixel corner
twice (two pixels of the polygon, or two holes, touching only diagonally), it is split there
into two rings that touch at that point, never one ring that touches itself.

Anything unexpected (a component without exactly one outer ring, or corner degrees a pixel
grid cannot have) is reported back so the caller can union those components with GEOS.
"""

from __future__ import annotations

import numpy as np
import shapely


def stitch(
    geoms: np.ndarray, component: np.ndarray, col_lines: np.ndarray, row_lines: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One polygon per component from pieces that share edges on block borders.

    Args:
        geoms: polygons in global pixel coordinates (integer corners).
        component: ``0..k-1`` for each polygon; pieces of one component are joined.
        col_lines, row_lines: x of the vertical and y of the horizontal block borders
            (where pieces of one component may share edges).

    Returns:
        ``(polygons, ok)``: ``k`` polygons (None where ``ok`` is False: union those with GEOS).
    """
    k = int(component.max()) + 1 if len(component) else 0
    out = np.full(k, None, dtype=object)
    ok = np.ones(k, bool)
    if k == 0:
        return out, ok
    x0, y0, x1, y1, comp = segments(shapely.orient_polygons(geoms, exterior_cw=False), component)
    x0, y0, x1, y1, comp = _unit_steps_on_lines(x0, y0, x1, y1, comp, col_lines, row_lines)
    keep = _uncancelled(x0, y0, x1, y1, comp)
    x0, y0, x1, y1, comp = x0[keep], y0[keep], x1[keep], y1[keep], comp[keep]
    while True:  # components whose corners are not a pixel grid's go to GEOS
        start, end = _corner_keys(x0, y0, x1, y1, comp)
        nxt, bad = _successors(start, end, x0, y0, x1, y1)
        shared = np.bincount(nxt, minlength=len(nxt)) != 1  # not one ring through each
        wrong = np.unique(np.r_[comp[bad], comp[shared]])
        if not len(wrong):
            break
        ok[wrong] = False
        keep = ok[comp]
        x0, y0, x1, y1, comp = x0[keep], y0[keep], x1[keep], y1[keep], comp[keep]
        if not len(comp):
            return out, ok
    ring, rank = _rings(nxt, start)
    del nxt, start, end, bad, shared, x1, y1  # memory: this is linear, but per vertex
    order = np.lexsort((rank, ring))
    del rank
    x, y, ring, comp = x0[order], y0[order], ring[order], comp[order]
    del x0, y0, order
    starts = np.flatnonzero(np.r_[True, ring[1:] != ring[:-1]])
    ring_comp = comp[starts]
    del ring, comp
    x, y, starts, ring_comp = _drop_straight(x, y, starts, ring_comp)
    area = _signed_areas(x, y, starts)
    shells = np.bincount(ring_comp, weights=area > 0, minlength=k)
    ok &= shells == 1
    good = ok[ring_comp]
    # each polygon: its one outer ring (positive area) first, then its holes
    rings = np.flatnonzero(good)
    rings = rings[np.lexsort((area[rings] < 0, ring_comp[rings]))]
    if len(rings):
        sizes = np.diff(np.r_[starts, len(x)])[rings]
        take = _closed(ranges(starts[rings], sizes), sizes)
        xy = np.column_stack([x[take], y[take]]).astype(np.float64)
        ring_offsets = np.r_[0, np.cumsum(sizes + 1)]
        comps = ring_comp[rings]
        poly_offsets = np.r_[0, np.flatnonzero(comps[1:] != comps[:-1]) + 1, len(comps)]
        polys = shapely.from_ragged_array(
            shapely.GeometryType.POLYGON, xy, (ring_offsets, poly_offsets)
        )
        out[np.unique(comps)] = polys
    return out, ok


def segments(geoms: np.ndarray, component: np.ndarray):
    """Every ring segment of ``geoms`` as (x0, y0, x1, y1, ``component`` of its polygon),
    int64, in ring order."""
    _, coords, (ring_off, poly_off) = shapely.to_ragged_array(geoms)
    xy = np.rint(coords).astype(np.int64)
    poly_of_ring = np.repeat(np.arange(len(poly_off) - 1), np.diff(poly_off))
    last = np.zeros(len(xy), bool)
    last[ring_off[1:] - 1] = True  # a ring's closing vertex starts no segment
    start = np.flatnonzero(~last)
    ring_of_vertex = np.repeat(np.arange(len(ring_off) - 1), np.diff(ring_off))
    comp = component[poly_of_ring[ring_of_vertex[start]]].astype(np.int64)
    return xy[start, 0], xy[start, 1], xy[start + 1, 0], xy[start + 1, 1], comp


def _unit_steps_on_lines(x0, y0, x1, y1, comp, col_lines, row_lines):
    """Cut the segments lying on a block border into unit steps (so shared ones match)."""
    on = ((x0 == x1) & np.isin(x0, col_lines)) | ((y0 == y1) & np.isin(y0, row_lines))
    length = np.where(on, np.abs(x1 - x0) + np.abs(y1 - y0), 1)
    reps = np.repeat(np.arange(len(x0)), length)
    step = np.arange(len(reps)) - np.repeat(np.cumsum(length) - length, length)
    dx, dy = np.sign(x1 - x0)[reps], np.sign(y1 - y0)[reps]
    sx, sy = x0[reps] + dx * step, y0[reps] + dy * step
    whole = ~on[reps]
    ex = np.where(whole, x1[reps], sx + dx)
    ey = np.where(whole, y1[reps], sy + dy)
    return sx, sy, ex, ey, comp[reps]


def _uncancelled(x0, y0, x1, y1, comp) -> np.ndarray:
    """False for the segments that appear in both directions within one component."""
    width = int(max(x0.max(), x1.max())) + 1
    a, b = y0 * width + x0, y1 * width + x1
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    order = np.lexsort((hi, lo, comp))
    same = (
        (comp[order][1:] == comp[order][:-1])
        & (lo[order][1:] == lo[order][:-1])
        & (hi[order][1:] == hi[order][:-1])
    )
    dup = np.zeros(len(order), bool)
    dup[1:] |= same
    dup[:-1] |= same
    keep = np.ones(len(x0), bool)
    keep[order[dup]] = False
    return keep


def _corner_keys(x0, y0, x1, y1, comp) -> tuple[np.ndarray, np.ndarray]:
    """One int64 per (component, corner) for the start and the end of every segment."""
    width = int(max(x0.max(), x1.max())) + 1
    span = width * (int(max(y0.max(), y1.max())) + 1)
    if (int(comp.max()) + 1) * span >= 2**62:
        raise OverflowError("raster too large for one int64 key per corner")
    return comp * span + y0 * width + x0, comp * span + y1 * width + x1


def _successors(start, end, x0, y0, x1, y1):
    """The segment that follows each one (same component, starting where it ends).

    At a corner two polygon pixels touch only diagonally (two segments leave it) the left
    turn is taken, which keeps the same pixel on the left; :func:`_rings` then splits any
    ring that passes such a corner twice. Returns ``(next, indices of bad segments)``.
    """
    order = np.argsort(start, kind="stable")
    sorted_keys = start[order]
    first = np.searchsorted(sorted_keys, end, "left")
    count = np.searchsorted(sorted_keys, end, "right") - first
    bad = np.flatnonzero((count < 1) | (count > 2))
    first = np.minimum(first, len(order) - 1)
    cand = order[first]
    two = count == 2
    if two.any():
        other = order[np.minimum(first + 1, len(order) - 1)]
        # left of (dx, dy) with the polygon on the left (counter-clockwise shells)
        lx, ly = -np.sign(y1 - y0), np.sign(x1 - x0)
        cand_left = (np.sign(x1[cand] - x0[cand]) == lx) & (np.sign(y1[cand] - y0[cand]) == ly)
        cand = np.where(two & ~cand_left, other, cand)
    return cand, bad


def _cycles(nxt: np.ndarray) -> np.ndarray:
    """Lowest segment index of the cycle each segment is on.

    Pointer doubling: after r rounds a label is the minimum of the next 2^r segments; once
    labels agree along every cycle each one is its cycle's minimum (log2 of the longest
    ring rounds).
    """
    label = np.arange(len(nxt))
    step = nxt
    while not np.array_equal(label, label[nxt]):
        label = np.minimum(label, label[step])
        step = step[step]
    return label


def _rings(nxt: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ring label, position in ring) of every segment, rings split at diagonal touches."""
    ring = _cycles(nxt)
    order = np.argsort(start, kind="stable")
    pinch = np.flatnonzero(np.r_[start[order][1:] == start[order][:-1], False])
    if len(pinch):
        # the two segments leaving a corner passed twice, and the two arriving there
        a, b = order[pinch], order[pinch + 1]
        prev = np.empty_like(nxt)
        prev[nxt] = np.arange(len(nxt))
        pa, pb = prev[a], prev[b]
        twice = ring[pa] == ring[pb]
        if twice.any():  # one ring through this corner twice: split it there
            nxt = nxt.copy()
            nxt[pa[twice]], nxt[pb[twice]] = nxt[pb[twice]], nxt[pa[twice]]
            ring = _cycles(nxt)
    return ring, _rank(nxt, ring)


def _rank(nxt: np.ndarray, ring: np.ndarray) -> np.ndarray:
    """Steps from the ring's lowest segment along ``nxt`` (list ranking by doubling)."""
    n = len(nxt)
    prev = np.empty(n, np.int64)
    prev[nxt] = np.arange(n)
    head = ring == np.arange(n)
    prev[head] = np.flatnonzero(head)
    dist = (~head).astype(np.int64)
    while True:
        jump = prev[prev]
        if np.array_equal(jump, prev):
            return dist
        dist = dist + dist[prev]
        prev = jump


def _drop_straight(x, y, starts, ring_comp):
    """Drop the vertices in the middle of a straight run (ring order, cyclic)."""
    n = len(x)
    ends = np.r_[starts[1:], n]
    ring_of = np.repeat(np.arange(len(starts)), ends - starts)
    idx = np.arange(n)
    prv = np.where(idx == starts[ring_of], ends[ring_of] - 1, idx - 1)
    nxt = np.where(idx == ends[ring_of] - 1, starts[ring_of], idx + 1)
    # a corner: the step in differs from the step out (one axis at a time: two arrays of
    # steps, not four, held at once)
    corner = np.sign(x - x[prv]) != np.sign(x[nxt] - x)
    corner |= np.sign(y - y[prv]) != np.sign(y[nxt] - y)
    del prv, nxt, idx
    x, y, ring_of = x[corner], y[corner], ring_of[corner]
    kept = np.bincount(ring_of, minlength=len(starts))
    new_starts = np.r_[0, np.cumsum(kept)[:-1]]
    alive = kept > 0
    return x, y, new_starts[alive], ring_comp[alive]


def _signed_areas(x, y, starts) -> np.ndarray:
    """Shoelace area of each ring (positive: counter-clockwise, an outer ring here)."""
    n = len(x)
    ends = np.r_[starts[1:], n]
    ring_of = np.repeat(np.arange(len(starts)), ends - starts)
    idx = np.arange(n)
    nxt = np.where(idx == ends[ring_of] - 1, starts[ring_of], idx + 1)
    cross = (x * y[nxt] - x[nxt] * y).astype(np.float64)
    return np.bincount(ring_of, weights=cross, minlength=len(starts)) / 2


def ranges(starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """``starts[i] .. starts[i] + sizes[i] - 1`` for every i, concatenated."""
    shift = np.repeat(starts - (np.cumsum(sizes) - sizes), sizes)
    return np.arange(int(sizes.sum())) + shift


def _closed(take: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Indices of each ring with its first vertex repeated at the end."""
    ends = np.cumsum(sizes)
    firsts = take[ends - sizes]
    return np.insert(take, ends, firsts)
