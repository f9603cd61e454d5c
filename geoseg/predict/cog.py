"""Cloud Optimized GeoTIFF writing: a finished tiled GeoTIFF copied into a COG, atomically."""

from __future__ import annotations

import logging
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
