"""Option decorators shared by several commands, declared once (as rasterio's ``rio`` does)."""

from __future__ import annotations

import click

overwrite_opt = click.option(
    "--overwrite", is_flag=True, default=False, help="Replace existing outputs."
)

output_opt = click.option("-o", "--output", required=True, type=click.Path(), help="Output path.")

bands_opt = click.option(
    "--bands",
    default=None,
    metavar="LIST",
    help="Bands by 1-based index or name, comma separated (e.g. 1,2,3,7 or red,green,blue,nir)."
    "  [default: every band]",
)

tile_size_opt = click.option(
    "--tile-size",
    type=click.IntRange(16, 8192),
    default=None,
    metavar="PX",
    help="Tile edge in pixels.  [default: 256 for tile; the training crop size for predict]",
)

overlap_opt = click.option(
    "--overlap",
    type=click.IntRange(0, 4096),
    default=None,
    metavar="PX",
    help="Overlap between neighbouring tiles in pixels.  [default: 32 for tile (a quarter of "
    "tiles under 128 px); tile size / 8 for predict]",
)

device_opt = click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="Torch device; auto picks CUDA when present.",
)

scheduler_opt = click.option(
    "--scheduler",
    default=None,
    metavar="ADDRESS",
    envvar="DASK_SCHEDULER_ADDRESS",
    help="Dask scheduler: 'threads' (default), 'sync', or a dask.distributed address "
    "such as tcp://host:8786 (also read from DASK_SCHEDULER_ADDRESS).",
)


def _parse_nodata(ctx: click.Context, param: click.Parameter, value: str | None):
    if value is None:
        return None
    if value.lower() in ("none", "null"):
        return "none"
    if value.lower() == "nan":
        return float("nan")
    try:
        return float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a number, nan or none") from None


nodata_opt = click.option(
    "--nodata",
    callback=_parse_nodata,
    default=None,
    metavar="NUMBER|nan|none",
    help="Override the source nodata value ('none' ignores the declared one).  [default: the "
    "file's own nodata, or its mask]",
)


def _parse_names(ctx: click.Context, param: click.Parameter, value: str | None) -> dict:
    """``--names`` → ``{value: name}`` (the label rules' :func:`geoseg.io.labels.parse_names`;
    a bad item exits 2 naming ``--names``)."""
    from geoseg.io.labels import parse_names

    return parse_names(value)


names_opt = click.option(
    "--names",
    callback=_parse_names,
    default=None,
    metavar="V=NAME,...",
    help="Class names of label values, e.g. 1=building,2=road,3=tree ('isprs' for the ISPRS "
    "classes where labels are ISPRS).",
)

label_column_opt = click.option(
    "--column",
    default=None,
    help="Vector labels: class column, integers or names (default: a column named label, "
    "class, class_id, classname or category when it holds several classes; else every "
    "polygon is 1=building).",
)


_polygon_options = (
    click.option(
        "--min-area",
        type=click.FloatRange(min=0),
        default=None,
        metavar="M2",
        help="Drop polygons smaller than this, in square metres (also on EPSG:4326 rasters).  "
        "[default: 0; predict with a few-label head: the head's speck size, 10 m²]",
    ),
    click.option(
        "--simplify",
        type=click.FloatRange(min=0),
        default=0.0,
        show_default=True,
        metavar="M",
        help="Polygon simplification tolerance in metres.",
    ),
    click.option("--fill-holes", is_flag=True, help="Fill every hole in the polygons."),
    click.option(
        "--max-hole",
        type=click.FloatRange(min=0),
        default=None,
        metavar="M2",
        help="Fill only holes smaller than this, in square metres.  [default: no limit with "
        "--fill-holes, else no filling]",
    ),
    click.option(
        "--regularize",
        is_flag=True,
        help="Square off footprints that fit their minimum rotated rectangle.",
    ),
)


def polygon_opts(command):
    """--min-area, --simplify, --fill-holes, --max-hole, --regularize (vectorize, predict)."""
    for option in reversed(_polygon_options):
        command = option(command)
    return command


def polygon_kwargs(
    min_area: float, simplify: float, fill_holes: bool, max_hole: float | None, regularize: bool
) -> dict:
    """The :func:`geoseg.vector.vectorize.vectorize` keywords of :func:`polygon_opts`' values.

    Options left at their defaults are left out, so that predict can apply the clean-up a
    few-label head was fitted with (``ckpt["fewshot"]["polygons"]``) unless the user overrides it.
    """
    kwargs = {"simplify": simplify, "regularize": regularize}
    if min_area is not None:
        kwargs["min_area"] = min_area
    if max_hole is not None or fill_holes:
        kwargs["fill_holes"] = max_hole if max_hole is not None else fill_holes
    return kwargs


json_opt = click.option(
    "--json",
    "json_path",
    is_flag=False,
    flag_value="-",
    default=None,
    metavar="[FILE]",
    help="Write the results as JSON to FILE (the table is still printed), or to stdout "
    "instead of the table when given alone or as '-'.",
)


def write_json(json_path: str | None, data, *, overwrite: bool) -> bool:
    """Write ``data`` as ``--json`` asks (see :data:`json_opt`); True when it went to stdout.

    One grammar for every command: bare ``--json`` (or ``--json -``) prints JSON instead of
    the table, ``--json FILE`` writes FILE atomically and the table is still printed.
    """
    import json

    if json_path is None:
        return False
    text = json.dumps(data, indent=2, default=str)
    if json_path == "-":
        click.echo(text)
        return True
    write_text(json_path, text, overwrite=overwrite, param="--json")
    return False


def write_text(path: str, text: str, *, overwrite: bool, param: str) -> None:
    """Write ``text`` to ``path`` atomically (one trailing newline), or to stdout for ``-``."""
    if path == "-":
        click.echo(text)
        return
    from geoseg.paths import atomic_output

    with atomic_output(path, overwrite=overwrite, param=param) as tmp:
        tmp.write_text(text if text.endswith("\n") else text + "\n")


def check_train_config(config, overrides) -> None:
    """Parse a training config and its ``--set`` overrides now, so a typo fails (exit 2)
    before ``geoseg train`` imports torch (seconds on a busy machine)."""
    from geoseg.config import TrainConfig, load_config

    load_config(TrainConfig, config, overrides)
