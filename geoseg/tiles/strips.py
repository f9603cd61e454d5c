"""One pass over a scene for :func:`geoseg.tiles.writer.tile`: strips of tile rows, each read
once, sliced into its overlapping tiles, counted and written; lanes that chain them.

- a task is a *strip*: the tile rows whose bottom edge falls in a band of whole source block
  rows, in one column group; it reads that band once through a dataset kept open by its
  thread, slices the overlapping tiles out of it, and writes them encoded by
  :mod:`geoseg.tiles.chunks`: into shard files of consecutive tiles in a local store (a shard
  shared with another strip is written by whichever strip completes it), else as whole chunks;
- strips are chained in *lanes*: each strip hands the rows its successor shares (the tile
  overlap) over, so no block is decoded twice inside a lane; a lane finishes every column
  group of a band before the next band, so shards complete band by band; lanes run in
  parallel on local threads (or as dask tasks on a dask.distributed cluster);
- each strip returns exact per-band histograms of the pixels it owns and the valid count of
  each of its tiles (:mod:`geoseg.tiles.stats` merges them), so there is no statistics
  pre-scan.

The writer owns the store (its creation, resume rule and attributes); this module only fills
it, given a ``job`` (scenes, bands, store URL, which window goes to which store index, which
tiles are still to write).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from geoseg.io.labels import Grid, LabelReader, class_column
from geoseg.io.layouts import Scene
from geoseg.io.rasters import StackReader
from geoseg.tiles.chunks import ChunkFiles, ShardAssembler
from geoseg.tiles.grid import tile_starts
from geoseg.tiles.stats import histogram


def scene_reader(scene: Scene) -> StackReader:
    """The scene's files opened as one band stack."""
    return StackReader(scene.images, scene.descriptions)


#: source rows a strip task reads at least (rounded up to whole source blocks): a few MiB of
#: pixels per task, enough to amortise GDAL and zarr call overheads
STRIP_ROWS = 512
#: widest column group of one task, in pixels (wider scenes are split into column groups so a
#: task's memory stays bounded by this, not by the scene's width)
GROUP_COLS = 8192
#: bands of rows per lane: a lane is a chain of strip tasks, each handing the rows its
#: successor in the same column group shares (the tile overlap) over, so no source block is
#: read twice inside a lane
LANE_STRIPS = 8


_readers = threading.local()
_done_lock = threading.Lock()
#: the shard assembler of each running tile() (by run token), shared by its strip threads
assemblers: dict[str, ShardAssembler] = {}


@dataclass(frozen=True)
class Strip:
    """One task: the tile rows whose bottom edge falls in source rows ``(fresh0, fresh1]`` of
    one scene and column group, and everything needed to read, slice and write them."""

    scene: int
    rows: tuple[int, ...]  # tile row origins produced by this strip
    cols: tuple[int, ...]  # tile column origins of the column group
    fresh: tuple[int, int]  # source rows read here [fresh0, fresh1) (after a carry)
    read_cols: tuple[int, int]  # source columns read [c0, c1) (past the edge: padding)
    own_rows: tuple[int, int]  # rows whose pixels the statistics count here
    own_cols: tuple[int, int]
    index: tuple[tuple[int, ...], ...]  # store index per (row, col), -1 = not kept/skipped


