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
import mmap
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import partial
from itertools import chain, islice
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

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
from geoseg.vector.formats import (
    fast_geopackage,
    output_format,
    write_polygon_batches,
    write_polygons,
)
from geoseg.vector.stitch import ranges, segments, stitch

if TYPE_CHECKING:
    import geopandas

log = logging.getLogger(__name__)

#: vertices of border pieces joined in one call of the stitch (memory, not speed: it is linear)
STITCH_VERTICES = 200_000
#: bytes of WKB of the joined border polygons handed to the writer at a time
JOINED_BATCH_BYTES = 8 << 20
#: polygons converted from rasterio's GeoJSON-like dicts at a time (memory, see _trace)
TRACE_SLICE = 4096


@dataclass
class _Pieces:
    """Polygons in global pixel coordinates with what is needed to finish them."""

    geoms: np.ndarray = field(default_factory=lambda: np.empty(0, object))
    values: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    counts: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    prob_sums: np.ndarray = field(default_factory=lambda: np.empty(0, np.float64))

    def take(self, index: np.ndarray) -> _Pieces:
        return _Pieces(
            self.geoms[index], self.values[index], self.counts[index], self.prob_sums[index]
        )

    @staticmethod
    def concat(parts: Sequence[_Pieces]) -> _Pieces:
        if not parts:
            return _Pieces()
        names = [f.name for f in fields(_Pieces)]
        return _Pieces(*(np.concatenate([getattr(p, n) for p in parts]) for n in names))


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
    every block they touch is done (:class:`_Border`), so only the pieces of polygons still
    open wait; the joined polygons come last, in the order a join of all blocks at once gives.
    """
    from geoseg.progress import iter_in_order, scheduler_address

    with _Border(windows, block_size, opts) as border, warnings.catch_warnings():
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


class _Border:
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

    def __init__(self, windows: Sequence[Window], block_size: int, opts: _Options) -> None:
        self.opts = opts
        height, width = opts.size
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
        self.open = _Pieces()
        self.index = np.empty(0, np.int64)
        self.root = np.empty(0, np.int64)
        self.need = np.empty(0, np.int64)
        # finished polygons: their attributes here, their WKB in a temporary file until the end
        self.finished: list[dict[str, np.ndarray]] = []
        self.spill: IO[bytes] | None = None
        self.spilled = 0  # bytes written to it

    def __enter__(self) -> _Border:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.spill is not None:
            self.spill.close()

    def add(self, k: int, pieces: _Pieces, edges: dict[str, np.ndarray]) -> None:
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
        self.open = _Pieces.concat([self.open, pieces])
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
        finished = _finish(joined, self.opts, keys=keys)
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


def _block(opts: _Options, window: Window) -> tuple[dict[str, np.ndarray], _Pieces, dict]:
    """Polygonise one block: finished interior polygons, raw pieces touching inner borders,
    and which of those pieces owns each pixel of the block's four edges (see :func:`_links`)."""
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
    return _finish(pieces.take(~on_border), opts), border, _edge_ids(border, window)


def _edge_ids(border: _Pieces, window: Window) -> dict[str, np.ndarray]:
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


def _links(windows: Sequence[Window], edges: Sequence[dict], counts: Sequence[int]) -> np.ndarray:
    """Pairs of border pieces (indices into the concatenated pieces) that share an edge.

    Found in raster space: two pieces of neighbouring blocks share an edge exactly where
    4-adjacent pixels across their common border belong to them; a shared corner alone never
    pairs pixels. (Pairs of pieces of different values are dropped by :func:`_merge`.) This
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


def _trace(opts: _Options, window: Window) -> _Pieces:
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
        return _Pieces()
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
    return _Pieces(geoms, values, counts, _probability_sums(opts, window, geoms, values, offset))


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


def _merge(pieces: _Pieces, links: np.ndarray, block_size: int, size: tuple[int, int]) -> _Pieces:
    """Join border pieces that share an edge (``links``, from :func:`_links`) by connected
    component: all blocks' border pieces at once (:class:`_Border` joins them as blocks end)."""
    if len(pieces.geoms) == 0:
        return pieces
    left, right = links.T
    same = pieces.values[left] == pieces.values[right]  # adjacent pixels of one value only
    component = _components(len(pieces.geoms), left[same], right[same])
    height, width = size
    cols, rows = np.arange(block_size, width, block_size), np.arange(block_size, height, block_size)
    return _join(pieces, component, cols, rows)


def _join(pieces: _Pieces, component: np.ndarray, cols: np.ndarray, rows: np.ndarray) -> _Pieces:
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
    return _Pieces(
        geoms,
        np.array([pieces.values[i[0]] for i in groups], np.int64),
        np.array([pieces.counts[i].sum() for i in groups], np.int64),
        np.array([pieces.prob_sums[i].sum() for i in groups], np.float64),
    )


def _components(n: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
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
    (Pulling the roots too is what lets nodes linked earlier follow: :class:`_Border` links
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


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _finish(
    pieces: _Pieces, opts: _Options, keys: np.ndarray | None = None
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
