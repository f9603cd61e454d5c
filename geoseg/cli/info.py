"""``geoseg info``: describe a raster (any GDAL format) or a tile store."""

from __future__ import annotations

import click

from geoseg.cli.options import json_opt, overwrite_opt, write_json


@click.command(name="info")
@click.argument("path", metavar="INPUT")
@json_opt
@click.option("--no-stats", is_flag=True, help="Skip per-band statistics (faster on big rasters).")
@overwrite_opt
def cli(path: str, json_path: str | None, no_stats: bool, overwrite: bool) -> None:
    """Print bands, dtype, size, CRS, resolution, nodata and per-band statistics of INPUT.

    INPUT is a raster (any GDAL format or URL) or a tile store (*.zarr).
    """
    from geoseg.info import describe

    info = describe(path, stats=not no_stats)
    if write_json(json_path, info, overwrite=overwrite):
        return
    click.echo(_table(info))


def _table(info: dict) -> str:
    skip = {"bands", "crs_wkt"}
    lines = [f"{key:>14}: {value}" for key, value in info.items() if key not in skip]
    columns = [
        k
        for k in ("index", "name", "dtype", "min", "max", "mean", "std", "p2", "p98")
        if any(k in b for b in info["bands"])
    ]
    lines.append("")
    lines.append("  ".join(f"{c:>10}" for c in columns))
    for band in info["bands"]:
        cells = [band.get(c, "") for c in columns]
        lines.append(
            "  ".join(f"{v:>10.4g}" if isinstance(v, float) else f"{v!s:>10}" for v in cells)
        )
    return "\n".join(lines)
