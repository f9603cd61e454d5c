"""``geoseg map CHECKPOINT``: name clusters from a few labels (wraps ``fit_mapping``)."""

from __future__ import annotations

import click

from geoseg.cli.options import (
    device_opt,
    label_column_opt,
    names_opt,
    nodata_opt,
    overwrite_opt,
)


def _parse_head(ctx: click.Context, param: click.Parameter, value: str | None):
    """``linear`` (fit a few-label head) or a head index."""
    if value is None or value in ("linear", "mlp"):
        return value
    try:
        head = int(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: use linear, mlp or a head number (0, 1, ...)"
        ) from None
    if head < 0:
        raise click.BadParameter(f"{value!r}: head numbers start at 0")
    return head


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
    help="Label budget: at most this many labelled tiles (of --tile-size) are used.",
)
@click.option(
    "--tile-size",
    type=click.IntRange(8),
    default=64,
    show_default=True,
    help="Edge of the labelled tiles in pixels (independent of the training crop size).",
)
@click.option(
    "--method",
    type=click.Choice(["iou", "majority", "hungarian"]),
    default="iou",
    show_default=True,
    help="iou: per class, the cluster set with the best IoU on the labelled tiles (never "
    "fails; the estimate is printed); majority: many-to-one; hungarian: one-to-one.",
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
    "--head",
    callback=_parse_head,
    default=None,
    metavar="linear|mlp|N",
    help="linear: fit a few-label head (logistic regression on the frozen features, with "
    "superpixel refinement) and store it in the checkpoint; mlp: the same with one hidden "
    "layer; N: name the clusters of head N.  "
    "[default: name the clusters of the head that fits the labels best]",
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
@nodata_opt
@device_opt
@overwrite_opt
def cli(
    checkpoint,
    labels,
    image,
    store,
    max_tiles,
    tile_size,
    method,
    names,
    column,
    fill,
    head,
    seed,
    output,
    nodata,
    device,
    overwrite,
):
    """Learn a cluster→class mapping for CHECKPOINT from a few labelled tiles.

    The mapping is stored in the checkpoint, so `geoseg predict` then writes one raster and
    one polygon layer per class. CHECKPOINT is updated in place unless -o is given; replacing
    an existing mapping (or an existing -o file) needs --overwrite.
    """
    from geoseg.evaluate.mapping import fit_mapping

    result = fit_mapping(
        checkpoint,
        labels=labels,
        image=image,
        store=store,
        max_tiles=max_tiles,
        method=method,
        names=names,
        column=column,
        fill=fill,
        head=head,
        tile_size=tile_size,
        nodata=nodata,
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
    estimates = ", ".join(f"{k} {v:.3f}" for k, v in result["estimated_iou"].items())
    if result["accuracy"] is not None:
        click.echo(f"pixel accuracy on those tiles {result['accuracy']:.4f}")
    if result.get("estimate") == "out-of-fold":
        # each tile scored by a head fitted without it: an honest estimate, not a fitted one
        click.echo(f"estimated IoU on those tiles (out-of-fold): {estimates}")
    else:
        click.echo(f"estimated IoU on those tiles (in-sample, optimistic): {estimates}")
    if result["warning"]:
        click.echo(f"warning: {result['warning']}", err=True)
    click.echo(f"saved {result['output']}")
