"""One writer per output: an advisory lock file beside a store or run folder.

Two ``geoseg tile`` runs on one store would both resume the same partial store and overwrite
each other's chunks and bookkeeping (seen: the loser crashed with ``KeyError`` and left
``.partial`` files). The second writer must instead stop at once with a message naming the
output. The lock is ``.<name>.lock`` in the output's folder, held with ``flock`` for the
whole command: the kernel drops it when the process dies, even by SIGKILL, so a killed run
never leaves a stale lock behind. Remote (fsspec URL) outputs are not locked.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

from geoseg.errors import BadInput

F = TypeVar("F", bound=Callable[..., Any])


def lock_path(output: str | Path) -> Path:
    """The lock file of ``output``: a hidden sibling ``.<name>.lock``."""
    path = Path(str(output).removeprefix("file://")).absolute()
    return path.with_name(f".{path.name}.lock")


@contextmanager
def output_lock(output: str | Path, *, param: str = "--output") -> Iterator[None]:
    """Hold the lock of ``output`` for the block; refuse at once if another process holds it.

    Raises:
        BadInput: another geoseg process is writing ``output`` (its pid in the message).
    """
    text = str(output)
    if "://" in text and not text.startswith("file://"):
        yield
        return
    import fcntl

    path = lock_path(output)
    if not path.parent.is_dir():  # the caller reports a missing folder in its own words
        yield
        return
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise BadInput(
                f"{output} is being written by another geoseg process (pid {holder}); wait for "
                "it to finish or write to another output",
                param=param,
            ) from None
        # The previous holder may have unlinked the file between our open and our lock: then
        # we hold a lock nobody else can see; start again on the current file.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        # unlink while still holding the lock, so no waiting process can lock the dead inode
        with suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


def locked_output(param_name: str = "output", *, param: str = "--output") -> Callable[[F], F]:
    """Decorator: hold :func:`output_lock` on the argument ``param_name`` during the call."""

    def wrap(fn: F) -> F:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            output = signature.bind(*args, **kwargs).arguments[param_name]
            with output_lock(output, param=param):
                return fn(*args, **kwargs)

        return inner  # type: ignore[return-value]

    return wrap
