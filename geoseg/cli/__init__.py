"""The ``geoseg`` click group.

Commands live one per module (``geoseg/cli/<name>.py``, each exposing a click command called
``cli``) and are imported only when invoked, so ``geoseg --help`` stays instant. Errors follow
DESIGN.md: bad input → one line on stderr and exit 2; runtime failure → exit 1; a traceback
only with ``-v``.
"""

from __future__ import annotations

import importlib
import logging
import re
import sys
from pathlib import Path

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
#: 8192² / 2048² went from 1.25 to 1.03 with a fixed cache). Every command reads and writes
#: in blocks it visits once, so a small cache costs nothing: 16 MiB instead of 64 took
#: predict's 8192² peak from 949 to 898 MiB (a 2048² scene never fills either), and
#: ``tile`` (4096²) and ``vectorize`` (8192²) used 0.91x and 0.95x the CPU (farm-bench,
#: 3 pairs). It is set once at process start: changing it later (rasterio.Env(GDAL_CACHEMAX=
#: ...)) flushes every open dataset's blocks process-wide and crashed a test worker. An
#: exported GDAL_CACHEMAX wins.
GDAL_CACHE_MB = 16


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module = importlib.import_module(COMMANDS[name][0])
        return module.cli

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Accept ``-v``/``-q`` after the subcommand too, and catch ``--bands`` with spaces."""
        args = _global_flags_first(list(args))
        _check_band_list(args)
        return super().parse_args(ctx, args)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_) for name, (_, help_) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


_GLOBAL_FLAGS = ("-v", "--verbose", "-q", "--quiet")
_BAND_WORD = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$|^[0-9]+$")


def _is_global_flag(arg: str) -> bool:
    return arg in _GLOBAL_FLAGS or (len(arg) > 1 and arg[0] == "-" and set(arg[1:]) == {"v"})


def _global_flags_first(args: list[str]) -> list[str]:
    """Move ``-v``/``-vv``/``-q`` given after the subcommand in front of it.

    They are group options, so click only accepts them before the subcommand; users type
    them anywhere (``geoseg predict ... -v``). Nothing after ``--`` is moved.
    """
    command = next((i for i, a in enumerate(args) if not a.startswith("-")), None)
    if command is None:
        return args
    end = args.index("--") if "--" in args else len(args)
    moved = [a for a in args[command + 1 : end] if _is_global_flag(a)]
    if not moved:
        return args
    rest = [a for a in args[command + 1 : end] if not _is_global_flag(a)]
    return [*args[:command], *moved, args[command], *rest, *args[end:]]


def _check_band_list(args: list[str]) -> None:
    """``--bands red green blue``: the extra names would become inputs ("green does not
    exist"); say what was meant instead."""
    if "--bands" not in args:
        return
    i = args.index("--bands")
    words = []
    for arg in args[i + 1 :]:
        if arg.startswith("-") or not _BAND_WORD.match(arg) or Path(arg).exists():
            break
        words.append(arg)
    if len(words) > 1:
        raise click.UsageError(
            f"--bands: separate bands with commas, not spaces: --bands {','.join(words)}"
        )


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


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C so every cleanup (``finally`` blocks,
    atomic outputs, temporary stitch files) runs before the process exits with 143."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the group and apply the exit-code convention.

    Exit codes: 0 success, 2 bad input (one line naming the argument or file and the fix),
    1 runtime failure, 130 Ctrl-C, 143 SIGTERM (partial outputs removed in both cases).
    """
    import os
    import signal
    import threading

    os.environ.setdefault("GDAL_CACHEMAX", str(GDAL_CACHE_MB))
    argv = list(sys.argv[1:] if argv is None else argv)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        code = _run(argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    sys.exit(code)


def _interrupt_code(exc: BaseException) -> int | None:
    """130 for Ctrl-C, 143 for SIGTERM, None when ``exc`` is not an interruption.

    click turns a KeyboardInterrupt into ``Abort`` (its cause), so the chain is searched.
    """
    for e in _chain(exc):
        if isinstance(e, Terminated):
            return 143
        if isinstance(e, KeyboardInterrupt):
            return 130
    return None


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def _run(argv: list[str]) -> int:
    from geoseg.errors import GeoSegError

    verbose = any(
        a in ("-v", "--verbose") or (a.startswith("-v") and set(a[1:]) == {"v"}) for a in argv
    )
    try:
        rv = group.main(args=argv, prog_name="geoseg", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.UsageError as exc:
        # One line naming the argument, not click's three-line usage block.
        click.echo(f"Error: {_one_line(exc.format_message())}", err=True)
        return 2
    except GeoSegError as exc:
        if verbose:
            log.exception("failed")
        click.echo(f"Error: {_one_line(exc)}", err=True)
        return exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt) as exc:
        code = _interrupt_code(exc) or 1
        what = "SIGTERM" if code == 143 else "Ctrl-C"
        # zarr's event loop complains about its cancelled writes at exit: noise, not news
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        click.echo(f"Interrupted ({what}).", err=True)
        return code
    except Exception as exc:  # a bug or an environment failure: exit 1, traceback on -v
        explained = _explain(exc, argv)
        if verbose:
            raise
        if explained is not None:
            code, message = explained
            click.echo(f"Error: {_one_line(message)}", err=True)
            return code
        click.echo(
            f"Error: {exc.__class__.__name__}: {_one_line(exc)} (rerun with -v for details)",
            err=True,
        )
        return 1
    return rv if isinstance(rv, int) else 0


#: what libraries say when a write hit a full disk without an errno (torch.save, GDAL)
_DISK_FULL_TEXT = (
    "no space left on device",
    "file write failed",
    "free disk space",
    "io error writing",
    "write error",
    "error writing",
)
_OUTPUT_OPTIONS = ("-o", "--output")
#: what GDAL says (no errno) when it cannot create a file
_DENIED_TEXT = ("read-only file system", "permission denied")


def _explain(exc: Exception, argv: list[str]) -> tuple[int, str] | None:
    """``(exit code, one-line message)`` for a library exception caused by the user's data or
    disk, or ``None`` for a genuine internal failure (reported with its class name)."""
    import errno

    chain = _chain(exc)
    for e in chain:
        full = isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)
        if full or any(t in str(e).lower() for t in _DISK_FULL_TEXT):
            where = _full_disk_path(getattr(e, "filename", None), argv, trust=full)
            if where is not None:
                return 1, f"no space left on {where}; free some space there or write elsewhere"
    for e in chain:
        denied = isinstance(e, OSError) and e.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
        said = next((t for t in _DENIED_TEXT if t in str(e).lower()), None)
        if denied or said:
            output = next(
                (v for f, v in zip(argv, argv[1:], strict=False) if f in _OUTPUT_OPTIONS), None
            )
            where = output or getattr(e, "filename", None) or "the output"
            why = e.strerror if denied and e.strerror else said
            return 2, (
                f"cannot write {where} ({why}); choose a folder you can write to, or fix its "
                "permissions"
            )
    for e in chain:
        text = str(e).lower()
        # "checksum": a tile store's crc32c codec (issue 11) finds a cut or corrupted chunk
        if "decompress" in text or "checksum" in text or "codec" in text and "decod" in text:
            stores = [a for a in argv if a.rstrip("/").endswith(".zarr")] or ["the tile store"]
            return 2, (
                f"{', '.join(stores)}: a chunk cannot be decoded ({_one_line(e)}); the store is "
                "damaged (a partial copy?): copy it again or rerun geoseg tile with --overwrite"
            )
    for e in chain:
        if type(e).__name__ == "GEOSException":
            from geoseg.io.labels import VECTOR_SUFFIXES

            polygons = (*VECTOR_SUFFIXES, ".csv")  # and SpaceNet CSVs (WKT polygons)
            files = [a for a in argv if a.lower().endswith(polygons)]
            named = ", ".join(files) or "an input vector file"
            return 2, (
                f"{named}: invalid geometry ({_one_line(e)}); repair it (e.g. "
                "ogr2ogr -makevalid fixed.gpkg input.gpkg) and rerun"
            )
    return None


def _full_disk_path(filename: object, argv: list[str], *, trust: bool) -> str | None:
    """The folder that is full: the failing file's, else the command's output's.

    A message-only match (no errno) is trusted only if that filesystem really is nearly full.
    """
    import shutil
    from pathlib import Path

    candidates = []
    if filename:
        candidates.append(Path(str(filename)))
    for flag, value in zip(argv, argv[1:], strict=False):
        if flag in _OUTPUT_OPTIONS:
            candidates.append(Path(value))
    for path in candidates:
        folder = path if path.is_dir() else path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if trust or shutil.disk_usage(folder).free < 64 * 2**20:
            return str(folder)
    return None
