"""``geoseg evaluate PRED LABELS``: pixel metrics (wraps :func:`geoseg.evaluate.evaluate`)."""

from __future__ import annotations

import click

from geoseg.cli.options import json_opt, label_column_opt, names_opt, overwrite_opt, write_json


def format_metrics(result: dict) -> str:
    """Human-readable summary: accuracies, per-class IoU, mIoU."""
    lines = [
        f"pixels scored          {result['pixels']}",
        f"Hungarian accuracy     {result['hungarian_accuracy']:.4f}",
        f"many-to-one accuracy   {result['many_to_one_accuracy']:.4f}",
        f"IoU per class ({result['iou_mapping']} mapping):",
    ]
    width = max((len(n) for n in result["per_class_iou"]), default=5)
    lines += [f"  {name:{width}}  {iou:.4f}" for name, iou in result["per_class_iou"].items()]
    lines.append(f"mIoU                   {result['miou']:.4f}")
    if result["building_iou"] is not None:
        lines.append(f"building IoU           {result['building_iou']:.4f}")
    return "\n".join(lines)


@click.command(name="evaluate")
@click.argument("pred", type=click.Path())
@click.argument("labels", type=click.Path())
@click.option(
    "--merge",
    type=click.Choice(["potsdam3"]),
    default=None,
    help="Merge label classes first: potsdam3 = {impervious, car}, {building, "
    "clutter}, {low vegetation, tree}.",
)
@click.option(
    "--method",
    type=click.Choice(["hungarian", "majority", "identity"]),
    default="hungarian",
    show_default=True,
    help="Cluster→class mapping behind per-class IoU (identity: PRED holds classes).",
)
@names_opt
@label_column_opt
@click.option(
    "--fill",
    type=click.IntRange(0, 255),
    default=0,
    show_default=True,
    help="Vector labels: class of pixels outside polygons (0 = not scored).",
)
@click.option(
    "--confusion",
    "confusion_csv",
    type=click.Path(),
    default=None,
    help="Write the confusion matrix as CSV.",
)
@json_opt
@overwrite_opt
def cli(pred, labels, merge, method, names, column, fill, confusion_csv, json_path, overwrite):
    """Pixel metrics of a cluster/class raster PRED against LABELS.

    LABELS is a label raster on any grid (reprojected, nearest), an ISPRS colour-coded label
    image, a PNG of the same size as PRED, or polygons (GeoJSON, GeoPackage, ...) rasterised
    onto PRED's grid. Label 0 and nodata are ignored.
    """
    from geoseg.evaluate.rasters import evaluate

    result = evaluate(
        pred,
        labels,
        merge=merge,
        method=method,
        names=names,
        column=column,
        fill=fill,
        confusion_csv=confusion_csv,
        overwrite=overwrite,
    )
    if write_json(json_path, result, overwrite=overwrite):
        return
    click.echo(format_metrics(result))