def plan(
    scene: int,
    height: int,
    width: int,
    tile_size: int,
    overlap: int,
    *,
    block_rows: int,
    first_index: int,
    lanes_min: int,
) -> list[list[Strip]]:
    """Lanes of strips for one scene (at least ``lanes_min`` when it has that many bands of
    rows, so every worker has a lane); tile indices are row-major from ``first_index``.

    A scene wider than :data:`GROUP_COLS` is cut into column groups of even width (a group
    of one tile column was a task too small to pay its overheads). A lane runs its bands of
    rows in order and, within a band, every column group before the next band: a shard holds
    consecutive (row-major) tiles, so its tiles come from every group of one band, and it is
    written as soon as that band is done. Lanes of whole groups had kept every shard waiting
    for the last group's lane: 275 MiB of encoded tiles at 8192² (issue 11).
    """
    stride = tile_size - overlap
    row_starts = tile_starts(height, tile_size, stride)
    col_starts = tile_starts(width, tile_size, stride)
    ncols = len(col_starts)
    step = block_rows * max(1, -(-max(STRIP_ROWS, tile_size) // block_rows))
    edges = [*range(0, height, step)][1:] + [max(height, 1)]
    widest = max(1, (GROUP_COLS - overlap) // stride)
    n_groups = -(-ncols // widest)
    bounds = np.linspace(0, ncols, n_groups + 1).round().astype(int)
    groups = [(int(a), col_starts[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    bands, lo = [], 0
    for hi in edges:
        rows = [r for r in row_starts if lo < min(r + tile_size, height) <= hi]
        band = []
        for j0, cols in groups:
            c0, c1 = cols[0], cols[-1] + tile_size
            own_cols = (c0, col_starts[j0 + len(cols)] if j0 + len(cols) < ncols else width)
            if rows:
                i0 = row_starts.index(rows[0])
                i1 = i0 + len(rows)
                own = (rows[0], row_starts[i1] if i1 < len(row_starts) else height)
                index = tuple(
                    tuple(first_index + i * ncols + j0 + j for j in range(len(cols)))
                    for i in range(i0, i1)
                )
            else:
                own, index = (lo, lo), ()
            band.append(
                Strip(scene, tuple(rows), tuple(cols), (lo, hi), (c0, c1), own, own_cols, index)
            )
        bands.append(band)
        lo = hi
    n_lanes = max(min(lanes_min, len(bands)), -(-len(bands) // LANE_STRIPS))
    cuts = np.linspace(0, len(bands), n_lanes + 1).round().astype(int)
    return [
        [strip for band in bands[a:b] for strip in band]
        for a, b in zip(cuts[:-1], cuts[1:], strict=True)
        if b > a
    ]


def _thread_reader(scene: Scene, token: str) -> StackReader:
    """This thread's open reader of ``scene`` for the run ``token`` (one dataset per thread,
    kept open across tasks so GDAL's block cache and file handle are reused)."""
    cache = getattr(_readers, "cache", None)
    if cache is None or cache[0] != token:
        if cache is not None:
            for reader in cache[1].values():
                reader.close()
        cache = _readers.cache = (token, {})
        with _done_lock:
            _open_readers.append((token, cache[1]))
    key = tuple(scene.images)
    if key not in cache[1]:
        cache[1][key] = scene_reader(scene)
    return cache[1][key]


_open_readers: list[tuple[str, dict]] = []


def _close_readers(token: str) -> None:
    """Close every thread's readers of a finished run (their threads are idle by then)."""
    with _done_lock:
        mine = [r for t, r in _open_readers if t == token]
        _open_readers[:] = [(t, r) for t, r in _open_readers if t != token]
    for readers in mine:
        for reader in readers.values():
            reader.close()
        readers.clear()


def _strip(job: dict, strip: Strip, carry, write: bool) -> tuple[dict, tuple]:
    """Read one strip (after the rows ``carry`` hands over), write its tiles, count its pixels.

    Returns ``(summary, carry for the next strip)``: ``summary`` holds the per-band
    histograms of the pixels this strip owns and the valid count of each of its tiles.
    """
    from rasterio.windows import Window

    scene = job["scenes"][strip.scene]
    reader = _thread_reader(scene, job["token"])
    bands, nodata, t = job["bands"], job["nodata"], job["tile_size"]
    (f0, f1), (c0, c1) = strip.fresh, strip.read_cols
    start = strip.rows[0] if strip.rows else f0
    if carry is not None and carry[0] <= start and carry[1] == f0:
        top, _, data0, valid0 = carry
        lo = f0
        parts = [(data0[:, start - top :], valid0[start - top :])]
    else:  # a lane's first strip reads the shared rows itself
        lo, parts = start, []
    bottom = max(f1, strip.rows[-1] + t) if strip.rows else f1
    if bottom > lo:
        parts.append(reader.read(Window(c0, lo, c1 - c0, bottom - lo), bands, nodata))
    data = np.concatenate([p[0] for p in parts], axis=1) if len(parts) > 1 else parts[0][0]
    valid = np.concatenate([p[1] for p in parts], axis=0) if len(parts) > 1 else parts[0][1]
    # statistics: every owned pixel once, over the rows and columns this strip owns
    (o0, o1), (p0, p1) = strip.own_rows, strip.own_cols
    own_valid = valid[o0 - start : o1 - start, p0 - c0 : p1 - c0]
    every = bool(own_valid.all())  # the usual case: no mask to apply (saves a copy per band)
    owned = data[:, o0 - start : o1 - start, p0 - c0 : p1 - c0]
    hists = [
        histogram(owned[b] if every else owned[b][own_valid], data.dtype) for b in range(len(bands))
    ]
    counts = [  # count_nonzero: 5x faster than a bool array's sum, the same count
        [
            np.count_nonzero(valid[r - start : r - start + t, c - c0 : c - c0 + t])
            for c in strip.cols
        ]
        for r in strip.rows
    ]
    if write:
        _write_tiles(job, strip, scene, reader, data, valid, start)
    # the next strip's first tile starts less than a tile above this strip's last row
    keep = min(max(start, f1 - t), f1)
    # copies, not views: a view kept this whole strip alive beside the next one, in every
    # column group of the lane (~48 MiB at 8192²)
    handover = (
        keep,
        f1,
        data[:, keep - start : f1 - start].copy(),
        valid[keep - start : f1 - start].copy(),
    )
    return {"hists": hists, "counts": counts, "index": strip.index}, handover


def _write_tiles(job, strip: Strip, scene: Scene, reader, data, valid, start: int) -> None:
    """Write the strip's kept tiles that this run still has to write, then their ``done``
    flags: into shards (:class:`~geoseg.tiles.chunks.ShardAssembler`) or, in a store of one
    tile per chunk, as runs of consecutive store indices (whole chunks per call)."""
    import zarr
    from rasterio.windows import Window

    t, c0 = job["tile_size"], strip.read_cols[0]
    store_index, fresh = job["write"], job["fresh"]  # window -> store index; still to write
    tiles = [
        (r, c, int(store_index[w]))
        for r, row_index in zip(strip.rows, strip.index, strict=True)
        for c, w in zip(strip.cols, row_index, strict=True)
        if store_index[w] >= 0 and fresh[store_index[w]]
    ]
    label_reader = None
    if job["labels"] is not None and scene.label:
        column = class_column(scene.label)
        label_reader = LabelReader(
            scene.label, Grid.of(reader.src), column=column, classes=job["labels"]
        )

    def cut(r: int, c: int) -> dict[str, np.ndarray]:
        out = {
            "image": data[:, r - start : r - start + t, c - c0 : c - c0 + t],
            "valid": valid[r - start : r - start + t, c - c0 : c - c0 + t],
        }
        if label_reader is not None:
            out["label"] = label_reader.read(Window(c, r, t, t))
        return out

    written = []
    try:
        assembler = assemblers.get(job["token"])
        if assembler is not None:
            _write_shards(assembler, tiles, cut)
        else:
            group = zarr.open_group(job["url"], mode="r+")
            names = ["image", "valid"] + (["label"] if label_reader is not None else [])
            arrays = {name: ChunkFiles(group[name]) for name in names}
            for run in _runs([((r, c), i) for r, c, i in tiles]):
                i0 = run[0][1]
                pieces = [cut(r, c) for (r, c), _ in run]
                for name, array in arrays.items():
                    array.put(i0, [p[name] for p in pieces])
                written.append((i0, i0 + len(run)))
    finally:
        if label_reader is not None:
            label_reader.close()
    if written:
        done = zarr.open_group(job["url"], mode="r+")["done"]
        with _done_lock:  # flags share chunks across strips; a lost flag would only redo a strip
            for i0, i1 in written:
                done[i0:i1] = True


def _write_shards(assembler: ShardAssembler, tiles, cut) -> None:
    """Encode ``tiles`` (``(row, col, store index)``) and hand them to ``assembler`` shard by
    shard (the strip that completes a shard writes it and its ``done`` flags)."""
    size = assembler.tiles
    by_shard: dict[int, tuple[dict[str, dict[int, object]], list[int]]] = {}
    for r, c, i in tiles:
        parts, count = by_shard.setdefault(i // size, ({}, [0]))
        for name, tile in cut(r, c).items():
            parts.setdefault(name, {})[i % size] = assembler.arrays[name].encode_tile(tile)
        count[0] += 1
    for shard, (parts, count) in by_shard.items():
        assembler.add(shard, parts, count[0])


def fill_counts(n_valid: np.ndarray, summaries: list[dict]) -> None:
    """Scatter the strips' per-tile valid counts into ``n_valid`` (by window index)."""
    for m in summaries:
        for row_index, row_counts in zip(m["index"], m["counts"], strict=True):
            n_valid[list(row_index)] = row_counts


def block_rows(scene: Scene) -> int:
    """Rows of one block of the scene's (first) file: strips read whole block rows."""
    with scene_reader(scene) as reader:
        return int(reader.src.block_shapes[0][0])


def cores() -> int:
    """The cores this process may run on: one lane per core at least."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _runs(pairs: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """Split ``(col, store index)`` pairs into runs of consecutive store indices."""
    runs: list[list[tuple[int, int]]] = []
    for pair in pairs:
        if runs and pair[1] == runs[-1][-1][1] + 1:
            runs[-1].append(pair)
        else:
            runs.append([pair])
    return runs


def run(lanes, job: dict, scheduler, desc: str, write=None) -> list[dict]:
    """Run the strips of every lane, chained within a lane (each hands its overlap rows to
    the next); their summaries, lane after lane.

    ``write(strip)`` says whether a strip writes its tiles (else it only counts); a strip
    whose ``write`` is ``None`` is left out (nothing to do there).

    On this machine the lanes run on a plain thread pool, one lane per call: they need no
    task graph, and importing dask was ~0.2 s of CPU of a ``geoseg tile`` process (the 4096²
    scene's whole run is ~1.2 s). dask is used for a dask.distributed ``--scheduler`` only.
    """
    from geoseg.progress import scheduler_address

    plans = [[(st, write(st) if write is not None else False) for st in lane] for lane in lanes]
    try:
        if scheduler_address(scheduler):
            return _run_on_cluster(plans, job, scheduler, desc)
        workers = 1 if scheduler == "sync" else cores()
        return _run_locally(plans, job, workers, desc)
    finally:
        _close_readers(job["token"])


def _run_lane(job: dict, lane, stop: threading.Event, bar) -> list[dict]:
    """One lane's strips in order, each taking the rows its predecessor in the same column
    group handed over; a strip left out (nothing to do) breaks its group's chain. Stops
    between strips once ``stop`` is set."""
    carry: dict[int, tuple] = {}  # by the group's first column
    out = []
    for strip, flag in lane:
        if stop.is_set():
            break
        if flag is None:
            carry.pop(strip.read_cols[0], None)
            continue
        summary, carry[strip.read_cols[0]] = _strip(job, strip, carry.get(strip.read_cols[0]), flag)
        out.append(summary)
        bar.update(1)
    return out


def _run_locally(plans, job: dict, workers: int, desc: str) -> list[dict]:
    """The lanes on ``workers`` local threads (in this thread for one). A failure, or Ctrl-C,
    stops every lane after its current strip and is raised (done flags keep the store
    resumable)."""
    from geoseg.progress import progress

    stop = threading.Event()
    total = sum(flag is not None for plan in plans for _, flag in plan)
    with progress(total=total, desc=desc, unit="strip") as bar:
        if workers <= 1:
            return [m for plan in plans for m in _run_lane(job, plan, stop, bar)]
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="geoseg-tile")
        try:
            futures = [pool.submit(_run_lane, job, plan, stop, bar) for plan in plans]
            return [m for future in futures for m in future.result()]
        except BaseException:
            stop.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _run_on_cluster(plans, job: dict, scheduler, desc: str) -> list[dict]:
    """The strips as dask tasks on a dask.distributed cluster, chained within a lane."""
    import dask

    from geoseg.progress import run_tasks

    task = dask.delayed(_strip, pure=False, nout=2)
    summaries = []
    for plan in plans:
        carry: dict = {}  # by the group's first column, as in _run_lane
        for strip, flag in plan:
            if flag is None:
                carry.pop(strip.read_cols[0], None)
                continue
            summary, carry[strip.read_cols[0]] = task(
                job, strip, carry.get(strip.read_cols[0]), flag
            )
            summaries.append(summary)
    return run_tasks(summaries, scheduler=scheduler, desc=desc)
