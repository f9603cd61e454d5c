"""Cloud Optimized GeoTIFF writing: a finished tiled GeoTIFF copied into a COG, atomically."""

from __future__ import annotations

import contextlib
import functools
import logging
import warnings
from pathlib import Path
from typing import Any


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

    Overviews are built from the source, never from the whole raster in memory; colour
    table, nodata, CRS and transform are carried over. Class rasters want ``mode`` resampling
    (an overview pixel is the most frequent class, never an average of ids): for an 8-bit
    band geoseg computes them (:mod:`geoseg.predict.overviews`, ~5x faster than GDAL's, the
    same file); probabilities want ``average``, which the COG driver computes.

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
        with (
            atomic_output(dst, overwrite=overwrite, param=param) as tmp,
            _source(src_path, options) as source,
        ):
            rasterio.shutil.copy(str(source), str(tmp), driver="COG", **options)
    finally:
        if quiet:
            gdal_log.removeFilter(quiet)
    return Path(dst)


@contextlib.contextmanager
def _source(src_path: str | Path, options: dict[str, Any]):
    """What the COG driver copies: a class raster (one 8-bit band, ``MODE`` overviews) as a
    VRT carrying overviews computed by :mod:`geoseg.predict.overviews` (the driver then only
    copies them; the file is byte-identical), anything else as it is."""
    from geoseg.predict import overviews

    computed = options.get("OVERVIEWS") == "IGNORE_EXISTING"  # not the source's own
    if not computed or options["OVERVIEW_RESAMPLING"] != "MODE":
        yield src_path
        return
    with overviews.mode_overviews(src_path, int(options["BLOCKSIZE"]), scratch_codec()) as vrt:
        if vrt is None:  # not a raster whose overviews geoseg computes: GDAL computes them
            yield src_path
            return
        options["OVERVIEWS"] = "FORCE_USE_EXISTING"
        yield vrt


class _HalfFloatPadding(logging.Filter):
    """Drops GDAL's "beyond range of float16" notes while writing an NBITS=16 COG.

    GDAL converts the padding of partial edge tiles (uninitialised memory outside the raster,
    never read back) to half floats and reports each overflow; the raster's own pixels are
    finite probabilities, checked in tests/test_cog.py.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "beyond range of float16" not in record.getMessage()


def scratch_codec() -> dict[str, Any]:
    """How predict's scratch GeoTIFFs (the COGs' sources, read once by the copy) are
    compressed: ZSTD level 1 where GDAL has it, else DEFLATE level 1.

    On 4096² x 6 float32 probabilities ZSTD-1 wrote in 0.55x DEFLATE level 1's CPU and 4 %
    smaller (3 runs each); the files are geoseg's own, so their codec is nobody else's.
    """
    return dict(compress="ZSTD", zstd_level=1) if has_zstd() else dict(compress="DEFLATE", zlevel=1)


@functools.cache
def has_zstd() -> bool:
    """Whether this GDAL writes ZSTD GeoTIFFs (rasterio's wheels do; some builds do not)."""
    import numpy as np
    import rasterio
    from rasterio.errors import RasterioError

    path = "/vsimem/geoseg-zstd-probe.tif"
    profile = dict(driver="GTiff", width=1, height=1, count=1, dtype="uint8", compress="ZSTD")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "not georeferenced"
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(np.zeros((1, 1, 1), "uint8"))
            with rasterio.open(path) as src:
                return src.read(1)[0, 0] == 0
    except (RasterioError, ValueError):
        return False
    finally:
        with contextlib.suppress(Exception):
            import rasterio.shutil

            rasterio.shutil.delete(path)
