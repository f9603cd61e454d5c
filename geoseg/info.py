"""``geoseg info``: what a raster or a tile store holds (bands, grid, CRS, statistics)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from geoseg.errors import BadInput
from geoseg.io.bands import band_names, file_band_labels
from geoseg.io.rasters import check_readable, open_raster


def describe(path: str | Path, *, stats: bool = True) -> dict:
    """What ``geoseg info`` prints: a raster's (or a tile store's) bands, grid, CRS and stats.

    Statistics come from GDAL (computed block by block, honouring nodata), so any GDAL raster
    of any size can be described in bounded memory. A Zarr tile store (a folder with
    ``zarr.json``, or a URL ending in ``.zarr``) is described from its attributes instead.
    """
    text = str(path)
    if text.rstrip("/").endswith(".zarr") or (Path(text) / "zarr.json").exists():
        from geoseg.tiles.store import describe_store

        if "://" not in text and not Path(text).exists():  # named as in `geoseg info --help`
            raise BadInput(f"{text} does not exist; check the path", param="INPUT")
        return describe_store(text)
    import rasterio

    # PAM off: computing statistics must not leave a .aux.xml beside the user's raster.
    with rasterio.Env(GDAL_PAM_ENABLED="NO"), open_raster(text) as src:
        names = band_names(file_band_labels(src))
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
        check_readable(src)
        for i in range(1, src.count + 1):
            band: dict[str, Any] = {"index": i, "name": names[i - 1], "dtype": src.dtypes[i - 1]}
            if stats:
                s = src.stats(indexes=[i], approx=False)[0]
                if not (s.min <= s.max and s.std >= 0):  # GDAL read errors give garbage
                    raise BadInput(
                        f"{text} band {i} cannot be read (GDAL statistics min {s.min:g} > max "
                        f"{s.max:g}); the file is damaged: copy or export it again",
                        param="INPUT",
                    )
                band.update(min=s.min, max=s.max, mean=s.mean, std=s.std)
            info["bands"].append(band)
    return info
