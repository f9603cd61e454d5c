"""Streaming tiled inference over scenes of any size, written as Cloud Optimized GeoTIFFs.

The scene is cut into blocks on one global tile grid (:mod:`geoseg.predict.blend`), so the
class map does not depend on the block size, and memory is bounded by the block: no array of
the scene's size exists. Each block (:mod:`geoseg.predict.block`) reads its window once,
normalises it as training did, runs the model tile by tile, blends overlapping tiles with a
raised-cosine weight on the softmax and arg-maxes. Blocks run in planned order on local
threads (dask.distributed only with a scheduler address).

Blocks are written into tiled temporary GeoTIFFs by one writer (a lock locally; the client when
blocks run on a dask.distributed cluster), which are then copied to COGs with overviews
(:mod:`geoseg.predict.cog`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.errors import BadInput
from geoseg.models.device import resolve_device
from geoseg.paths import check_output, remove, remove_stale_partials, temporary_name
from geoseg.predict.blend import segment_tiles, shared_tiles
from geoseg.predict.block import SharedTiles, cached_block, predict_block, predict_tiles
from geoseg.predict.scratch import Scratch
from geoseg.predict.segment import load_model, segmenter
from geoseg.tiles.grid import DEFAULT_TILE_SIZE, Block, TileGrid

log = logging.getLogger(__name__)

#: blocks handed to a distributed cluster at a time (their results wait in client memory)
_DISTRIBUTED_GROUP = 16


# --- checkpoint and checks done before any work --------------------------------------------


def select_bands(count: int, bands: Sequence[int], name: str = "the raster") -> list[int]:
    """Bands of a ``count``-band raster to feed a model trained on source ``bands``.

    A raster from the training sensor has the trained band indices; a raster with exactly as
    many bands as the model takes is read as already band-selected. Anything else is refused
    naming both counts, before any work is done.
    """
    bands = [int(b) for b in bands]
    if count >= max(bands):
        return bands
    if count == len(bands):
        return list(range(1, count + 1))
    raise BadInput(
        f"{name} has {count} bands but the model expects {len(bands)} (bands "
        f"{','.join(map(str, bands))} of its training rasters); pass a raster with those bands",
        param="RASTER",
    )


def class_ids(
    ckpt: Mapping[str, Any], classes: Mapping[str, Sequence[int]] | None
) -> tuple[int, dict[str, list[int]]]:
    """``(head, {class name: cluster ids})`` from ``--class`` or else the checkpoint mapping."""
    mapping = ckpt.get("mapping")
    if classes:
        head = int(ckpt.get("head", 0))
        named = {str(k): [int(i) for i in v] for k, v in classes.items()}
    elif mapping:
        head = int(mapping.get("head", ckpt.get("head", 0)))
        named = {str(k): [int(i) for i in v] for k, v in mapping["classes"].items()}
    else:
        return int(ckpt.get("head", 0)), {}
    k = int(ckpt["n_clusters"][head])
    for name, ids in named.items():
        bad = [i for i in ids if not 0 <= i < k]
        if bad or not ids:
            raise BadInput(
                f"class {name!r} names clusters {bad or ids} but the model has clusters 0..{k - 1}",
                param="--class",
            )
    return head, named


# --- the scene -------------------------------------------------------------------------------


def output_paths(
    raster: str | Path,
    output_dir: str | Path,
    classes: Mapping[str, Sequence[int]],
    *,
    probabilities: bool = False,
) -> dict[str, Path]:
    """Every file predict writes for ``raster``, by role (``clusters``, a class name, ...).

    Known up front so existing outputs are refused before any work.
    """
    out, stem = Path(output_dir), Path(raster).stem
    paths = {"clusters": out / f"{stem}_clusters.tif"}
    if probabilities:
        paths["probabilities"] = out / f"{stem}_probabilities.tif"
    for name in classes:
        paths[name] = out / f"{stem}_{name}.tif"
        plural = name if name.endswith("s") else f"{name}s"
        paths[f"{name}:vector"] = out / f"{stem}_{plural}.gpkg"
    return paths


def _stitch_profile(grid: dict[str, Any], count: int, dtype: str, nodata: float) -> dict[str, Any]:
    """The temporary GTiff blocks are written into: the input's grid, fast light compression.

    ZSTD level 1 where GDAL has it: blocks are written under one lock, and on 4096² x 6
    float32 probabilities it wrote in 0.55x DEFLATE level 1's CPU, 4 % smaller (3 runs each).
    The file is predict's own scratch, copied into the COG, so its codec is nobody else's.
    """
    from geoseg.predict.cog import scratch_codec

    light = scratch_codec()
    return dict(
        driver="GTiff",
        count=count,
        dtype=dtype,
        nodata=nodata,
        tiled=True,
        blockxsize=256,
        blockysize=256,
        bigtiff="IF_SAFER",
        **light,
        **grid,
    )


def _threads(n_blocks: int, *, distributed: bool, gpu: bool) -> tuple[int, int]:
    """``(dask workers, torch threads per worker)``: blocks in parallel, cores shared out.

    On a GPU two blocks at a time are enough to overlap reading and blending with the forward
    passes; more would only multiply the GPU memory held by concurrent batches.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    workers = max(1, min(n_blocks, 2 if gpu else cores))
    return (workers, 1) if distributed or gpu else (workers, max(1, cores // workers))


def predict(
    raster: str | Path,
    model: str | Path | Mapping[str, Any],
    output_dir: str | Path,
    *,
    tile_size: int | None = None,
    overlap: int | None = None,
    batch_size: int = 8,
    device: str = "auto",
    tta: bool = False,
    probabilities: bool = False,
    classes: Mapping[str, Sequence[int]] | None = None,
    polygons: Mapping[str, Any] | None = None,
    nodata: float | str | None = None,
    block_size: int = 1024,
    scheduler: str | None = None,
    overwrite: bool = False,
    bands: str | Sequence[int | str] | None = None,
) -> dict[str, Path]:
    """Segment a scene of any size block by block; write COGs (and polygons of mapped classes).

    Args:
        raster: any GDAL raster with the model's bands.
        model: checkpoint path (``run/best.pt``) or a loaded checkpoint dict.
        output_dir: folder for ``<name>_clusters.tif`` and friends (created if missing).
        tile_size: model input tile (default: the checkpoint's training tile size).
        overlap: pixels shared by neighbouring tiles, blended (default: tile_size // 8).
        batch_size: tiles cut and normalised together, one forward pass on a GPU (on a
            CPU each tile goes through the model alone: see :func:`segmenter`).
        device: ``auto``, ``cpu`` or ``cuda`` (float16 autocast).
        tta: average probabilities over flips and rotations (8x compute).
        probabilities: also write ``<name>_probabilities.tif`` (float16 COG, one band per cluster).
        classes: ``{"building": [3, 17]}`` cluster ids per class; default the checkpoint mapping.
            Each class gets ``<name>_<class>.tif`` (0/1) and ``<name>_<class>s.gpkg``.
        polygons: clean-up of those polygons, as :func:`geoseg.vector.vectorize.vectorize` keywords
            (on top of a few-label head's own clean-up, ``ckpt["fewshot"]["polygons"]``)
            (``min_area`` m², ``simplify`` m, ``fill_holes``, ``regularize``).
        nodata: override the raster's nodata (``"none"`` ignores it), as ``geoseg tile``.
        block_size: block edge in pixels (rounded to whole tile strides); bounds memory.
        scheduler: dask scheduler (``threads``, ``sync`` or a ``tcp://`` address).
        overwrite: replace existing outputs.
        bands: explicit band mapping (``--bands``): bands of ``raster``, by index or name, one
            per model band in the model's order; by default bands are matched by name.

    Returns:
        Written paths by role: ``clusters``, ``probabilities``, each class name, ``<class>:vector``
        and ``<role>:style`` for the QGIS styles.

    Raises:
        BadInput: unreadable raster or checkpoint, band-count mismatch, bad tiling, existing
            outputs; all checked before any inference.
    """
    import rasterio
    import torch

    from geoseg.io.bands import file_band_labels, match_bands
    from geoseg.io.palette import class_colormap, class_dtype
    from geoseg.io.rasters import open_raster
    from geoseg.progress import run_in_order, run_tasks, scheduler_address
    from geoseg.vector.styles import class_raster_colormap

    with open_raster(raster, param="RASTER") as src:
        grid = dict(width=src.width, height=src.height, crs=src.crs, transform=src.transform)
        labels, dtype = file_band_labels(src), src.dtypes[0]
    ckpt, net = load_model(model)
    # matched by band name and pixel type, never by count alone (docs/reliability.md)
    bands = match_bands(
        labels,
        dtype,
        model_names=ckpt.get("band_names") or [f"b{b}" for b in ckpt["bands"]],
        model_bands=ckpt["bands"],
        model_dtype=ckpt.get("dtype"),
        model_count=ckpt.get("band_count"),
        explicit=bands,
        name=str(raster),
    )
    tiles = TileGrid.for_prediction(
        tile_size or ckpt.predict_tile or DEFAULT_TILE_SIZE,
        overlap,
        int(getattr(net, "size_multiple", 1)),
    )
    tile, overlap = tiles.size, tiles.overlap
    head, named = class_ids(ckpt, classes)
    n_classes = int(ckpt["n_clusters"][head])
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    remove_stale_partials(output_dir)  # what a killed predict (SIGKILL) left behind
    paths = output_paths(raster, output_dir, named, probabilities=probabilities)
    for path in paths.values():
        check_output(path, overwrite=overwrite, param="--output")
    dev = resolve_device(device)
    net = net.to(dev).eval()
    segment = segmenter(net, head=head, device=dev, tta=tta)

    dtype, out_nodata = class_dtype(n_classes)
    rasters = {"clusters": (dtype, out_nodata, 1)}
    rasters.update({name: ("uint8", 255, 1) for name in named})
    rasters.update({f"{name}:score": ("float32", float("nan"), 1) for name in named})
    if probabilities:
        rasters["probabilities"] = ("float32", float("nan"), n_classes)
    blocks = tiles.blocks(grid["height"], grid["width"], block_size)
    profiles = {role: _stitch_profile(grid, n, dt, nd) for role, (dt, nd, n) in rasters.items()}
    distributed = scheduler_address(scheduler) is not None
    workers, threads = _threads(len(blocks), distributed=distributed, gpu=dev.type == "cuda")
    log.info(
        "%s: %d blocks of ~%d px, tiles %d px (overlap %d), %d clusters, head %d, %s",
        raster,
        len(blocks),
        block_size,
        tile,
        overlap,
        n_classes,
        head,
        dev,
    )
    start = time.perf_counter()
    with ExitStack() as stack:
        stitched = {role: temporary_name(paths[role.split(":")[0]]) for role in rasters}
        stack.callback(lambda: [remove(p) for p in stitched.values()])
        dsts = {
            role: stack.enter_context(rasterio.open(stitched[role], "w", **profiles[role]))
            for role in rasters
        }
        dsts["clusters"].write_colormap(1, class_colormap(n_classes, out_nodata))
        for name in named:  # 0 ("not building") transparent: the image shows through
            dsts[name].write_colormap(1, class_raster_colormap())
        lock = threading.Lock()

        def write(block: Block, arrays: dict[str, np.ndarray]) -> None:
            window = ((block.rows[0], block.rows[1]), (block.cols[0], block.cols[1]))
            with lock:
                for role, arr in arrays.items():
                    dsts[role].write(arr if arr.ndim == 3 else arr[None], window=window)

        # On a CPU the model takes the tiles one at a time anyway (segmenter): a batch of one
        # also blends each tile as soon as it is computed, instead of holding a fresh
        # (batch, K, T, T) array per batch (12.6 MiB for 8 tiles of 6 classes) in each thread
        if dev.type == "cpu":
            batch_size = 1
        # what computing tiles needs; a block also blends them and writes its outputs
        tiles_kw = dict(
            bands=bands,
            norm=ckpt["norm"],
            segment=segment,
            tile=tile,
            batch_size=batch_size,
            nodata=nodata,
        )
        block_kw = dict(
            tiles_kw,
            overlap=overlap,
            n_classes=n_classes,
            classes=named,
            probabilities=probabilities,
        )
        # tiles touching several blocks: computed once per group, handed to each block
        groups, uses = shared_tiles(blocks, tile)
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            if distributed:
                # One task per shared group, its result handed to each block's task; results
                # come back to this process, in bounded groups to keep memory block-sized.
                import dask  # only here: a local run needs none of it (~0.2 s of imports)

                seg_node = dask.delayed(segment, pure=False)
                task = dask.delayed(predict_block, pure=False)
                shared_task = dask.delayed(predict_tiles, pure=False)
                shared = {
                    key: shared_task(str(raster), tiles_, **{**tiles_kw, "segment": seg_node})
                    for key, tiles_ in groups.items()
                }
                remote_kw = dict(block_kw, segment=seg_node)
                for first in range(0, len(blocks), _DISTRIBUTED_GROUP):
                    group = blocks[first : first + _DISTRIBUTED_GROUP]
                    tasks = [
                        task(
                            str(raster), b, shared=[shared[k] for k in uses[first + i]], **remote_kw
                        )
                        for i, b in enumerate(group)
                    ]
                    for b, arrays in zip(group, run_tasks(tasks, scheduler=scheduler), strict=True):
                        write(b, arrays)
            else:
                # Locally a shared group is computed by the first block that needs it and
                # kept, cropped to what the others need, until the last one is done. Blocks
                # run bottom-right first: a border tile then waits only as the strip its upper
                # or left block blends (the overlap), not whole. They run in that order
                # (threads taking them first in, first out; dask would pick its own order),
                # so what is kept is one row of block borders whatever the scene's height.
                scratch = Scratch()  # each worker thread's arrays, reused block after block
                # a group's tiles are cut from the read of the block computing it
                compute = partial(
                    segment_tiles,
                    segment=segment,
                    tile=tile,
                    batch_size=batch_size,
                    norm=ckpt["norm"],
                    scratch=scratch,
                )
                cache = SharedTiles(groups, uses, blocks, tile, compute)
                local_kw = dict(block_kw, sink=write, scratch=scratch)
                calls = [
                    partial(cached_block, str(raster), blocks[i], cache, i, **local_kw)
                    for i in range(len(blocks) - 1, -1, -1)
                ]
                run_in_order(calls, workers=1 if scheduler == "sync" else workers, desc="predict")
        finally:
            torch.set_num_threads(previous)
        for dst in dsts.values():
            dst.close()
        cleanup = {**(ckpt.get("fewshot") or {}).get("polygons", {}), **(polygons or {})}
        _finish(paths, stitched, named, n_classes, overwrite, cleanup)
    seconds = time.perf_counter() - start
    pixels = sum((b.rows[1] - b.rows[0]) * (b.cols[1] - b.cols[0]) for b in blocks)
    log.info(
        "predicted %.1f Mpx in %.1f s (%.2f Mpx/s)", pixels / 1e6, seconds, pixels / seconds / 1e6
    )
    return paths


def _finish(
    paths: dict[str, Path],
    stitched: dict[str, Path],
    named: Mapping[str, Sequence[int]],
    n_classes: int,
    overwrite: bool,
    polygons: Mapping[str, Any],
) -> None:
    """Copy the stitched rasters to COGs, style them, and vectorise the mapped classes."""
    from geoseg.predict.cog import write_cog
    from geoseg.vector.formats import write_polygons
    from geoseg.vector.styles import write_class_style, write_raster_style
    from geoseg.vector.vectorize import vectorize

    for role, tmp in stitched.items():
        if role.endswith(":score"):
            continue
        if role == "probabilities":
            # float16 storage (NBITS=16 on Float32) halves the size; averages suit probabilities.
            # No predictor and DEFLATE level 1: the floating-point predictor made the 4096² x 6
            # file larger (183 MiB vs 150) and slower (1.25x the CPU), and level 6 cost 1.3x
            # level 1's CPU for 2 % of the size (farm-bench, 3 pairs each; pixels identical).
            write_cog(
                tmp,
                paths[role],
                overview_resampling="average",
                overwrite=overwrite,
                NBITS=16,
                LEVEL=1,
            )
        else:
            write_cog(tmp, paths[role], overview_resampling="mode", overwrite=overwrite)
    names = {i: f"{i} {name}" for name, ids in named.items() for i in ids}  # legend, RAT
    paths["clusters:style"] = write_raster_style(paths["clusters"], n_classes, names or None)
    for name, ids in named.items():
        paths[f"{name}:style"] = write_class_style(paths[name], name)
        gdf = vectorize(
            paths[name],
            classes={name: 1},
            class_names={1: name},
            probabilities=stitched[f"{name}:score"],
            **polygons,
        )
        gdf["cluster"] = _polygon_clusters(paths["clusters"], gdf, ids)
        write_polygons(gdf, paths[f"{name}:vector"], overwrite=overwrite)


def _polygon_clusters(clusters: Path, gdf, ids: Sequence[int]) -> np.ndarray:
    """The model's cluster of each class polygon, not the class raster's value 1.

    A one-cluster class is that cluster; otherwise the cluster under the polygon's
    representative point (inside the polygon), kept to the class's clusters.
    """
    if len(ids) == 1 or gdf.empty:
        return np.full(len(gdf), ids[0], dtype="int64")
    import rasterio

    points = gdf.geometry.representative_point()
    with rasterio.open(clusters) as src:
        xy = zip(points.x, points.y, strict=True)
        found = np.array([v[0] for v in src.sample(xy)], dtype="int64")
    return np.where(np.isin(found, ids), found, ids[0])
