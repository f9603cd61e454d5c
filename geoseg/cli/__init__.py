"""The ``geoseg`` click group.

Commands live one per module (``geoseg/cli/<name>.py``, each exposing a click command called
``cli``) and are imported only when invoked, so ``geoseg --help`` stays instant. Errors follow
DESIGN.md: bad input → one line on stderr and exit 2; runtime failure → exit 1; a traceback
only with ``-v``.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from geoseg import __version__

#: command name → (module, one-line help shown by ``geoseg --help``)
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("geoseg.cli.info", "Describe a raster or a tile store."),
    "tile": ("geoseg.cli.tile", "Stage GeoTIFFs into a Zarr tile store."),
    "train": ("geoseg.cli.train", "Train IIC / AC or fit a classical baseline."),
    "predict": ("geoseg.cli.predict", "Tiled inference over a scene, written as COGs."),
    "map": ("geoseg.cli.map", "Name clusters from a few labels; store the mapping."),
    "vectorize": ("geoseg.cli.vectorize", "Class raster to polygons (GeoPackage)."),
    "score": ("geoseg.cli.score", "SpaceNet building F1 of polygons vs footprints."),
    "evaluate": ("geoseg.cli.evaluate", "Pixel metrics of a cluster/class raster."),
    "report": ("geoseg.cli.report", "HTML page of a run or output folder (maps, score, curves)."),
    "demo": ("geoseg.cli.demo", "Whole chain on the bundled SpaceNet Vegas sample."),
}

log = logging.getLogger("geoseg")

#: GDAL block cache (MiB) for CLI processes. GDAL's default, 5% of RAM, lets the cache grow
#: with the scene, which breaks "memory bounded by the block" (measured: predict peak RSS
#: 8192² / 2048² went from 1.25 to 1.03 with a fixed cache). It is set once at process start:
#: changing it later (rasterio.Env(GDAL_CACHEMAX=...)) flushes every open dataset's blocks
#: process-wide and crashed a test worker. An exported GDAL_CACHEMAX wins.
GDAL_CACHE_MB = 64


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module = importlib.import_module(COMMANDS[name][0])
        return module.cli

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_) for name, (_, help_) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="geoseg")
@click.option("-v", "--verbose", count=True, help="More logging; tracebacks on errors.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors; no progress bars.")
@click.pass_context
def group(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Unsupervised segmentation of multispectral satellite images, for GIS users."""
    from geoseg.progress import set_enabled

    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    # geoseg's own progress messages at INFO; other libraries (GDAL via rasterio, pyogrio,
    # distributed) only at WARNING unless -v, so a failing command prints just its one line.
    if quiet:
        ours, theirs = logging.ERROR, logging.ERROR
    else:
        ours = logging.DEBUG if verbose else logging.INFO
        theirs = logging.DEBUG if verbose > 1 else (logging.INFO if verbose else logging.WARNING)
    logging.basicConfig(
        level=theirs, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    logging.getLogger("geoseg").setLevel(ours)
    set_enabled(not quiet)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the group and apply the exit-code convention."""
    import os

    from geoseg.errors import GeoSegError

    os.environ.setdefault("GDAL_CACHEMAX", str(GDAL_CACHE_MB))
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = any(
        a in ("-v", "--verbose") or (a.startswith("-v") and set(a[1:]) == {"v"}) for a in argv
    )
    try:
        rv = group.main(args=argv, prog_name="geoseg", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except click.UsageError as exc:
        # One line naming the argument, not click's three-line usage block.
        click.echo(f"Error: {_one_line(exc.format_message())}", err=True)
        sys.exit(2)
    except GeoSegError as exc:
        if verbose:
            log.exception("failed")
        click.echo(f"Error: {_one_line(exc)}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug or an environment failure: exit 1, traceback on -v
        if verbose:
            raise
        click.echo(
            f"Error: {exc.__class__.__name__}: {_one_line(exc)} (rerun with -v for details)",
            err=True,
        )
        sys.exit(1)
    sys.exit(rv if isinstance(rv, int) else 0)
