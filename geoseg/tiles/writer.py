"""Writing the Zarr tile store in one pass (resumable); the window grid is
:mod:`geoseg.tiles.grid`, reading is :mod:`geoseg.tiles.store`.

A store holds every training tile of one or more scenes (layout in docs/contracts.md). It is
written in ONE pass over the scene, so memory is bounded by a strip of rows, never a scene,
and every source pixel is read and decoded about once (the floor any tiler pays):

- a task is a *strip*: the tile rows whose bottom edge falls in a band of whole source block
  rows; it reads that band once through a dataset kept open by its thread, slices the
  overlapping tiles out of it, and writes them encoded by :mod:`geoseg.tiles.chunks`: into
  shard files of consecutive tiles in a local store (a shard shared with the next strip is
  written by whichever strip completes it), else as whole chunks;
- strips are chained in *lanes*: each strip hands the rows its successor shares (the tile
  overlap) over, so no block is decoded twice inside a lane; lanes run in parallel;
- statistics are accumulated while writing (:mod:`geoseg.tiles.stats`): each strip returns
  exact per-band histograms of the pixels it owns (every pixel counted once, overlaps not
  double counted) and the valid count of each tile; they are merged at the end, so there is
  no statistics pre-scan.

``--min-valid`` decides the store's length, so with it the strips run twice: counting, then
writing the kept tiles.

Resume rule: every strip sets its tiles' ``done`` flags last (in a sharded store, a shard's
flags are set when the shard is written, so a shard is rewritten whole if one of its tiles
lacks its flag), and the group attribute
``complete`` turns true only at the end. A local store is written under the hidden name
``.<name>.partial`` and renamed when complete; rerunning the same command on an interrupted
run finds that partial store (or an incomplete store at a URL) and writes only the strips
whose flags are missing (the others are read for the statistics only). ``overwrite=True``
always starts from scratch.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import uuid
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geoseg import __version__
from geoseg.errors import BadInput, OutputExists
from geoseg.io.bands import band_names, resolve_bands
from geoseg.io.coverage import check_labels_cover
from geoseg.io.fingerprint import check_unchanged, fingerprint
from geoseg.io.labels import Grid, LabelReader, class_column, label_classes
from geoseg.io.layouts import Scene, find_scenes
from geoseg.io.rasters import StackReader, check_readable
from geoseg.lock import locked_output
from geoseg.paths import check_output, remove
from geoseg.tiles.chunks import ChunkFiles, ShardAssembler, shard_tiles, sharded
from geoseg.tiles.grid import TileGrid, tile_starts, tile_windows
from geoseg.tiles.stats import band_stats, histogram, merge_hist
from geoseg.tiles.store import TileStore, is_url, open_store

log = logging.getLogger(__name__)

BATCH = 16  # done flags per chunk in a store of one tile per chunk (sharded: one per shard)


# --- sources --------------------------------------------------------------------------------


def _reader(scene: Scene) -> StackReader:
    return StackReader(scene.images, scene.descriptions)


def _source_attrs(scene: Scene, pool: ThreadPoolExecutor) -> tuple[dict, Future]:
    """The scene's ``sources`` entry, checked readable, and its files' fingerprints (a future).

    The fingerprints decode a few blocks of each raster, and the readability check decodes
    the last row of blocks: both were serial before the strips start (0.1 s of CPU each on
    the 4096² NAIP scene), so the fingerprints are taken on ``pool``'s thread meanwhile, once
    the files have opened (a file that does not open is named here first).
    """
    reader = _reader(scene)
    try:
        src = reader.src
        prints = pool.submit(lambda: [fingerprint(p) for p in scene.images])
        for ds in reader.datasets:  # a truncated file fails here, named, before any writing
            check_readable(ds)
        if scene.label:
            # a label grid mismatch fails before writing
            LabelReader(scene.label, Grid.of(src), column=class_column(scene.label)).close()
        return {
            "path": scene.path,
            "paths": list(scene.images),
            "name": scene.name,
            "crs": src.crs.to_wkt() if src.crs else None,
            "transform": list(src.transform)[:6],
            "width": src.width,
            "height": src.height,
            "nodata": src.nodata,
            "dtype": src.dtypes[0],
            "count": len(reader.band_map),
            "descriptions": list(reader.descriptions),
            "label": scene.label,
        }, prints
    finally:
        reader.close()


# --- one pass: strips of tile rows, read once, written as whole batches --------------------

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


def _image_codec() -> list:
    """The image tiles' codecs after their bytes (zarr is imported here: a heavy import): no
    compression, only a crc32c checksum of each tile.

    Encoding was the largest cost of tiling after reading (the overlaps make the tiles 1.3x
    the scene). On the 4096² NAIP scene (issue 11), per tile: Blosc zstd-1 (the codec before
    issue 11) 1.78 ms of CPU, Blosc LZ4 0.45-0.49 ms, the checksum of the raw bytes 0.03 ms;
    ``geoseg tile`` used ~0.15 s less CPU (of ~1.1 s) raw than with LZ4. What compression
    bought: NAIP uint8 image arrays 65 MB with zstd-1, 84 MB with LZ4, 95 MB raw; Atlanta
    uint16 1.5 MB with LZ4 vs 2.1 MB raw; Quebec RGB the same either way. A tile store is a
    staging copy for training, which now reads tiles without decoding them.

    The checksum is what makes any fast codec safe: Blosc stores a chunk it cannot shrink
    raw, and a raw chunk cut short (a partial copy) decoded into garbage without an error; a
    damaged or truncated tile now fails its checksum and is named as damaged
    (tests/test_reliability_errors.py). Stores written with another codec (Blosc zstd-1 up
    to issue 11) stay readable and resumable: a chunk is always encoded with its own array's
    codecs.
    """
    from zarr.codecs import Crc32cCodec

    return [Crc32cCodec()]


_readers = threading.local()
_done_lock = threading.Lock()
#: the shard assembler of each running tile() (by run token), shared by its strip threads
_assemblers: dict[str, ShardAssembler] = {}


@dataclass(frozen=True)
class _Strip:
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


def _plan_strips(
    scene: int,
    height: int,
    width: int,
    tile_size: int,
    overlap: int,
    *,
    block_rows: int,
    first_index: int,
    lanes_min: int,
) -> list[list[_Strip]]:
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
                _Strip(scene, tuple(rows), tuple(cols), (lo, hi), (c0, c1), own, own_cols, index)
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
        cache[1][key] = _reader(scene)
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


def _strip(job: dict, strip: _Strip, carry, write: bool) -> tuple[dict, tuple]:
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


def _write_tiles(job, strip: _Strip, scene: Scene, reader, data, valid, start: int) -> None:
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
        assembler = _assemblers.get(job["token"])
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


def _fill_counts(n_valid: np.ndarray, summaries: list[dict]) -> None:
    """Scatter the strips' per-tile valid counts into ``n_valid`` (by window index)."""
    for m in summaries:
        for row_index, row_counts in zip(m["index"], m["counts"], strict=True):
            n_valid[list(row_index)] = row_counts


