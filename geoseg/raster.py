"""Raster I/O: open and describe rasters, band selection, nodata/valid masks, windowed reads,
and Cloud Optimized GeoTIFF writing.

Everything here works window by window so memory is bounded by the window, never the scene.
"""

from __future__ import annotations

import colorsys
import logging
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.errors import BadInput

# rasterio.features.rasterize builds an in-memory GDAL dataset per call; under dask's threads
# it now and then warns "not georeferenced" although every geoseg call passes an explicit
# transform (seen intermittently in `geoseg tile --labels`): noise for the user, so silenced
# for that module only.
warnings.filterwarnings(
    "ignore",
    category=UserWarning,
    module="rasterio.features",
    message="Dataset has no geotransform",
)

# --- palette (shared by COG colour tables and QGIS styles) -----------------------------------


def colour_table(n: int) -> dict[int, tuple[int, int, int, int]]:
    """A stable, well-separated RGBA colour per class/cluster id ``0..n-1``.

    Golden-ratio hue steps keep neighbouring ids distinguishable for any ``n``, and the same
    id always gets the same colour, so a COG's embedded table and its ``.qml`` style agree.
    """
    table = {}
    for i in range(n):
        hue = (i * 0.618033988749895) % 1.0
        light = 0.45 + 0.15 * ((i // 7) % 2)
        r, g, b = colorsys.hls_to_rgb(hue, light, 0.75)
        table[i] = (round(r * 255), round(g * 255), round(b * 255), 255)
    return table


# --- reading ---------------------------------------------------------------------------------


log = logging.getLogger(__name__)

#: Band names of common sensors, by band count, used when a file carries no band descriptions.
#: WorldView-3 8-band MS order; NAIP and ISPRS Potsdam RGBIR share the RGBN order.
SENSOR_PRESETS: dict[int, tuple[str, ...]] = {
    8: ("coastal", "blue", "green", "yellow", "red", "rededge", "nir1", "nir2"),
    4: ("red", "green", "blue", "nir"),
    3: ("red", "green", "blue"),
}

#: Other spellings users type for the same band.
_ALIASES = {
    "nir": ("nir", "nir1"),
    "ir": ("nir", "nir1"),
    "red-edge": ("rededge",),
    "re": ("rededge",),
}


def band_names(descriptions: Sequence[str | None]) -> list[str]:
    """Lower-case names of the bands: descriptions, else the sensor preset, else ``b1, b2, ...``.

    A partial or non-unique set of descriptions is not trusted, because band selection by
    name must be unambiguous.
    """
    count = len(descriptions)
    described = [(d or "").strip().lower() for d in descriptions]
    if all(described) and len(set(described)) == count:
        return described
    if count in SENSOR_PRESETS:
        return list(SENSOR_PRESETS[count])
    return [f"b{i}" for i in range(1, count + 1)]


def resolve_bands(src_or_descriptions: Any, bands: str | Sequence[int | str] | None) -> list[int]:
    """Turn a user's band selection into 1-based band indices.

    Args:
        src_or_descriptions: an open rasterio dataset, a band-description sequence, or a band
            count (int).
        bands: ``None`` (all bands), ``"1,2,3"``, ``"red,green,blue,nir"`` or a list of ints /
            names. Names come from band descriptions, else the sensor preset for the count
            (WorldView-3 8-band, RGBN, RGB); ``nir`` also matches ``nir1``.

    Returns:
        1-based band indices in the order asked.

    Raises:
        BadInput: (``--bands``) an index out of range or an unknown name, naming what is valid.
    """
    if isinstance(src_or_descriptions, int):
        descriptions: Sequence[str | None] = [None] * src_or_descriptions
    elif hasattr(src_or_descriptions, "descriptions"):
        descriptions = src_or_descriptions.descriptions
    else:
        descriptions = list(src_or_descriptions)
    count = len(descriptions)
    names = band_names(descriptions)
    if bands is None:
        return list(range(1, count + 1))
    items = [b.strip() for b in bands.split(",")] if isinstance(bands, str) else list(bands)
    if not items or any(item == "" for item in items):
        raise BadInput(f"empty band list {bands!r}; give e.g. 1,2,3", param="--bands")
    out = []
    for item in items:
        if isinstance(item, (int, np.integer)) or (isinstance(item, str) and item.isdigit()):
            index = int(item)
            if not 1 <= index <= count:
                raise BadInput(
                    f"band {index} is out of range; this raster has bands 1..{count}",
                    param="--bands",
                )
            out.append(index)
            continue
        wanted = str(item).lower()
        candidates = _ALIASES.get(wanted, (wanted,))
        match = next((names.index(c) + 1 for c in candidates if c in names), None)
        if match is None:
            raise BadInput(
                f"no band named {item!r}; valid names are {','.join(names)} or indices 1..{count}",
                param="--bands",
            )
        out.append(match)
    return out


def valid_mask(
    data: np.ndarray, nodata: float | None, mask: np.ndarray | None = None
) -> np.ndarray:
    """Valid pixels of a (C, H, W) block: invalid only where ALL bands equal ``nodata``.

    All-band semantics keep real data that happens to hit the nodata value in one band: the
    Massachusetts Buildings imagery declares nodata=255 on uint8 RGB, where a white roof can
    be 255 in one band. ``mask`` (H, W), a GDAL internal / per-dataset mask (0 = invalid),
    removes pixels on top of that.
    """
    if data.ndim == 2:
        data = data[None]
    if nodata is None:
        valid = np.ones(data.shape[1:], bool)
    elif isinstance(nodata, float) and math.isnan(nodata):
        valid = ~np.isnan(data).all(axis=0)
    else:
        valid = ~(data == nodata).all(axis=0)
    if mask is not None:
        valid &= np.asarray(mask) != 0
    return valid


def open_raster(path: str | Path, param: str = "INPUT"):
    """Open a raster with rasterio, with a one-line :class:`BadInput` for a missing/non-raster file.

    Any GDAL path works (``.tif``, ``.vrt``, ``/vsicurl/...``, ``s3://``); local paths are
    checked first so the message says "does not exist" rather than GDAL's wording.
    """
    import rasterio
    from rasterio.errors import RasterioIOError

    text = str(path)
    if "://" not in text and not text.startswith("/vsi") and not Path(text).exists():
        raise BadInput(f"{text} does not exist; check the path", param=param)
    if "://" not in text and Path(text).is_dir():
        raise BadInput(f"{text} is a folder; pass a raster file", param=param)
    # GDAL's own complaint about an unrecognised file would print a second, noisier line.
    gdal_log = logging.getLogger("rasterio._env")
    level = gdal_log.level
    gdal_log.setLevel(logging.WARNING)
    try:
        return rasterio.open(text)
    except RasterioIOError:
        raise BadInput(
            f"{text} is not a raster GDAL can read; pass a GeoTIFF, VRT or other GDAL raster",
            param=param,
        ) from None
    finally:
        gdal_log.setLevel(level)


def internal_mask(src, window=None) -> np.ndarray | None:
    """The GDAL per-dataset or alpha mask of a window, or ``None`` when the file has none.

    Nodata-derived masks are left out on purpose: GDAL's per-band nodata mask would drop a
    pixel that is nodata in one band only, which :func:`valid_mask` must keep.
    """
    from rasterio.enums import MaskFlags

    flags = src.mask_flag_enums[0]
    if MaskFlags.per_dataset in flags or MaskFlags.alpha in flags:
        return src.read_masks(1, window=window)
    return None


def read_window(
    src, window, bands: Sequence[int], nodata: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read ``bands`` in ``window`` (boundless, zero fill) and the valid mask of the window.

    Args:
        src: an open rasterio dataset.
        window: a rasterio ``Window``; parts outside the raster read as 0 and invalid.
        bands: 1-based band indices.
        nodata: ``None`` to use the file's nodata, ``"none"`` to ignore it, or a number.

    Returns:
        ``(data (C, h, w) source dtype, valid (h, w) bool)``.
    """
    from rasterio.windows import Window

    nd = src.nodata if nodata is None else (None if nodata == "none" else nodata)
    full = Window(0, 0, src.width, src.height)
    inner = window.intersection(full) if _overlaps(window, full) else None
    h, w = int(window.height), int(window.width)
    data = np.zeros((len(bands), h, w), src.dtypes[bands[0] - 1])
    valid = np.zeros((h, w), bool)
    if inner is None:
        return data, valid
    r0, c0 = int(inner.row_off - window.row_off), int(inner.col_off - window.col_off)
    rh, cw = int(inner.height), int(inner.width)
    block = src.read(list(bands), window=inner)
    data[:, r0 : r0 + rh, c0 : c0 + cw] = block
    valid[r0 : r0 + rh, c0 : c0 + cw] = valid_mask(block, nd, internal_mask(src, inner))
    return data, valid


def _overlaps(a, b) -> bool:
    return (
        a.col_off < b.col_off + b.width
        and b.col_off < a.col_off + a.width
        and a.row_off < b.row_off + b.height
        and b.row_off < a.row_off + a.height
    )


def describe(path: str | Path, *, stats: bool = True) -> dict:
    """What ``geoseg info`` prints: a raster's (or a tile store's) bands, grid, CRS and stats.

    Statistics come from GDAL (computed block by block, honouring nodata), so any GDAL raster
    of any size can be described in bounded memory. A Zarr tile store (a folder with
    ``zarr.json``, or a URL ending in ``.zarr``) is described from its attributes instead.
    """
    text = str(path)
    if text.rstrip("/").endswith(".zarr") or (Path(text) / "zarr.json").exists():
        from geoseg.tiles import describe_store

        return describe_store(text)
    import rasterio

    # PAM off: computing statistics must not leave a .aux.xml beside the user's raster.
    with rasterio.Env(GDAL_PAM_ENABLED="NO"), open_raster(text) as src:
        names = band_names(src.descriptions)
        info: dict[str, Any] = {
            "path": text,
            "driver": src.driver,
            "width": src.width,
            "height": src.height,
            "count": src.count,
            "crs": src.crs.to_string() if src.crs else None,
            "crs_wkt": src.crs.to_wkt() if src.crs else None,
            "resolution": list(src.res),
            "bounds": list(src.bounds),
            "transform": list(src.transform)[:6],
            "nodata": src.nodata,
            "mask": [f.name for f in src.mask_flag_enums[0]],
            "block_shape": list(src.block_shapes[0]),
            "bands": [],
        }
        for i in range(1, src.count + 1):
            band: dict[str, Any] = {"index": i, "name": names[i - 1], "dtype": src.dtypes[i - 1]}
            if stats:
                s = src.stats(indexes=[i], approx=False)[0]
                band.update(min=s.min, max=s.max, mean=s.mean, std=s.std)
            info["bands"].append(band)
    return info


class StackReader:
    """One raster, or several rasters on one grid read as one multiband source.

    Single-band files of one scene (``*-R.tif``, ``*-G.tif``, ...) are stacked window by window
    instead of through a temporary VRT, so nothing is written and dask workers need only the
    file paths.

    Args:
        paths: the rasters, in band order.
        descriptions: band names for the stack (else the files' own descriptions).
        param: the argument named in errors.
    """

    def __init__(
        self, paths: Sequence[str], descriptions: Sequence[str] | None = None, param="INPUT"
    ):
        self.datasets = []
        for p in paths:
            self.datasets.append(open_raster(p, param=param))
        self.src = first = self.datasets[0]
        for ds in self.datasets[1:]:
            if (ds.width, ds.height, ds.transform, ds.crs) != (
                first.width, first.height, first.transform, first.crs,
            ):  # fmt: skip
                self.close()
                raise BadInput(
                    f"{ds.name} is not on the grid of {first.name}; a band stack needs one grid",
                    param=param,
                )
        #: (dataset, band index) of every band of the stack, in order
        self.band_map = [(ds, i) for ds in self.datasets for i in range(1, ds.count + 1)]
        self.descriptions = tuple(
            descriptions or (d for ds in self.datasets for d in ds.descriptions)
        )

    def read(
        self, window, bands: Sequence[int], nodata: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Like :func:`read_window`, with ``bands`` numbered across the stack."""
        if len(self.datasets) == 1:
            return read_window(self.src, window, bands, nodata)
        parts = [
            read_window(ds, window, [i], nodata) for ds, i in (self.band_map[b - 1] for b in bands)
        ]
        # all-bands nodata semantics across files: invalid only where every band says so
        return np.concatenate([p[0] for p in parts]), np.any([p[1] for p in parts], axis=0)

    def close(self) -> None:
        for ds in self.datasets:
            ds.close()

    def __enter__(self) -> StackReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- COG writing -----------------------------------------------------------------------------


def class_dtype(n_classes: int) -> tuple[str, int]:
    """``(dtype, nodata)`` of a class raster: uint8/255 up to 255 classes, else uint16/65535."""
    return ("uint8", 255) if n_classes <= 255 else ("uint16", 65535)


def class_colormap(n_classes: int, nodata: int) -> dict[int, tuple[int, int, int, int]]:
    """:func:`colour_table` plus a transparent entry for ``nodata``, for a GDAL palette."""
    table = colour_table(n_classes)
    table[nodata] = (0, 0, 0, 0)
    return table


def write_cog(
    src_path: str | Path,
    dst: str | Path,
    *,
    overview_resampling: str = "mode",
    compress: str = "DEFLATE",
    blocksize: int = 512,
    overwrite: bool = False,
    param: str = "--output",
    **creation_options: Any,
) -> Path:
    """Copy a finished (tiled) GeoTIFF into a Cloud Optimized GeoTIFF at ``dst``.

    Overviews are built by the COG driver from the source, so the writer never needs the whole
    raster in memory; colour table, nodata, CRS and transform are carried over. Class rasters
    want ``mode`` resampling (an overview pixel is the most frequent class, never an average of
    ids); probabilities want ``average``.

    Args:
        src_path: the GeoTIFF filled block by block (left in place; the caller removes it).
        dst: final path, written through :func:`geoseg.paths.atomic_output`.
        overview_resampling: GDAL resampling name for the overviews.
        compress: COG compression (``DEFLATE``, ``ZSTD``, ``LZW``...).
        blocksize: COG tile edge in pixels.
        overwrite: replace an existing ``dst``.
        param: the option named in the error if ``dst`` exists.
        **creation_options: more GDAL COG creation options (e.g. ``NBITS=16``, ``PREDICTOR=2``).

    Returns:
        ``dst`` as a Path.
    """
    import rasterio
    import rasterio.shutil

    from geoseg.paths import atomic_output

    options = {
        "COMPRESS": compress,
        "BLOCKSIZE": blocksize,
        "OVERVIEWS": "IGNORE_EXISTING",
        "OVERVIEW_RESAMPLING": overview_resampling.upper(),
        "NUM_THREADS": "ALL_CPUS",
        "BIGTIFF": "IF_SAFER",
        **{k.upper(): v for k, v in creation_options.items()},
    }
    gdal_log = logging.getLogger("rasterio._env")
    quiet = _HalfFloatPadding() if str(options.get("NBITS")) == "16" else None
    if quiet:
        gdal_log.addFilter(quiet)
    try:
        with atomic_output(dst, overwrite=overwrite, param=param) as tmp:
            rasterio.shutil.copy(str(src_path), str(tmp), driver="COG", **options)
    finally:
        if quiet:
            gdal_log.removeFilter(quiet)
    return Path(dst)


class _HalfFloatPadding(logging.Filter):
    """Drops GDAL's "beyond range of float16" notes while writing an NBITS=16 COG.

    GDAL converts the padding of partial edge tiles (uninitialised memory outside the raster,
    never read back) to half floats and reports each overflow; the raster's own pixels are
    finite probabilities, checked in tests/test_cog.py.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "beyond range of float16" not in record.getMessage()
