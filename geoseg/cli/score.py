"""``geoseg score PRED TRUTH``: SpaceNet building F1 (wraps :func:`geoseg.evaluate.score`)."""

from __future__ import annotations

import re

import click

from geoseg.cli.options import json_opt, overwrite_opt, write_json, write_text

_AREA = re.compile(r"^\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(px2?|px²|m2|m²)?\s*$")


def _parse_area(ctx: click.Context, param: click.Parameter, value: str):
    """``20`` → (20.0, None); ``20px`` → (20.0, "px"); ``2m2`` / ``2m²`` → (2.0, "m2")."""
    found = _AREA.match(str(value))
    if not found:
        raise click.BadParameter(f"{value!r} is not an area; use e.g. 20px or 2m2")
    unit = found.group(2)
    return float(found.group(1)), None if unit is None else (
        "px" if unit.startswith("px") else "m2"
    )


def format_table(result, *, per_image: bool = False) -> str:
    """A fixed-width table: one row per AOI (and per image if asked), then the total."""
    rows = []
    if per_image:
        rows += [
            (r.image_id, r.tp, r.fp, r.fn, r.precision, r.recall, r.f1)
            for r in result.per_image.itertuples()
        ]
    rows += [
        (f"AOI {r.aoi}", r.tp, r.fp, r.fn, r.precision, r.recall, r.f1)
        for r in result.per_aoi.itertuples()
    ]
    t = result.total
    rows.append(("TOTAL", t["tp"], t["fp"], t["fn"], t["precision"], t["recall"], t["f1"]))
    width = max(12, *(len(r[0]) for r in rows))
    lines = [
        f"{'':{width}}  {'TP':>7} {'FP':>7} {'FN':>7} {'precision':>9} {'recall':>7} {'F1':>7}"
    ]
    for name, tp, fp, fn, p, r, f in rows:
        lines.append(f"{name:{width}}  {tp:7d} {fp:7d} {fn:7d} {p:9.4f} {r:7.4f} {f:7.4f}")
    lines.append(
        f"IoU > {t['iou_threshold']}, min area {t['min_area']} {t['area_unit']}, "
        f"{t['images']} image(s); F1 = {t['f1']!r}"
    )
    return "\n".join(lines)


@click.command(name="score")
@click.argument("pred", type=click.Path())
@click.argument("truth", type=click.Path())
@click.option(
    "--iou",
    "iou_threshold",
    type=float,
    default=0.5,
    show_default=True,
    help="A proposal is a true positive when IoU is strictly above this.",
)
@click.option(
    "--min-area",
    callback=_parse_area,
    default="20",
    show_default=True,
    metavar="AREA[px|m2]",
    help="Drop smaller polygons first (truth kept if >=, proposals if >), e.g. 20px or "
    "2m2. A bare number keeps its historical meaning: px² on SpaceNet CSVs, m² on "
    "georeferenced files; px on georeferenced files needs --image.",
)
@click.option(
    "--image",
    type=click.Path(),
    default=None,
    help="The scored image: truth outside its footprint is clipped away (not counted as "
    "missed), and its pixel size converts px areas.",
)
@click.option(
    "--pred-filter",
    default=None,
    metavar="COLUMN=VALUE",
    help="Only score proposals where COLUMN equals VALUE (e.g. class=building).",
)
@click.option(
    "--truth-filter",
    default=None,
    metavar="COLUMN=VALUE",
    help="Only use truth polygons where COLUMN equals VALUE (e.g. label=1).",
)
@click.option("--per-image", is_flag=True, help="Also list every image in the table.")
@json_opt
@click.option(
    "--csv",
    "csv_path",
    is_flag=False,
    flag_value="-",
    default=None,
    metavar="[FILE]",
    help="Write the per-image table as CSV to FILE, or to stdout when given alone or as '-'.",
)
@click.option(
    "--layers",
    default=None,
    type=click.Path(),
    help="GeoPackage with layers tp, fp, fn to inspect the errors in QGIS.",
)
@overwrite_opt
def cli(
    pred,
    truth,
    iou_threshold,
    min_area,
    image,
    pred_filter,
    truth_filter,
    per_image,
    json_path,
    csv_path,
    layers,
    overwrite,
):
    """SpaceNet building F1 of PRED polygons against TRUTH footprints.

    Both are SpaceNet CSVs (ImageId, BuildingId, PolygonWKT_Pix, Confidence; pixel
    coordinates) or georeferenced vector files (GeoJSON, GeoPackage, FlatGeobuf, GeoParquet;
    reprojected to a metric CRS). Proposals are matched greedily by confidence; per-AOI and
    total scores sum TP/FP/FN over images.
    """
    from geoseg.evaluate.spacenet import score

    result = score(
        pred,
        truth,
        iou_threshold=iou_threshold,
        min_area=min_area[0],
        area_unit=min_area[1],
        image=image,
        pred_filter=pred_filter,
        truth_filter=truth_filter,
    )
    if layers:
        result.write_layers(layers, overwrite=overwrite)
    if json_path:
        write_json(json_path, result.to_dict(), overwrite=overwrite)
    if csv_path:
        write_text(
            csv_path, result.per_image.to_csv(index=False), overwrite=overwrite, param="--csv"
        )
    if "-" not in (json_path, csv_path):
        click.echo(format_table(result, per_image=per_image))
