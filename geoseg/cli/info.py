"""``geoseg info``: describe a raster (any GDAL format) or a tile store."""

from __future__ import annotations

import json

import click


@click.command(name="info")
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--no-stats", is_flag=True, help="Skip per-band statistics (faster on big rasters).")
def cli(path: str, as_json: bool, no_stats: bool) -> None:
    """Print bands, dtype, size, CRS, resolution, nodata and per-band statistics of PATH."""
    from geoseg.info import describe

    info = describe(path, stats=not no_stats)
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
        return
    click.echo(_table(info))


def _table(info: dict) -> str:
    skip = {"bands", "crs_wkt"}
    lines = [f"{key:>14}: {value}" for key, value in info.items() if key not in skip]
    columns = [k for k in ("index", "name", "dtype", "min", "max", "mean", "std", "p2", "p98")
               if any(k in b for b in info["bands"])]  # fmt: skip
    lines.append("")
    lines.append("  ".join(f"{c:>10}" for c in columns))
    for band in info["bands"]:
        cells = [band.get(c, "") for c in columns]
        lines.append(
            "  ".join(f"{v:>10.4g}" if isinstance(v, float) else f"{v!s:>10}" for v in cells)
        )
    return "\n".join(lines)
