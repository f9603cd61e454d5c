"""The run folder's safety: what ``-o`` may be, and ``--overwrite`` as a swap.

``train --overwrite`` used to delete the old run before writing the new one: ``-o`` equal to
the input store deleted the store, a failing retrain lost the previous ``best.pt``, and ``-o``
on a folder of unrelated files wiped it. Now every refusal happens before anything is
touched, and a replacement run is written beside the old one (``.<name>.partial``) and swapped
in only when it succeeded. A first run is written in place, so a killed run keeps its
``last.pt`` and can be resumed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from geoseg.errors import BadInput
from geoseg.paths import remove

#: what ``geoseg train`` writes in a run folder (anything else means someone else's folder)
RUN_FILES = {"config.yaml", "last.pt", "best.pt", "metrics.csv", "quicklook"}
_OURS = re.compile(r"^\..+\.partial-\d+-[0-9a-f]{8}")


def is_run_folder(path: Path) -> bool:
    """An empty folder, or one holding only what ``geoseg train`` writes."""
    names = {p.name for p in path.iterdir()}
    if "config.yaml" in names and names & {"last.pt", "best.pt", "metrics.csv"}:
        return True
    return all(n in RUN_FILES or _OURS.match(n) for n in names)


def check_run_output(output: Path, store: object, *, overwrite: bool, resume: bool) -> None:
    """Refuse an output that is, holds or lies inside the input store, or an ``--overwrite``
    of a folder geoseg did not create; nothing is touched before these checks.

    Raises:
        BadInput: (``--output``) naming the conflict and the fix.
    """
    text = str(store)
    if isinstance(store, (str, Path)) and "://" not in text:
        src, out = Path(text).resolve(), output.resolve()
        if out == src or src in out.parents or out in src.parents:
            raise BadInput(
                f"{output} is, holds or lies inside the input store {store}; choose a run "
                "folder outside it",
                param="--output",
            )
    ours = output.is_dir() and is_run_folder(output)
    if overwrite and not resume and output.exists() and not ours:
        raise BadInput(
            f"{output} was not created by geoseg train (it holds other files); "
            "--overwrite only replaces a run folder: choose another output",
            param="--output",
        )


def work_folder(output: Path, *, overwrite: bool, resume: bool) -> Path:
    """Where to write the run: ``output`` itself, or for a replacement a hidden sibling that
    :func:`swap_in` renames over the old run once the new one is complete.

    Under torchrun every rank must agree on the folder, and only rank 0 may clean it, so
    distributed jobs write in place as before.
    """
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if resume or not overwrite or not output.exists() or distributed:
        return output
    work = output.with_name(f".{output.name}.partial")
    if work.exists():  # left by a replacement run that was killed
        remove(work)
    return work


def swap_in(work: Path, output: Path) -> None:
    """Replace ``output`` by the finished ``work`` folder (the old run is removed last)."""
    if work == output:
        return
    old = output.with_name(f".{output.name}.old-{os.getpid()}")
    os.replace(output, old)
    os.replace(work, output)
    remove(old)
