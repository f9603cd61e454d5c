"""Output safety: never overwrite without consent, never leave a half-written output.

Every writer in geoseg goes through :func:`atomic_output`: it works on a hidden temporary name
in the destination folder (same filesystem, so the final rename is atomic) and only replaces
the real name once the output is complete.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from geoseg.errors import BadInput, OutputExists


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
    """A hidden sibling of ``path`` keeping its suffix, so GDAL/OGR still infer the driver."""
    return path.with_name(f".{path.stem}.partial-{uuid.uuid4().hex[:8]}{path.suffix}")


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
