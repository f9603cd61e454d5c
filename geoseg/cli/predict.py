"""``geoseg predict RASTER -m run/best.pt -o out/``: tiled inference written as COGs."""

from __future__ import annotations

import click

from geoseg.cli.options import (
    device_opt,
    nodata_opt,
    overlap_opt,
    overwrite_opt,
    polygon_kwargs,
    polygon_opts,
    scheduler_opt,
    tile_size_opt,
)


def _parse_classes(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> dict[str, list[int]]:
    classes: dict[str, list[int]] = {}
    for item in value:
        name, _, ids = item.partition("=")
        try:
            clusters = [int(i) for i in ids.split(",")]
        except ValueError:
            clusters = []
        if not name.strip() or not clusters:
            raise click.BadParameter(f"{item!r} is not NAME=ID[,ID...] (e.g. building=3,17)")
        classes.setdefault(name.strip(), []).extend(clusters)
    return classes


@click.command(name="predict")
@click.argument("raster", type=click.Path())
@click.option(
    "-m",
    "--model",
    required=True,
    type=click.Path(),
    help="Checkpoint (run/best.pt) or run folder.",
)
@click.option(
    "-o", "--output", required=True, type=click.Path(file_okay=False), help="Output folder."
)
@tile_size_opt
@overlap_opt
@click.option(
    "--batch-size",
    type=click.IntRange(1, 4096),
    default=8,
    show_default=True,
    help=(
        "Tiles per forward pass on a GPU (larger is faster and needs more memory); "
        "on a CPU tiles go through the model one at a time."
    ),
)
@device_opt
@click.option("--tta", is_flag=True, help="Average over flips and rotations (8x slower).")
@click.option(
    "--probabilities", is_flag=True, help="Also write per-cluster probabilities (float16 COG)."
)
@click.option(
    "--class",
    "classes",
    multiple=True,
    callback=_parse_classes,
    metavar="NAME=ID,...",
    help="Name clusters as a class, e.g. building=3,17 (repeatable); overrides the "
    "checkpoint's mapping. Each class gets a 0/1 COG and polygons.",
)
@polygon_opts
@nodata_opt
@click.option(
    "--block-size",
    type=click.IntRange(64, 65536),
    default=1024,
    show_default=True,
    help="Block edge in pixels; memory grows with its square.",
)
@click.option(
    "--qgis-project",
    is_flag=True,
    help="Also write <name>.qgz beside the outputs: a QGIS project of the image and every "
    "output, styled and ordered, with relative paths.",
)
@scheduler_opt
@overwrite_opt
@click.option(
    "--bands",
    default=None,
    metavar="LIST",
    help="Map bands by hand: bands of RASTER (index or name), one per model band in the "
    "model's order, e.g. 3,2,1,4. By default bands are matched by name and pixel type.",
)
def cli(
    raster: str,
    model: str,
    output: str,
    tile_size: int | None,
    overlap: int | None,
    batch_size: int,
    device: str,
    tta: bool,
    probabilities: bool,
    classes: dict[str, list[int]],
    min_area: float,
    simplify: float,
    fill_holes: bool,
    max_hole: float | None,
    regularize: bool,
    nodata,
    block_size: int,
    scheduler: str | None,
    overwrite: bool,
    bands: str | None,
    qgis_project: bool,
) -> None:
    """Segment RASTER with a trained model; write <name>_clusters.tif (COG) into OUTPUT.

    The scene is processed in blocks with overlapping, blended tiles, so any scene size fits
    in memory and there are no seams. Mapped classes (checkpoint mapping or --class) also get
    <name>_<class>.tif and polygons.
    """
    from geoseg.predict.raster import predict

    paths = predict(
        raster,
        model,
        output,
        tile_size=tile_size,
        overlap=overlap,
        batch_size=batch_size,
        device=device,
        tta=tta,
        probabilities=probabilities,
        classes=classes or None,
        polygons=polygon_kwargs(min_area, simplify, fill_holes, max_hole, regularize),
        nodata=nodata,
        block_size=block_size,
        scheduler=scheduler,
        overwrite=overwrite,
        bands=bands,
    )
    if qgis_project:
        from geoseg.vector.project import write_prediction_project

        paths["qgis-project"] = write_prediction_project(paths, raster, overwrite=overwrite)
    for role, path in paths.items():
        if not role.endswith(":style"):
            click.echo(f"{role}\t{path}")
