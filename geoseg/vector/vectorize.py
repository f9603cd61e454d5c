"""Class rasters to polygons, block by block, merged across block borders.

A scene is polygonised one block at a time so memory follows the block size, not the scene.
Polygons are traced in *global pixel coordinates* (integers, exact in floating point), so a
polygon cut by a block border has bit-identical edges on both sides and the pieces are
joined exactly, in raster space (:mod:`geoseg.vector.stitch`); only finished polygons are
mapped to the raster CRS. Pieces are merged when they share an edge of positive length,
never a single corner, which is the 4-connectivity that ``rasterio.features.shapes`` uses
inside a block: the blockwise result equals polygonising the whole raster at once.

Blocks run on local threads (dask.distributed only with a scheduler address); each block's
finished polygons go to the writer as the block completes. Pieces touching a block border are
joined as soon as every block they touch is done, and wait in a temporary file to be written
last, in the order of a join of all blocks at once: memory follows the blocks in flight and
the polygons still open, not the scene (a polygon spanning every block is its own floor).

Areas and tolerances are in metres whatever the CRS: geographic rasters (SpaceNet is
EPSG:4326) are measured and simplified in the UTM zone of the raster centre, then mapped back.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import chain, islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from geoseg.errors import BadInput
from geoseg.io.crs import metric_crs
from geoseg.paths import check_input, check_output
from geoseg.vector import footprints
from geoseg.vector.borders import Border, Pieces, edge_ids
from geoseg.vector.formats import (
    fast_geopackage,
    output_format,
    write_polygon_batches,
    write_polygons,
)

if TYPE_CHECKING:
    import geopandas

log = logging.getLogger(__name__)

#: polygons converted from rasterio's GeoJSON-like dicts at a time (memory, see _trace)
TRACE_SLICE = 4096


@dataclass(frozen=True)
class _Options:
    """Everything a block task needs, picklable so blocks can run on a dask cluster."""

    raster: str
    probabilities: str | None
    values: tuple[int, ...] | None
    transform: Affine
    crs_wkt: str | None
    metric_crs: str | None  # a UTM zone for geographic rasters, else None
    min_area: float
    simplify: float
    fill_holes: bool | float
    regularize: bool
    size: tuple[int, int]  # height, width


def vectorize(
    raster: str | Path,
    output: str | Path | None = None,
    *,
    classes: Mapping[str, int] | Sequence[int] | None = None,
    class_names: Mapping[int, str] | None = None,
    probabilities: str | Path | None = None,
    min_area: float = 0.0,
    simplify: float = 0.0,
    fill_holes: bool | float = False,
    regularize: bool = False,
    block_size: int = 1024,
    overwrite: bool = False,
    scheduler: str | None = None,
) -> geopandas.GeoDataFrame:
    """Polygonise a class raster block by block; the result equals a whole-raster polygonisation.

    Args:
        raster: single-band integer class raster (e.g. predict's ``*_clusters.tif``).
        output: vector file to write (``.gpkg``, ``.geojson``/``.json``, ``.fgb``, ``.parquet``),
            with a ``.qml`` style beside it; ``None`` only returns the polygons.
        classes: values to polygonise, as a list or a ``{name: value}`` dict; default every
            valid value. Nodata is never polygonised.
        class_names: ``{value: name}`` for the ``class`` column (default: the value as text).
        probabilities: raster on the same grid whose mean inside a polygon is its ``score``:
            one band (used for every class) or one band per cluster (band ``value + 1``).
        min_area: drop polygons whose traced area is below this many m².
        simplify: Douglas-Peucker tolerance in metres (topology preserving).
        fill_holes: ``True`` fills every hole; a number fills holes smaller than that many m².
        regularize: replace a polygon by its minimum rotated rectangle when their IoU exceeds
            ``geoseg.vector.footprints.REGULARIZE_MIN_IOU`` (right-angled building footprints).
        block_size: edge of the square blocks read at once; memory scales with its square.
        overwrite: replace an existing ``output``.
        scheduler: a dask.distributed address for the blocks (see ``geoseg.progress``);
            ``None``/``"threads"``: a local thread per core, ``"sync"``: this thread.

    Returns:
        GeoDataFrame in the raster CRS with columns ``class``, ``cluster``, ``area_m2``,
        ``score`` (NaN without probabilities) and ``geometry``.

    Raises:
        BadInput: missing/unsuitable raster or probabilities, negative sizes, an unknown output
            extension, or an existing output without ``overwrite``.
    """
    opts, names, windows = _prepare(**_arguments(**locals()))
    gdf = _to_frame(list(_polygonised(opts, windows, block_size, scheduler)), names, opts)
    log.info("%d polygons from %d blocks of %s", len(gdf), len(windows), raster)
    if output is not None:
        write_polygons(gdf, output, overwrite=overwrite)
    return gdf


def vectorize_to_file(raster: str | Path, output: str | Path, **options: Any) -> int:
    """:func:`vectorize` for ``geoseg vectorize``: the same file, written as blocks finish.

    A GeoPackage in an EPSG CRS (the usual output) is written block by block without a
    GeoDataFrame, so memory holds a block's polygons and the border pieces rather than the
    whole layer, and neither geopandas, pandas nor pyogrio is imported (0.8 s, more than
    GDAL's whole one-class run); other formats and CRSs are written as :func:`vectorize`
    writes them. Keyword arguments as :func:`vectorize` (one signature for both: an unknown
    keyword is a TypeError naming it); returns the number of polygons written.
    """
    args = _arguments(raster=raster, output=output, **options)
    opts, names, windows = _prepare(**args)
    overwrite, block_size, scheduler = args["overwrite"], args["block_size"], args["scheduler"]
    blocks = _polygonised(opts, windows, block_size, scheduler)
    if fast_geopackage(output, opts.crs_wkt):
        count = write_polygon_batches(
            blocks, output, crs_wkt=opts.crs_wkt, class_names=names, overwrite=overwrite
        )
    else:
        gdf = _to_frame(list(blocks), names, opts)
        write_polygons(gdf, output, overwrite=overwrite)
        count = len(gdf)
    log.info("%d polygons from %d blocks of %s", count, len(windows), raster)
    return count


def _arguments(**given: Any) -> dict[str, Any]:
    """:func:`vectorize`'s arguments by name with its defaults filled in: the one signature
    both entry points share."""
    import inspect

    bound = inspect.signature(vectorize).bind(**given)
    bound.apply_defaults()
    return dict(bound.arguments)


def _prepare(
    *,
    raster,
    output,
    classes,
    class_names,
    probabilities,
    min_area,
    simplify,
    fill_holes,
    regularize,
    block_size,
    overwrite,
    scheduler,  # noqa: ARG001 - used by the caller, passed along with the rest
) -> tuple[_Options, dict[int, str], list[Window]]:
    """Check every argument (before any work) and cut the raster into block windows."""
    if output is not None:
        output_format(output)
        check_output(output, overwrite=overwrite)
    max_hole = 0.0 if fill_holes is True else float(fill_holes)
    for value, param in (
        (min_area, "--min-area"),
        (simplify, "--simplify"),
        (max_hole, "--max-hole"),
    ):
        if value < 0:
            raise BadInput(f"{value} is negative; pass a size >= 0 (m² or m)", param=param)
    if block_size < 1:
        raise BadInput(
            f"block size {block_size} must be a positive number of pixels", param="--block-size"
        )
    values, names = _resolve_classes(classes, class_names)
    opts = _options(raster, probabilities, values, min_area, simplify, fill_holes, regularize)
    height, width = opts.size
    windows = [
        Window(col, row, min(block_size, width - col), min(block_size, height - row))
        for row in range(0, height, block_size)
        for col in range(0, width, block_size)
    ]
    return opts, names, windows


def _polygonised(
    opts: _Options, windows: list[Window], block_size: int, scheduler: str | None
) -> Iterator[dict[str, np.ndarray]]:
    """Finished polygons block by block, then the polygons joined across block borders.

    Each block's interior polygons are yielded as soon as the block is done, so a writer can
    take them while the next blocks run. Pieces touching a block border are joined as soon as
    every block they touch is done (:class:`Border`), so only the pieces of polygons still
    open wait; the joined polygons come last, in the order a join of all blocks at once gives.
    """
    from geoseg.progress import iter_in_order, scheduler_address

    with (
        Border(windows, block_size, opts.size, partial(_finish, opts=opts)) as border,
        warnings.catch_warnings(),
    ):
        # shapes() works on in-memory rasters in pixel coordinates on purpose (the first block's
        # transform is the identity) and GDAL then says "not georeferenced" from any thread
        warnings.filterwarnings("ignore", category=NotGeoreferencedWarning, module="rasterio")
        if scheduler_address(scheduler):  # a dask.distributed cluster: beyond this machine
            import dask

            from geoseg.progress import run_tasks

            tasks = [dask.delayed(_block)(opts, w) for w in windows]
            results = iter(run_tasks(tasks, scheduler=scheduler, desc="vectorize"))
        else:
            workers = 1 if scheduler == "sync" else min(_cores(), len(windows))
            results = iter_in_order(
                [partial(_block, opts, w) for w in windows], workers=workers, desc="vectorize"
            )
        for k, (done, edge, ids) in enumerate(results):
            yield done
            del done
            border.add(k, edge, ids)
            del edge, ids
        yield from border.joined()


def _resolve_classes(
    classes: Mapping[str, int] | Sequence[int] | None, class_names: Mapping[int, str] | None
) -> tuple[tuple[int, ...] | None, dict[int, str]]:
    """``(values to polygonise, None for all; {value: name})``."""
    names = {int(v): str(n) for v, n in (class_names or {}).items()}
    if classes is None:
        return None, names
    pairs = classes.items() if isinstance(classes, Mapping) else [(None, v) for v in classes]
    try:
        named = {int(value): name for name, value in pairs}
    except (TypeError, ValueError):
        raise BadInput(
            f"class values must be integers, not {classes!r} (e.g. --class building=1)",
            param="--class",
        ) from None
    if not named:
        raise BadInput("no class values given; pass e.g. --class building=1", param="--class")
    names.update({value: str(name) for value, name in named.items() if name is not None})
    return tuple(named), names


def _options(raster, probabilities, values, min_area, simplify, fill_holes, regularize) -> _Options:
    check_input(raster, param="INPUT")
    try:
        src = rasterio.open(raster)
    except rasterio.RasterioIOError:
        raise BadInput(
            f"{raster} is not a raster GDAL can read; pass a class GeoTIFF", param="INPUT"
        ) from None
    with src:
        if src.count != 1 or not np.issubdtype(np.dtype(src.dtypes[0]), np.integer):
            raise BadInput(
                f"{raster} has {src.count} band(s) of {src.dtypes[0]}; pass a single-band integer "
                "class raster (e.g. predict's *_clusters.tif)",
                param="INPUT",
            )
        size, transform, crs = (src.height, src.width), src.transform, src.crs
        metric_crs = _metric_crs(src)
    if probabilities is not None:
        check_input(probabilities, param="--probabilities")
        with rasterio.open(probabilities) as prob:
            if (prob.height, prob.width) != size:
                raise BadInput(
                    f"{probabilities} is {prob.width}x{prob.height} pixels but the class raster is "
                    f"{size[1]}x{size[0]}; pass the probabilities written with it",
                    param="--probabilities",
                )
    return _Options(
        raster=str(raster),
        probabilities=None if probabilities is None else str(probabilities),
        values=values,
        transform=transform,
        crs_wkt=crs.to_wkt() if crs else None,
        metric_crs=metric_crs,
        min_area=float(min_area),
        simplify=float(simplify),
        fill_holes=fill_holes if isinstance(fill_holes, bool) else float(fill_holes),
        regularize=bool(regularize),
        size=size,
    )


def _metric_crs(src: rasterio.DatasetReader) -> str | None:
    """The UTM CRS to measure in, unless the raster is projected in ground metres (None)."""
    if src.crs is None:
        log.warning("%s has no CRS; areas and tolerances are taken in pixel-grid units", src.name)
        return None
    return metric_crs(src.crs, src.bounds)  # the one rule: geoseg.io.crs


def _block(opts: _Options, window: Window) -> tuple[dict[str, np.ndarray], Pieces, dict]:
    """Polygonise one block: finished interior polygons, raw pieces touching inner borders,
    and which of those pieces owns each pixel of the block's four edges
    (:func:`geoseg.vector.borders.edge_ids`)."""
    pieces = _trace(opts, window)
    if not len(pieces.geoms):
        return _finish(pieces, opts), pieces, {}
    x0, y0, x1, y1 = shapely.bounds(pieces.geoms).T
    height, width = opts.size
    col0, row0 = window.col_off, window.row_off
    col1, row1 = col0 + window.width, row0 + window.height
    on_border = (
        ((x0 == col0) & (col0 > 0))
        | ((y0 == row0) & (row0 > 0))
        | ((x1 == col1) & (col1 < width))
        | ((y1 == row1) & (row1 < height))
    )
    border = pieces.take(on_border)
    return _finish(pieces.take(~on_border), opts), border, edge_ids(border, window)


def _trace(opts: _Options, window: Window) -> Pieces:
    """Trace one block's 4-connected regions of equal value, in global pixel coordinates."""
    from rasterio.features import shapes

    with rasterio.open(opts.raster) as src:
        data = src.read(1, window=window)
        valid = src.read_masks(1, window=window) > 0
    if opts.values is not None and len(opts.values) == 1:
        valid &= data == opts.values[0]  # a tenth of isin's time for the usual one class
    elif opts.values is not None:
        valid &= np.isin(data, opts.values)
    if not valid.any():
        return Pieces()
    if data.dtype.name not in ("uint8", "uint16", "int16", "int32"):  # what GDAL traces
        data = data.astype(np.int32)
    offset = Affine.translation(window.col_off, window.row_off)
    # GeoJSON-like dicts taken a slice at a time: a speckled 1024² block traces ~40k
    # polygons, whose coordinate tuples held at once were tens of MiB per block in flight
    traced = shapes(data, mask=valid, transform=offset)
    parts, values_list = [np.empty(0, object)], []
    while chunk := list(islice(traced, TRACE_SLICE)):
        parts.append(_polygons([g for g, _ in chunk]))
        values_list.extend(int(v) for _, v in chunk)
    geoms = np.concatenate(parts)
    values = np.array(values_list, np.int64)
    counts = np.rint(shapely.area(geoms)).astype(np.int64)  # unit pixels: area is the count
    return Pieces(geoms, values, counts, _probability_sums(opts, window, geoms, values, offset))


def _polygons(features: list[dict]) -> np.ndarray:
    """GeoJSON-like polygons to shapely in one vectorised call (3x faster than one by one,
    which matters for speckled cluster rasters with many small regions)."""
    rings = [ring for f in features for ring in f["coordinates"]]
    ring_sizes = np.fromiter(map(len, rings), np.int64, len(rings))
    ring_counts = np.fromiter((len(f["coordinates"]) for f in features), np.int64, len(features))
    xy = np.fromiter(
        chain.from_iterable(chain.from_iterable(rings)), np.float64, 2 * ring_sizes.sum()
    )
    offsets = (
        np.concatenate([[0], np.cumsum(ring_sizes)]),
        np.concatenate([[0], np.cumsum(ring_counts)]),
    )
    return shapely.from_ragged_array(shapely.GeometryType.POLYGON, xy.reshape(-1, 2), offsets)


def _probability_sums(opts, window, geoms, values, offset) -> np.ndarray:
    """Sum of the class probability inside each polygon (NaN without probabilities).

    Pixel-aligned polygons rasterise back exactly (pixel centres never lie on an edge), which
    gives every pixel its polygon in one GDAL pass whatever the number of classes.
    """
    if opts.probabilities is None:
        return np.full(len(geoms), np.nan)
    from rasterio.features import rasterize

    shape = (int(window.height), int(window.width))
    pairs = zip(geoms, range(1, len(geoms) + 1), strict=True)
    ids = rasterize(pairs, shape, transform=offset, dtype="int32")
    sums = np.zeros(len(geoms) + 1)
    with rasterio.open(opts.probabilities) as prob:
        bands = np.ones_like(values) if prob.count == 1 else values + 1
        if bands.max() > prob.count:
            raise BadInput(
                f"class {bands.max() - 1} has no band in the {prob.count}-band probabilities",
                param="--probabilities",
            )
        pixel_band = np.concatenate([[0], bands])[ids]
        for band in np.unique(bands):
            mine = pixel_band == band
            p = prob.read(int(band), window=window).astype(np.float64)
            sums += np.bincount(ids[mine], weights=p[mine], minlength=len(sums))
    return sums[1:]


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _finish(
    pieces: Pieces, opts: _Options, keys: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Map pixel polygons to the CRS, filter/clean them in metres, and measure them (``keys``:
    one per polygon, returned as ``key`` for the polygons kept)."""
    a, b, c, d, e, f = opts.transform[:6]
    # canonical ring start and orientation: simplification then cannot depend on where block
    # borders cut a polygon
    geoms = shapely.normalize(pieces.geoms)
    world = shapely.transform(geoms, lambda xy: xy @ np.array([[a, d], [b, e]]) + (c, f))
    metric = _reproject(world, opts, to_metric=True)
    keep = shapely.area(metric) >= opts.min_area
    world, metric, kept = world[keep], metric[keep], pieces.take(keep)
    changed = False
    if opts.fill_holes is not False:
        metric, changed = footprints.fill_holes(metric, opts.fill_holes), True
    if opts.regularize:
        metric, changed = footprints.regularize(metric), True
    if opts.simplify > 0:
        metric, changed = shapely.simplify(metric, opts.simplify, preserve_topology=True), True
    if changed:
        world = _reproject(metric, opts, to_metric=False)
    with np.errstate(invalid="ignore", divide="ignore"):
        score = kept.prob_sums / kept.counts
    out = {
        "geometry": world,
        "cluster": kept.values,
        "area_m2": shapely.area(metric),
        "score": score,
    }
    if keys is not None:
        out["key"] = keys[keep]
    return out


def _reproject(geoms: np.ndarray, opts: _Options, *, to_metric: bool) -> np.ndarray:
    """Geometries from the raster CRS to metres (or back); unchanged when it is in metres.

    The pyproj transformer is built per call: transformers must not be shared between the
    threads that run blocks, and building one costs far less than a block.
    """
    if opts.metric_crs is not None:
        from pyproj import Transformer

        crs = (opts.crs_wkt, opts.metric_crs) if to_metric else (opts.metric_crs, opts.crs_wkt)
        t = Transformer.from_crs(*crs, always_xy=True)
        return shapely.transform(geoms, lambda xy: np.column_stack(t.transform(*xy.T)))
    return geoms


def _to_frame(
    parts: list[dict[str, np.ndarray]], names: dict[int, str], opts: _Options
) -> geopandas.GeoDataFrame:
    import geopandas as gpd
    import pandas as pd

    merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    cluster = merged["cluster"].astype(np.int64)
    columns = {
        "class": pd.Series([names.get(int(v), str(int(v))) for v in cluster], dtype=object),
        "cluster": pd.Series(cluster, dtype="int64"),
        "area_m2": pd.Series(merged["area_m2"], dtype="float64"),
        "score": pd.Series(merged["score"], dtype="float64"),
    }
    geometry = gpd.GeoSeries(merged["geometry"], crs=opts.crs_wkt)
    return gpd.GeoDataFrame(columns, geometry=geometry, crs=opts.crs_wkt)
