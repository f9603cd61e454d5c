"""Output safety: never overwrite without consent, never leave a half-written output.

Every writer in geoseg goes through :func:`atomic_output`: it works on a hidden temporary name
in the destination folder (same filesystem, so the final rename is atomic) and only replaces
the real name once the output is complete.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from geoseg.errors import BadInput, OutputExists

log = logging.getLogger(__name__)


def check_output(path: str | Path, *, overwrite: bool, param: str = "--output") -> Path:
    """Refuse an existing output unless ``overwrite`` (one message naming the fix)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExists(f"{path} already exists; pass --overwrite to replace it", param=param)
    if path.parent and not path.parent.exists():
        raise BadInput(f"folder {path.parent} does not exist; create it first", param=param)
    return path


def check_input(path: str | Path, *, param: str = "INPUT") -> Path:
    """A clear one-line error for a missing input file or folder."""
    path = Path(path)
    if not path.exists():
        raise BadInput(f"{path} does not exist; check the path", param=param)
    return path


def remove(path: Path) -> None:
    """Remove a file or a folder tree, whichever ``path`` is."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def temporary_name(path: Path) -> Path:
    """A hidden sibling of ``path`` keeping its suffix, so GDAL/OGR still infer the driver.

    The name carries the writer's pid, so a later run can tell the leftovers of a killed
    process (SIGKILL cannot be caught) from the files of one still running
    (:func:`remove_stale_partials`).
    """
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return path.with_name(f".{path.stem}.partial-{tag}{path.suffix}")


_PARTIAL = re.compile(r"^\..+\.partial-(\d+)-[0-9a-f]{8}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_partials(folder: str | Path) -> list[Path]:
    """Remove the temporary outputs in ``folder`` whose writer is no longer running.

    Returns:
        the removed paths (logged, so a user sees where the space came back from).
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        m = _PARTIAL.match(p.name)
        if m and int(m[1]) != os.getpid() and not _alive(int(m[1])):
            remove(p)
            removed.append(p)
    if removed:
        log.info("removed %d partial file(s) of an interrupted run in %s", len(removed), folder)
    return removed


@contextmanager
def atomic_output(
    path: str | Path, *, overwrite: bool = False, param: str = "--output"
) -> Iterator[Path]:
    """Yield a temporary path to write; rename it to ``path`` only if the block succeeds.

    Works for files and for folders (a Zarr store, a run directory). On any exception the
    temporary output is removed and an existing ``path`` is left untouched.
    """
    path = check_output(path, overwrite=overwrite, param=param)
    tmp = temporary_name(path)
    try:
        yield tmp
    except BaseException:
        remove(tmp)
        raise
    if not tmp.exists():
        raise RuntimeError(f"internal error: nothing was written to {tmp}")
    if path.exists():
        remove(path)
    os.replace(tmp, path)
