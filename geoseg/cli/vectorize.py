"""``geoseg vectorize``: class raster → polygons, merged across block borders."""

from __future__ import annotations

import logging

import click

from geoseg.cli.options import overwrite_opt, polygon_kwargs, polygon_opts, scheduler_opt


def _parse_classes(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]):
    """``--class building=1 --class 3`` → ``{"building": 1, "3": 3}`` (None when not given)."""
    if not value:
        return None
    classes = {}
    for item in value:
        name, _, number = item.rpartition("=")
        try:
            classes[name or number] = int(number)
        except ValueError:
            raise click.BadParameter(
                f"{item!r} is not NAME=VALUE or VALUE (e.g. --class building=1)"
            ) from None
    return classes


@click.command(name="vectorize")
@click.argument("raster", type=click.Path())
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(),
    help="Output vector file (.gpkg, .geojson, .fgb, .parquet); a .qml style is written beside it.",
)
@click.option(
    "--class",
    "classes",
    multiple=True,
    callback=_parse_classes,
    metavar="NAME=VALUE",
    help="Class to polygonise, repeatable (e.g. building=1).  [default: every value, with a "
    "warning: a cluster map gives a polygon per speck]",
)
@click.option(
    "--probabilities",
    type=click.Path(),
    default=None,
    help="Probability raster on the same grid; its mean is each polygon's score.",
)
@polygon_opts
@click.option(
    "--block-size",
    type=click.IntRange(8, 65536),
    default=1024,
    show_default=True,
    help="Block edge in pixels; memory grows with its square.",
)
@scheduler_opt
@overwrite_opt
def cli(
    raster,
    output,
    classes,
    probabilities,
    min_area,
    simplify,
    fill_holes,
    max_hole,
    regularize,
    block_size,
    scheduler,
    overwrite,
):
    """Polygonise a class raster (e.g. predict's *_clusters.tif) into GIS polygons.

    Example: geoseg vectorize region_clusters.tif -o buildings.gpkg --class building=3
    --min-area 20 --simplify 0.5
    """
    from geoseg.vector.vectorize import vectorize_to_file

    count = vectorize_to_file(
        raster,
        output,
        classes=classes,
        probabilities=probabilities,
        **polygon_kwargs(min_area, simplify, fill_holes, max_hole, regularize),
        block_size=block_size,
        overwrite=overwrite,
        scheduler=scheduler,
    )
    if classes is None:  # every value: on a cluster map that is a polygon per speck
        logging.getLogger(__name__).warning(
            "no --class given, so every value was polygonised: %d polygons; pass --class "
            "NAME=VALUE (e.g. --class building=3) to keep one class",
            count,
        )
    click.echo(f"{count} polygons written to {output}", err=True)
