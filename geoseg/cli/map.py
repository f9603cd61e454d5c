"""``geoseg map CHECKPOINT``: name clusters from a few labels (wraps ``fit_mapping``)."""

from __future__ import annotations

import click

from geoseg.cli.options import device_opt, label_column_opt, names_opt, overwrite_opt


@click.command(name="map")
@click.argument("checkpoint", type=click.Path())
@click.option(
    "--labels",
    type=click.Path(),
    default=None,
    help="Label polygons (GeoJSON, GeoPackage, ...) or label raster of --image.",
)
@click.option(
    "--image",
    type=click.Path(),
    default=None,
    help="The raster the labels annotate; clusters are predicted on its tiles.",
)
@click.option(
    "--store",
    type=click.Path(),
    default=None,
    help="Use the labelled tiles of a tile store (label array) instead.",
)
@click.option(
    "--max-tiles",
    type=click.IntRange(1),
    default=50,
    show_default=True,
    help="Label budget: at most this many labelled tiles are used.",
)
@click.option(
    "--method",
    type=click.Choice(["majority", "hungarian"]),
    default="majority",
    show_default=True,
    help="Many-to-one (majority) or one-to-one (hungarian).",
)
@names_opt
@label_column_opt
@click.option(
    "--fill",
    type=click.IntRange(0, 255),
    default=None,
    help="Vector labels / store: class of unlabelled pixels in the chosen tiles (default: "
    "an unstored background, right for complete footprints; 0 = not used).",
)
@click.option(
    "--head", type=click.IntRange(0), default=None, help="Head to map (default: the checkpoint's)."
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Which labelled tiles are drawn when more than --max-tiles exist.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(),
    default=None,
    help="Write the mapped checkpoint here (default: update CHECKPOINT in place).",
)
@device_opt
@overwrite_opt
def cli(
    checkpoint,
    labels,
    image,
    store,
    max_tiles,
    method,
    names,
    column,
    fill,
    head,
    seed,
    output,
    device,
    overwrite,
):
    """Learn a cluster→class mapping for CHECKPOINT from a few labelled tiles.

    The mapping is stored in the checkpoint, so `geoseg predict` then writes one raster and
    one polygon layer per class. CHECKPOINT is updated in place unless -o is given; replacing
    an existing mapping (or an existing -o file) needs --overwrite.
    """
    from geoseg.evaluate import fit_mapping
    from geoseg.io.labels import parse_names

    result = fit_mapping(
        checkpoint,
        labels=labels,
        image=image,
        store=store,
        max_tiles=max_tiles,
        method=method,
        names=parse_names(names),
        column=column,
        fill=fill,
        head=head,
        output=output,
        overwrite=overwrite,
        seed=seed,
        device=device,
    )
    mapping = result["mapping"]
    click.echo(
        f"{result['tiles']} labelled tiles, {result['pixels']} pixels, "
        f"{mapping['method']} mapping of head {mapping['head']}:"
    )
    for name, clusters in mapping["classes"].items():
        click.echo(
            f"  {name} (value {mapping['class_ids'][name]}): clusters "
            f"{', '.join(map(str, clusters))}"
        )
    click.echo(f"pixel accuracy on those tiles {result['accuracy']:.4f}; saved {result['output']}")
