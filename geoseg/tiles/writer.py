"""Writing the Zarr tile store in one pass (resumable); the window grid is
:mod:`geoseg.tiles.grid`, the pass over the pixels is :mod:`geoseg.tiles.strips`, reading is
:mod:`geoseg.tiles.store`.

A store holds every training tile of one or more scenes (layout in docs/contracts.md). It is
written in ONE pass over the scene, so memory is bounded by a band of rows, never a scene,
and every source pixel is read and decoded about once (the floor any tiler pays). This
module checks the inputs, plans which window goes to which store index, creates (or
reopens) the store, runs the strips and records what the store is made of: its sources,
their fingerprints and the band statistics merged from the strips' histograms.

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
import uuid
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from geoseg import __version__
from geoseg.errors import BadInput, OutputExists
from geoseg.io.bands import band_names, resolve_bands
from geoseg.io.coverage import check_labels_cover
from geoseg.io.fingerprint import check_unchanged, fingerprint
from geoseg.io.labels import Grid, LabelReader, class_column, label_classes
from geoseg.io.layouts import Scene, find_scenes
from geoseg.io.rasters import check_readable
from geoseg.lock import locked_output
from geoseg.paths import check_output, remove
from geoseg.tiles import strips
from geoseg.tiles.chunks import ShardAssembler, shard_tiles, sharded
from geoseg.tiles.grid import TileGrid, tile_windows
from geoseg.tiles.stats import band_stats, merge_hist
from geoseg.tiles.store import TileStore, is_url, open_store

log = logging.getLogger(__name__)

BATCH = 16  # done flags per chunk in a store of one tile per chunk (sharded: one per shard)


# --- sources --------------------------------------------------------------------------------


def _source_attrs(scene: Scene, pool: ThreadPoolExecutor) -> tuple[dict, Future]:
    """The scene's ``sources`` entry, checked readable, and its files' fingerprints (a future).

    The fingerprints decode a few blocks of each raster, and the readability check decodes
    the last row of blocks: both were serial before the strips start (0.1 s of CPU each on
    the 4096² NAIP scene), so the fingerprints are taken on ``pool``'s thread meanwhile, once
    the files have opened (a file that does not open is named here first).
    """
    reader = strips.scene_reader(scene)
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
        lanes += strips.plan(
            i,
            s["height"],
            s["width"],
            tile_size,
            overlap,
            block_rows=strips.block_rows(scene),
            first_index=first_index,
            lanes_min=strips.cores(),
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

        def write(strip: strips.Strip) -> bool | None:
            idx = store_index[[w for row in strip.index for w in row]]
            idx = idx[idx >= 0]
            return None if not idx.size else bool(fresh[idx].any())

        return write

    n_valid = np.zeros(len(windows), np.int64)
    if min_valid > 0:
        # which tiles are kept decides the store's length: count first, then write the kept
        summaries = strips.run(lanes, job, scheduler, "scan")
        strips.fill_counts(n_valid, summaries)
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
        strips.assemblers[token] = ShardAssembler(arrays, need, group["done"])
    job["write"], job["fresh"] = store_index, fresh
    if not done.all():
        n_left = int((~done).sum())
        if n_left < len(done):
            log.info("resuming %s: %d of %d tiles left", output, n_left, len(done))
    try:
        if min_valid > 0:
            writes = todo(fresh, store_index)
            strips.run(lanes, job, scheduler, "tiles", write=writes)
        else:
            # one pass: strips whose tiles are all written (a resume) only count their pixels
            summaries = strips.run(
                lanes, job, scheduler, "tiles", write=lambda st: bool(todo(fresh, store_index)(st))
            )
            strips.fill_counts(n_valid, summaries)
            origin[:, 3] = n_valid[kept]
            group["origin"][:] = origin
        if token in strips.assemblers:
            strips.assemblers[token].check_finished()
    finally:
        strips.assemblers.pop(token, None)
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
