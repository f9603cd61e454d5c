"""Raster reading: open rasters, nodata/valid masks, boundless windowed reads, band stacks.

Everything here works window by window so memory is bounded by the window, never the scene.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.errors import BadInput
from geoseg.io.bands import file_band_labels

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


log = logging.getLogger(__name__)


def valid_mask(
    data: np.ndarray, nodata: float | None, mask: np.ndarray | None = None
) -> np.ndarray:
    """Valid pixels of a (C, H, W) block: invalid where ALL bands equal ``nodata``, or where
    ANY band is NaN or infinite.

    All-band semantics keep real data that happens to hit the nodata value in one band: the
    Massachusetts Buildings imagery declares nodata=255 on uint8 RGB, where a white roof can
    be 255 in one band. A NaN is never a measurement, whatever nodata says: one NaN band
    would turn the pixel's normalised vector, its loss and its neighbours' predictions into
    NaN. ``mask`` (H, W), a GDAL internal / per-dataset mask (0 = invalid), removes pixels
    on top of that.
    """
    if data.ndim == 2:
        data = data[None]
    if nodata is None or (isinstance(nodata, float) and math.isnan(nodata)):
        valid = np.ones(data.shape[1:], bool)
    else:
        if data.dtype.kind in "ui" and float(nodata).is_integer():
            # compared in the pixels' own type: a float nodata (rasterio's 0.0) made numpy
            # compare integers in float64, 8x slower (issue 11); the same pixels match
            info = np.iinfo(data.dtype)
            nodata = data.dtype.type(int(nodata)) if info.min <= nodata <= info.max else nodata
        # band by band: no (C, H, W) boolean temporary (its fresh pages were 4 % of tile's
        # CPU samples, issue 11); "not all bands equal" is "any band differs"
        valid = data[0] != nodata
        for band in data[1:]:
            valid |= band != nodata
    if data.dtype.kind == "f":
        valid &= np.isfinite(data).all(axis=0)
    if mask is not None:
        valid &= np.asarray(mask) != 0
    return valid


def open_raster(path: str | Path, param: str = "INPUT"):
    """Open a raster with rasterio, with a one-line :class:`BadInput` for a missing/non-raster file.

    Any GDAL path works (``.tif``, ``.vrt``, ``/vsicurl/...``, ``s3://``); local paths are
    checked first so the message says "does not exist" rather than GDAL's wording.
    """
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

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
        # plain PNG/JPEG labels and crops are valid inputs on a pixel grid: no warning for them
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
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
    block = read_checked(src, list(bands), window=inner)
    if (r0, c0, rh, cw) == (0, 0, h, w) and block.dtype == data.dtype:
        # inside the raster: nothing to pad, so no zero-filled copy (issue 11: a copy of
        # every pixel read, and its page faults; ~0.04 s of CPU in tiling a 4096² scene)
        return block, valid_mask(block, nd, internal_mask(src, inner))
    data[:, r0 : r0 + rh, c0 : c0 + cw] = block
    valid[r0 : r0 + rh, c0 : c0 + cw] = valid_mask(block, nd, internal_mask(src, inner))
    return data, valid


def read_checked(src, indexes, **kwargs) -> np.ndarray:
    """``src.read`` whose failure names the file: a truncated or damaged raster is the user's
    to fix (exit 2), and GDAL's "Read failed. See previous exception" names nothing."""
    from rasterio.errors import RasterioError

    try:
        return src.read(indexes, **kwargs)
    except RasterioError as exc:
        raise BadInput(
            f"{src.name} cannot be read ({' '.join(str(exc).split())[:120]}); the file is "
            "truncated or damaged: copy or export it again",
            param="INPUT",
        ) from exc


def check_readable(src) -> None:
    """Read the last pixel of every band: a truncated file (an interrupted copy or download)
    fails here, named, instead of yielding garbage statistics or a failure deep in a run.

    The last pixel's block is the last one written of its band (tiles and strips are stored
    row by row), so a file cut short loses it first; reading the whole last row decoded a
    whole row of tiles (issue 11: 0.08 s of serial CPU before `geoseg tile` on a 4096² scene).
    """
    from rasterio.windows import Window

    last = Window(src.width - 1, src.height - 1, 1, 1)
    read_checked(src, list(range(1, src.count + 1)), window=last)


def _overlaps(a, b) -> bool:
    return (
        a.col_off < b.col_off + b.width
        and b.col_off < a.col_off + a.width
        and a.row_off < b.row_off + b.height
        and b.row_off < a.row_off + a.height
    )


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
                first.width,
                first.height,
                first.transform,
                first.crs,
            ):
                self.close()
                raise BadInput(
                    f"{ds.name} is not on the grid of {first.name}; a band stack needs one grid",
                    param=param,
                )
        #: (dataset, band index) of every band of the stack, in order
        self.band_map = [(ds, i) for ds in self.datasets for i in range(1, ds.count + 1)]
        self.descriptions = tuple(
            descriptions or (d for ds in self.datasets for d in file_band_labels(ds))
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
