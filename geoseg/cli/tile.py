"""``geoseg tile``: stage GeoTIFFs (files, folders, dataset roots) into a Zarr tile store."""

from __future__ import annotations

import click

from geoseg.cli.options import (
    bands_opt,
    nodata_opt,
    overlap_opt,
    overwrite_opt,
    scheduler_opt,
    tile_size_opt,
)


@click.command(name="tile")
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("-o", "--output", required=True, help="Tile store: a folder *.zarr or an fsspec URL.")
@bands_opt
@tile_size_opt
@overlap_opt
@click.option(
    "--labels",
    default=None,
    help="Labels for every input: vector file (geojson/gpkg/...) or a label raster on the grid.",
)
@click.option(
    "--min-valid",
    type=float,
    default=0.0,
    show_default=True,
    help="Skip tiles whose fraction of valid (non-nodata) pixels is below this.",
)
@click.option(
    "--allow-empty-labels",
    is_flag=True,
    help="Labels that cover no input only warn (the store then has no labels) instead of failing.",
)
@nodata_opt
@overwrite_opt
@scheduler_opt
def cli(
    inputs: tuple[str, ...],
    output: str,
    bands: str | None,
    tile_size: int | None,
    overlap: int | None,
    labels: str | None,
    min_valid: float,
    allow_empty_labels: bool,
    nodata,
    overwrite: bool,
    scheduler: str | None,
) -> None:
    """Cut INPUT rasters into overlapping tiles in a Zarr store, with per-band statistics.

    INPUT may be GeoTIFFs (or any GDAL raster), folders of them, single-band R/G/B/N files of
    one scene, or a SpaceNet AOI, Inria or ISPRS Potsdam folder (labels found by layout).
    Defaults: 256 px tiles overlapping by 32 px (a quarter of the tile for tiles under 128 px).
    Rerunning an interrupted command resumes it.
    """
    from geoseg.tiles.writer import tile

    store = tile(
        list(inputs),
        output,
        bands=bands,
        tile_size=tile_size,
        overlap=overlap,
        labels=labels,
        min_valid=min_valid,
        nodata=nodata,
        overwrite=overwrite,
        scheduler=scheduler,
        allow_empty_labels=allow_empty_labels,
    )
    click.echo(
        f"{store.url}: {store.n_tiles} tiles of {store.tile_size}x{store.tile_size}, "
        f"bands {','.join(store.band_names)}" + (", with labels" if store.has_labels else "")
    )