def _block_rows(scene: Scene) -> int:
    """Rows of one block of the scene's (first) file: strips read whole block rows."""
    with _reader(scene) as reader:
        return int(reader.src.block_shapes[0][0])


def _cores() -> int:
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


def _run_strips(lanes, job: dict, scheduler, desc: str, write=None) -> list[dict]:
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
        workers = 1 if scheduler == "sync" else _cores()
        return _run_locally(plans, job, workers, desc)
    finally:
        _close_readers(job["token"])


def _run_lane(job: dict, plan, stop: threading.Event, bar) -> list[dict]:
    """One lane's strips in order, each taking the rows its predecessor in the same column
    group handed over; a strip left out (nothing to do) breaks its group's chain. Stops
    between strips once ``stop`` is set."""
    carry: dict[int, tuple] = {}  # by the group's first column
    out = []
    for strip, flag in plan:
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


# --- tile(): the library function of `geoseg tile` ------------------------------------------


@locked_output("output")  # one writer per store: a second `geoseg tile` stops at once
def tile(
    inputs: Sequence[str | Path] | str | Path,
    output: str | Path,
    *,
    bands: str | Sequence[int | str] | None = None,
    tile_size: int | None = None,
    overlap: int | None = None,
    labels: str | Path | None = None,
    min_valid: float = 0.0,
    nodata: float | str | None = None,
    overwrite: bool = False,
    scheduler: str | None = None,
    allow_empty_labels: bool = False,
) -> TileStore:
    """Stage rasters into a Zarr v3 tile store (docs/contracts.md), resumably, in parallel.

    Args:
        inputs: raster files, folders or dataset roots (see :mod:`geoseg.io.layouts`).
        output: a local path or any fsspec URL (``memory://``, ``s3://``) of the store.
        bands: band selection (see :func:`geoseg.io.bands.resolve_bands`); all bands by default.
        tile_size: tile edge in pixels (default 256, :class:`~geoseg.tiles.grid.TileGrid`).
        overlap: pixels shared by neighbouring tiles (default 32, a quarter of tiles < 128).
        labels: a vector or raster labels file for every input (layouts may bring their own).
        min_valid: skip tiles whose valid fraction is below this (0 keeps every tile).
        nodata: override the sources' nodata (``"none"`` ignores it).
        overwrite: replace an existing store (and discard an interrupted one).
        scheduler: ``None``/``"threads"``, ``"sync"`` or a dask.distributed address.
        allow_empty_labels: ``labels`` that cover no input only warn (the store then has no
            labels) instead of being refused.

    Returns:
        The written store, opened for reading.

    Raises:
        BadInput: unreadable inputs, bad bands/sizes, or an existing output without overwrite.
    """
    grid = TileGrid.for_tiling(tile_size, overlap)
    tile_size, overlap = grid.size, grid.overlap
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    if not 0.0 <= min_valid <= 1.0:
        raise BadInput(f"{min_valid} is not a fraction in [0, 1]", param="--min-valid")
    scenes = find_scenes(inputs, labels=labels)
    if not scenes:
        raise BadInput("no input raster given; pass one or more GeoTIFFs or folders", param="INPUT")
    pool = ThreadPoolExecutor(1, thread_name_prefix="geoseg-fingerprint")
    try:
        sources, prints = zip(*(_source_attrs(s, pool) for s in scenes), strict=True)
    finally:
        pool.shutdown(wait=False)  # submitted fingerprints still run to the end
    sources = list(sources)
    first = sources[0]
    for s in sources[1:]:
        if (s["count"], s["dtype"]) != (first["count"], first["dtype"]):
            raise BadInput(
                f"{s['path']} has {s['count']} {s['dtype']} bands but {first['path']} has "
                f"{first['count']} {first['dtype']}; tile scenes of one sensor together",
                param="INPUT",
            )
    _check_inputs_and_output(scenes, output, nodata, first["dtype"])
    if labels is not None and not check_labels_cover(
        labels, sources, [s["name"] for s in sources], allow_empty=allow_empty_labels
    ):
        scenes, labels = [Scene(s.name, s.images, None, s.descriptions) for s in scenes], None
        for s in sources:
            s["label"] = None
    band_list = resolve_bands(first["descriptions"], bands)
    names = [band_names(first["descriptions"])[b - 1] for b in band_list]
    windows = [
        (i, r, c)
        for i, s in enumerate(sources)
        for r, c in tile_windows(s["height"], s["width"], tile_size, overlap)
    ]
    label_files = sorted({s.label for s in scenes if s.label})
    label_info = label_classes(label_files) if label_files else None
    params = {
        "inputs": [s["path"] for s in sources],
        "bands": band_list,
        "tile_size": tile_size,
        "overlap": overlap,
        "min_valid": min_valid,
        "nodata": None if nodata is None else str(nodata),
        "labels": None if labels is None else str(labels),
    }
    url, final = _target(output, overwrite)
    token = uuid.uuid4().hex
    lanes, first_index = [], 0
    for i, scene in enumerate(scenes):
        s = sources[i]
        lanes += _plan_strips(
            i,
            s["height"],
            s["width"],
            tile_size,
            overlap,
            block_rows=_block_rows(scene),
            first_index=first_index,
            lanes_min=_cores(),
        )
        first_index += len(tile_windows(s["height"], s["width"], tile_size, overlap))
    job = {
        "scenes": scenes,
        "bands": band_list,
        "nodata": nodata,
        "tile_size": tile_size,
        "url": url,
        "labels": label_info,
        "token": token,
        "write": None,
    }
    area = tile_size * tile_size
    attrs = {
        "params": params,
        "complete": False,
        "bands": band_list,
        "band_names": names,
        "sources": sources,
        "tile_size": tile_size,
        "overlap": overlap,
        "geoseg_version": __version__,
    }
    if label_info is not None:
        attrs["label_classes"] = label_info
    # what the store is made of, so a resume after a re-export is refused (docs/reliability.md)
    attrs["fingerprints"] = [f for p in prints for f in p.result()] + [
        fingerprint(p, raster=False) for p in label_files
    ]

    def todo(fresh: np.ndarray, store_index: np.ndarray):
        """A strip writes when one of its kept tiles is still to write; None: nothing to
        write."""

        def write(strip: _Strip) -> bool | None:
            idx = store_index[[w for row in strip.index for w in row]]
            idx = idx[idx >= 0]
            return None if not idx.size else bool(fresh[idx].any())

        return write

    n_valid = np.zeros(len(windows), np.int64)
    if min_valid > 0:
        # which tiles are kept decides the store's length: count first, then write the kept
        summaries = _run_strips(lanes, job, scheduler, "scan")
        _fill_counts(n_valid, summaries)
        kept = np.flatnonzero(n_valid / area >= min_valid)
        if not kept.size:
            raise BadInput(
                f"no tile has {min_valid:.0%} valid pixels; lower it", param="--min-valid"
            )
    else:
        kept = np.arange(len(windows))
    store_index = np.full(len(windows), -1, np.int64)
    store_index[kept] = np.arange(len(kept))
    origin = np.array([[*windows[w], n_valid[w]] for w in kept], np.int64).reshape(-1, 4)
    from geoseg.progress import scheduler_address

    distributed = scheduler_address(scheduler) is not None
    shard = 1  # one tile per chunk where strips run in other processes, or off this machine
    if not distributed and not is_url(url):
        shard = shard_tiles(len(band_list) * area * np.dtype(first["dtype"]).itemsize)
    group = _open_or_create(url, attrs, origin, len(band_list), first["dtype"], overwrite, shard)
    done = group["done"][:]
    fresh = ~done  # the tiles this run writes
    size = sharded(group["image"])
    if size:
        if distributed:
            raise BadInput(
                f"{output} was started in shards by local threads; finish it without "
                "--scheduler (or pass --overwrite to start again)",
                param="--scheduler",
            )
        # a shard is written whole, so all its tiles are rewritten if one lacks its flag
        whole = np.zeros(-(-len(done) // size) * size, bool)
        whole[: len(done)] = fresh
        fresh = np.repeat(whole.reshape(-1, size).any(axis=1), size)[: len(done)]
        names = ["image", "valid"] + (["label"] if "label" in group else [])
        need = np.bincount(np.flatnonzero(fresh) // size, minlength=len(whole) // size)
        arrays = {name: group[name] for name in names}
        _assemblers[token] = ShardAssembler(arrays, need, group["done"])
    job["write"], job["fresh"] = store_index, fresh
    if not done.all():
        n_left = int((~done).sum())
        if n_left < len(done):
            log.info("resuming %s: %d of %d tiles left", output, n_left, len(done))
    try:
        if min_valid > 0:
            writes = todo(fresh, store_index)
            _run_strips(lanes, job, scheduler, "tiles", write=writes)
        else:
            # one pass: strips whose tiles are all written (a resume) only count their pixels
            summaries = _run_strips(
                lanes, job, scheduler, "tiles", write=lambda st: bool(todo(fresh, store_index)(st))
            )
            _fill_counts(n_valid, summaries)
            origin[:, 3] = n_valid[kept]
            group["origin"][:] = origin
        if token in _assemblers:
            _assemblers[token].check_finished()
    finally:
        _assemblers.pop(token, None)
    stats = band_stats(
        [merge_hist([m["hists"][b] for m in summaries]) for b in range(len(band_list))]
    )
    group.attrs.update({"stats": stats, "complete": True})
    if final is not None:
        if final.exists():
            remove(final)
        os.replace(url, final)
        url = str(final)
    return open_store(url)


def _check_inputs_and_output(scenes, output, nodata, dtype: str) -> None:
    """Refusals before anything is written: an output that is (or holds) an input, and a
    NaN nodata on integer pixels (which can never be NaN, so it would mark nothing)."""
    if isinstance(nodata, float) and math.isnan(nodata) and np.dtype(dtype).kind in "ui":
        raise BadInput(f"nan cannot mark {dtype} pixels; give an integer nodata", param="--nodata")
    if is_url(output):
        return
    out = Path(str(output).removeprefix("file://")).resolve()
    for scene in scenes:
        for p in (*scene.images, *([scene.label] if scene.label else [])):
            if is_url(p):
                continue
            src = Path(p).resolve()
            if src == out or out in src.parents:
                raise BadInput(
                    f"{output} is (or holds) the input {p}; write the store elsewhere",
                    param="--output",
                )


def _target(output: str | Path, overwrite: bool) -> tuple[str, Path | None]:
    """Where to write: ``(url, None)`` for a URL, ``(partial path, final path)`` for a folder."""
    import zarr

    if is_url(output):
        if not overwrite:
            try:
                group = zarr.open_group(str(output), mode="r")
            except (FileNotFoundError, zarr.errors.GroupNotFoundError):
                return str(output), None
            if group.attrs.get("complete"):
                raise OutputExists(
                    f"{output} already exists; pass --overwrite to replace it", param="--output"
                )
        return str(output), None
    path = check_output(str(output).removeprefix("file://"), overwrite=overwrite)
    if overwrite and path.exists() and not _is_store(path):
        raise BadInput(
            f"{path} was not created by geoseg tile (no tile store there); --overwrite only "
            "replaces a tile store: remove it yourself or choose another output",
            param="--output",
        )
    partial = path.with_name(f".{path.name}.partial")
    if overwrite and partial.exists():
        remove(partial)
    return str(partial), path


def _is_store(path: Path) -> bool:
    """A geoseg tile store (its zarr.json has the store attributes), or an empty folder."""
    if path.is_dir() and not any(path.iterdir()):
        return True
    meta = path / "zarr.json"
    return meta.is_file() and '"tile_size"' in meta.read_text(errors="replace")


def _open_or_create(
    url: str, attrs: dict, origin: np.ndarray, n_bands: int, dtype: str, overwrite, shard: int
):
    """Open an interrupted store written with the same settings (in its own layout: shards
    or one tile per chunk), or create a new one with ``shard`` tiles per shard file."""
    import zarr
    from zarr.codecs import Crc32cCodec, ZstdCodec

    n, t = len(origin), attrs["tile_size"]
    if not overwrite:
        try:
            group = zarr.open_group(url, mode="r+")
        except (FileNotFoundError, zarr.errors.GroupNotFoundError):
            group = None
        if group is not None and "params" in group.attrs:  # else creation itself was cut short
            same = group.attrs.get("params") == attrs["params"] and "done" in group
            if not same or group["origin"].shape[0] != n:
                raise BadInput(
                    f"an interrupted tile store with other settings is at {url}; "
                    "pass --overwrite to start again",
                    param="--output",
                )
            check_unchanged(group.attrs.get("fingerprints"), attrs["fingerprints"])
            return group
    group = zarr.open_group(url, mode="w")
    shape, chunks = (n, n_bands, t, t), (1, n_bands, t, t)
    # chunk (shard) files named c.<i>.0.0.0 beside each other: zarr's "/" keys make a chain
    # of 3 folders per file, and creating them cost as much CPU as compressing the tile
    flat = {"name": "default", "separator": "."}
    layout = {"chunk_key_encoding": flat}
    if shard > 1:  # whole shards: docs/contracts.md; crc32c on each tile and on the index
        layout["shards"] = (shard, n_bands, t, t)
    checked = [ZstdCodec(level=0), Crc32cCodec()]  # zarr's default for these, and a checksum
    group.create_array(
        "image", shape=shape, chunks=chunks, dtype=dtype, compressors=_image_codec(), **layout
    )
    if shard > 1:
        layout["shards"] = (shard, t, t)
    group.create_array(
        "valid", shape=(n, t, t), chunks=(1, t, t), dtype=bool, compressors=checked, **layout
    )
    if "label_classes" in attrs:
        group.create_array(
            "label", shape=(n, t, t), chunks=(1, t, t), dtype="uint8", compressors=checked, **layout
        )
    group.create_array("origin", shape=(n, 4), chunks=(max(n, 1), 4), dtype="int64")
    # flags: one chunk per shard, written whole when its shard is (chunks.ShardAssembler)
    flags = (shard,) if shard > 1 else (BATCH,)
    group.create_array("done", shape=(n,), chunks=flags, dtype=bool, fill_value=False)
    group["origin"][:] = origin
    # attrs last: a store with attrs has its arrays, so a resume can trust it
    group.attrs.update(attrs)
    return group
