"""Writing the Zarr tile store with dask (resumable); the window grid is
:mod:`geoseg.tiles.grid`, reading is :mod:`geoseg.tiles.store`.

A store holds every training tile of one or more scenes (layout in docs/contracts.md). It is
written in two dask passes over batches of windows, so memory is bounded by a batch, never a
scene: a read-only *scan* that counts valid pixels per window and merges per-band histograms
(exact statistics without holding a scene), then a *write* pass over the kept windows.

Resume rule: every write batch sets its ``done`` flags last, and the group attribute
``complete`` turns true only at the end. A local store is written under the hidden name
``.<name>.partial`` and renamed when complete; rerunning the same command on an interrupted
run finds that partial store (or an incomplete store at a URL) and writes only the batches
whose flags are missing. ``overwrite=True`` always starts from scratch.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from geoseg import __version__
from geoseg.errors import BadInput, OutputExists
from geoseg.io.bands import band_names, resolve_bands
from geoseg.io.layouts import LabelReader, Scene, find_scenes, label_classes
from geoseg.io.rasters import StackReader
from geoseg.paths import check_output, remove
from geoseg.tiles.grid import owned_span, tile_starts, tile_windows
from geoseg.tiles.store import TileStore, is_url, open_store

log = logging.getLogger(__name__)

BATCH = 16  # windows per dask task: enough work per task, small enough to bound memory


# --- sources --------------------------------------------------------------------------------


def _reader(scene: Scene) -> StackReader:
    return StackReader(scene.images, scene.descriptions)


def _source_attrs(scene: Scene) -> dict:
    reader = _reader(scene)
    try:
        src = reader.src
        if scene.label:
            LabelReader(scene.label, src, {}).close()  # a label grid mismatch fails before writing
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
        }
    finally:
        reader.close()


# --- statistics -----------------------------------------------------------------------------


def _histogram(values: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Sparse histogram ``(values, counts)`` of one band's valid pixels.

    Exact for 8/16-bit integers (the imagery geoseg targets). Other types (float reflectance,
    int32) are rounded to 11 significant bits first, so the number of distinct values, and the
    memory of merging them, stays bounded (< 2**20) whatever the scene size; their statistics
    are then within 0.05 % (relative) of the exact ones.
    """
    if dtype.kind in "ui" and dtype.itemsize <= 2:
        offset = -int(np.iinfo(dtype).min)
        counts = np.bincount(values.astype(np.int64) + offset, minlength=1)
        nz = np.nonzero(counts)[0]
        return nz - offset, counts[nz]
    bits = values[np.isfinite(values)].astype(np.float32).view(np.uint32)
    rounded = ((bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32)
    uniq, counts = np.unique(rounded.astype(np.float64), return_counts=True)
    return uniq, counts


def _merge_hist(parts: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Sum sparse histograms ``(values, counts)``."""
    if not parts:
        return np.zeros(0), np.zeros(0, np.int64)
    values = np.concatenate([p[0] for p in parts])
    counts = np.concatenate([p[1] for p in parts])
    values, inverse = np.unique(values, return_inverse=True)
    return values, np.bincount(inverse, weights=counts, minlength=len(values)).astype(np.int64)


def _stats(hists: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict[str, list[float]]:
    """Mean, std and inverted-CDF 2nd/98th percentiles per band from merged histograms.

    Inverted-CDF percentiles are actual pixel values (``np.percentile(method="inverted_cdf")``),
    so clipping to [p2, p98] never invents a value the sensor cannot produce.
    """
    out: dict[str, list[float]] = {"mean": [], "std": [], "p2": [], "p98": []}
    for values, counts in hists:
        total = int(counts.sum())
        if total == 0:
            for key in out:
                out[key].append(0.0)
            continue
        mean = float((values * counts).sum() / total)
        out["mean"].append(mean)
        out["std"].append(math.sqrt(float((((values - mean) ** 2) * counts).sum() / total)))
        cdf = np.cumsum(counts)
        for key, q in (("p2", 0.02), ("p98", 0.98)):
            out[key].append(float(values[np.searchsorted(cdf, q * total, side="left")]))
    return out


# --- the two passes -------------------------------------------------------------------------


def _scan(scenes, windows, bands, nodata, tile_size, overlap) -> tuple[list, list[int]]:
    """Read-only pass over a batch: valid pixel count per window, histograms over owned pixels."""
    from rasterio.windows import Window

    readers: dict[int, StackReader] = {}
    hists: list[list[tuple[np.ndarray, np.ndarray]]] = []
    n_valid = []
    try:
        for s, row, col in windows:
            reader = readers.get(s) or readers.setdefault(s, _reader(scenes[s]))
            h, w = reader.src.height, reader.src.width
            data, valid = reader.read(Window(col, row, tile_size, tile_size), bands, nodata)
            n_valid.append(int(valid.sum()))
            r0, r1 = owned_span(tile_starts(h, tile_size, tile_size - overlap), row, h)
            c0, c1 = owned_span(tile_starts(w, tile_size, tile_size - overlap), col, w)
            own = valid[r0 - row : r1 - row, c0 - col : c1 - col]
            block = data[:, r0 - row : r1 - row, c0 - col : c1 - col]
            hists.append([_histogram(block[b][own], data.dtype) for b in range(len(bands))])
    finally:
        for r in readers.values():
            r.close()
    return [_merge_hist([h[b] for h in hists]) for b in range(len(bands))], n_valid


def _write(url, scenes, tiles, start, bands, nodata, tile_size, labels) -> int:
    """Write tiles ``start..start+len(tiles)`` of the store, then their ``done`` flags."""
    import zarr
    from rasterio.windows import Window

    group = zarr.open_group(url, mode="r+")
    readers: dict[int, StackReader] = {}
    label_readers: dict[int, LabelReader] = {}
    try:
        for k, (s, row, col) in enumerate(tiles):
            reader = readers.get(s) or readers.setdefault(s, _reader(scenes[s]))
            window = Window(col, row, tile_size, tile_size)
            data, valid = reader.read(window, bands, nodata)
            group["image"][start + k] = data
            group["valid"][start + k] = valid
            if labels is not None and scenes[s].label:
                if s not in label_readers:
                    label_readers[s] = LabelReader(scenes[s].label, reader.src, labels)
                group["label"][start + k] = label_readers[s].read(window)
    finally:
        for r in readers.values():
            r.close()
        for r in label_readers.values():
            r.close()
    group["done"][start : start + len(tiles)] = True
    return len(tiles)


# --- tile(): the library function of `geoseg tile` ------------------------------------------


def tile(
    inputs: Sequence[str | Path] | str | Path,
    output: str | Path,
    *,
    bands: str | Sequence[int | str] | None = None,
    tile_size: int = 256,
    overlap: int = 32,
    labels: str | Path | None = None,
    min_valid: float = 0.0,
    nodata: float | str | None = None,
    overwrite: bool = False,
    scheduler: str | None = None,
) -> TileStore:
    """Stage rasters into a Zarr v3 tile store (docs/contracts.md), resumably, with dask.

    Args:
        inputs: raster files, folders or dataset roots (see :mod:`geoseg.io.layouts`).
        output: a local path or any fsspec URL (``memory://``, ``s3://``) of the store.
        bands: band selection (see :func:`geoseg.io.bands.resolve_bands`); all bands by default.
        tile_size: tile edge in pixels.
        overlap: pixels shared by neighbouring tiles.
        labels: a vector or raster labels file for every input (layouts may bring their own).
        min_valid: skip tiles whose valid fraction is below this (0 keeps every tile).
        nodata: override the sources' nodata (``"none"`` ignores it).
        overwrite: replace an existing store (and discard an interrupted one).
        scheduler: ``None``/``"threads"``, ``"sync"`` or a dask.distributed address.

    Returns:
        The written store, opened for reading.

    Raises:
        BadInput: unreadable inputs, bad bands/sizes, or an existing output without overwrite.
    """
    import dask

    from geoseg.progress import run_tasks

    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    if not 0.0 <= min_valid <= 1.0:
        raise BadInput(f"{min_valid} is not a fraction in [0, 1]", param="--min-valid")
    scenes = find_scenes(inputs, labels=labels)
    if not scenes:
        raise BadInput("no input raster given; pass one or more GeoTIFFs or folders", param="INPUT")
    sources = [_source_attrs(s) for s in scenes]
    first = sources[0]
    for s in sources[1:]:
        if (s["count"], s["dtype"]) != (first["count"], first["dtype"]):
            raise BadInput(
                f"{s['path']} has {s['count']} {s['dtype']} bands but {first['path']} has "
                f"{first['count']} {first['dtype']}; tile scenes of one sensor together",
                param="INPUT",
            )
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
    scan = dask.delayed(_scan, pure=False)
    results = run_tasks(
        [
            scan(scenes, windows[i : i + BATCH], band_list, nodata, tile_size, overlap)
            for i in range(0, len(windows), BATCH)
        ],
        scheduler=scheduler,
        desc="scan",
    )
    n_valid = [n for _, counts in results for n in counts]
    stats = _stats([_merge_hist([h[b] for h, _ in results]) for b in range(len(band_list))])
    area = tile_size * tile_size
    kept = [(w, n) for w, n in zip(windows, n_valid, strict=True) if n / area >= min_valid]
    if not kept:
        raise BadInput(f"no tile has {min_valid:.0%} valid pixels; lower it", param="--min-valid")
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
    origin = np.array([[s, r, c, n] for (s, r, c), n in kept], np.int64)
    group = _open_or_create(url, attrs, origin, len(band_list), first["dtype"], overwrite)
    done = group["done"][:]
    tiles = [w for w, _ in kept]
    write = dask.delayed(_write, pure=False)
    todo = [i for i in range(0, len(tiles), BATCH) if not done[i : i + BATCH].all()]
    if len(todo) < math.ceil(len(tiles) / BATCH):
        log.info("resuming %s: %d of %d batches left", output, len(todo), -(-len(tiles) // BATCH))
    run_tasks(
        [
            write(url, scenes, tiles[i : i + BATCH], i, band_list, nodata, tile_size, label_info)
            for i in todo
        ],
        scheduler=scheduler,
        desc="tiles",
    )
    group.attrs.update({"stats": stats, "complete": True})
    if final is not None:
        if final.exists():
            remove(final)
        os.replace(url, final)
        url = str(final)
    return open_store(url)


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
    partial = path.with_name(f".{path.name}.partial")
    if overwrite and partial.exists():
        remove(partial)
    return str(partial), path


def _open_or_create(url: str, attrs: dict, origin: np.ndarray, n_bands: int, dtype: str, overwrite):
    """Open an interrupted store written with the same settings, or create a new one."""
    import zarr

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
            return group
    group = zarr.open_group(url, mode="w")
    group.create_array("image", shape=(n, n_bands, t, t), chunks=(1, n_bands, t, t), dtype=dtype)
    group.create_array("valid", shape=(n, t, t), chunks=(1, t, t), dtype=bool)
    if "label_classes" in attrs:
        group.create_array("label", shape=(n, t, t), chunks=(1, t, t), dtype="uint8")
    group.create_array("origin", shape=(n, 4), chunks=(max(n, 1), 4), dtype="int64")
    group.create_array("done", shape=(n,), chunks=(BATCH,), dtype=bool, fill_value=False)
    group["origin"][:] = origin
    # attrs last: a store with attrs has its arrays, so a resume can trust it
    group.attrs.update(attrs)
    return group
