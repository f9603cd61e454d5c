"""``geoseg score PRED TRUTH``: SpaceNet building F1 (wraps :func:`geoseg.evaluate.score`)."""

from __future__ import annotations

import click

from geoseg.cli.options import overwrite_opt


def _write_text(path: str, text: str, *, overwrite: bool, param: str) -> None:
    """Write ``text`` to ``path`` atomically, or to stdout for ``-``."""
    if path == "-":
        click.echo(text)
        return
    from geoseg.paths import atomic_output

    with atomic_output(path, overwrite=overwrite, param=param) as tmp:
        tmp.write_text(text if text.endswith("\n") else text + "\n")


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
    type=float,
    default=20.0,
    show_default=True,
    help="Drop smaller polygons first: px² for SpaceNet CSV, m² for georeferenced "
    "files (truth kept if >=, proposals if >).",
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
@click.option(
    "--json",
    "json_path",
    is_flag=False,
    flag_value="-",
    default=None,
    metavar="[PATH]",
    help="Write total, per-AOI and per-image results as JSON to PATH, or to stdout (instead "
    "of the table) when no PATH or '-' is given.",
)
@click.option(
    "--csv",
    "csv_path",
    is_flag=False,
    flag_value="-",
    default=None,
    metavar="[PATH]",
    help="Write the per-image table as CSV to PATH, or to stdout when no PATH or '-' is given.",
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
    from geoseg.evaluate import score

    result = score(
        pred,
        truth,
        iou_threshold=iou_threshold,
        min_area=min_area,
        pred_filter=pred_filter,
        truth_filter=truth_filter,
    )
    if layers:
        result.write_layers(layers, overwrite=overwrite)
    if json_path:
        _write_text(json_path, result.to_json(), overwrite=overwrite, param="--json")
    if csv_path:
        _write_text(
            csv_path, result.per_image.to_csv(index=False), overwrite=overwrite, param="--csv"
        )
    if "-" not in (json_path, csv_path):
        click.echo(format_table(result, per_image=per_image))
