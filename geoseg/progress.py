"""Progress bars on stderr and dask execution (local threads or a distributed cluster).

Kept in one place so ``-q`` silences every bar and every command runs the same dask graph
locally or on ``--scheduler tcp://host:8786`` / ``DASK_SCHEDULER_ADDRESS``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tqdm import tqdm

_enabled = True


def set_enabled(enabled: bool) -> None:
    """Switch progress bars on or off for the whole process (the CLI's ``-q``)."""
    global _enabled
    _enabled = enabled


def progress(
    iterable: Iterable[Any] | None = None,
    *,
    total: int | None = None,
    desc: str | None = None,
    unit: str = "it",
    leave: bool = False,
) -> tqdm | _Silent:
    """A tqdm bar on stderr that respects ``-q``.

    Under ``-q`` tqdm is not even imported: a stand-in that does nothing takes its place
    (tqdm's import, with the multiprocessing modules it pulls in, was ~30-50 ms of a short
    command such as a one-class ``geoseg vectorize`` at 2048², issue 11).
    """
    if not _enabled:
        return _Silent(iterable)
    from tqdm import tqdm  # the terminal bar: geoseg draws on stderr, never in a notebook widget

    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        leave=leave,
        file=sys.stderr,
        disable=not _enabled,
        dynamic_ncols=True,
    )


class _Silent:
    """A progress bar that shows nothing: the part of tqdm's interface geoseg uses."""

    def __init__(self, iterable: Iterable[Any] | None = None) -> None:
        self.iterable = iterable

    def __iter__(self) -> Iterator[Any]:
        return iter(self.iterable if self.iterable is not None else ())

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: float = 1) -> None:
        return None

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        return None

    def close(self) -> None:
        return None


def scheduler_address(scheduler: str | None) -> str | None:
    """The distributed scheduler to use: the option, else ``DASK_SCHEDULER_ADDRESS``, else none."""
    if scheduler and scheduler not in ("threads", "sync", "local"):
        return scheduler
    if scheduler in ("threads", "sync", "local"):
        return None
    return os.environ.get("DASK_SCHEDULER_ADDRESS") or None


def run_tasks(
    tasks: Sequence[Any],
    *,
    scheduler: str | None = None,
    desc: str = "blocks",
    num_workers: int | None = None,
) -> list[Any]:
    """Compute a list of independent ``dask.delayed`` tasks with a progress bar.

    Locally they run on the threaded scheduler (the heavy work releases the GIL: GDAL, numpy,
    torch); with a scheduler address the same tasks go to a dask.distributed cluster.

    Args:
        tasks: delayed objects, one per block.
        scheduler: ``None``/``"threads"`` for local threads, ``"sync"`` for one thread
            (debugging), or a ``tcp://`` address.
        desc: label of the progress bar.
        num_workers: local thread count (default: dask's, the number of cores).

    Returns:
        The computed results, in the order of ``tasks``.
    """
    import dask
    from dask.callbacks import Callback

    address = scheduler_address(scheduler)
    if address:
        from distributed import Client, as_completed

        with Client(address) as client:
            futures = client.compute(list(tasks))
            index = {f.key: i for i, f in enumerate(futures)}
            results: list[Any] = [None] * len(futures)
            with progress(total=len(futures), desc=desc, unit="block") as bar:
                for fut in as_completed(futures):
                    results[index[fut.key]] = fut.result()
                    bar.update(1)
            return results

    bar = progress(total=len(tasks), desc=desc, unit="block")
    keys = {t.key for t in tasks}

    class _Bar(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):  # noqa: ARG002
            if key in keys:
                bar.update(1)

    # the scheduler functions themselves, not their names: a name makes dask import
    # distributed to look for a client (about a second of CPU per command)
    import dask.local
    import dask.threaded

    get = dask.local.get_sync if scheduler == "sync" else dask.threaded.get
    try:
        with _Bar():
            out = dask.compute(*tasks, scheduler=get, num_workers=num_workers)
    finally:
        bar.close()
    return list(out)


def iter_in_order(
    calls: Sequence[Callable[[], Any]],
    *,
    workers: int,
    desc: str = "blocks",
    ahead: int | None = 2,
) -> Iterator[Any]:
    """Results of zero-argument ``calls``, in order, computed on ``workers`` local threads.

    A plain thread pool, not dask, for work on one machine whose memory depends on the order
    it runs in. Threads start the calls first in, first out (dask's threaded scheduler picks
    an order of its own: predict's 64 blocks of an 8192² scene ran shuffled and kept 100
    groups of border tiles, 250 MiB, instead of a row's 8). ``ahead`` bounds the calls in
    flight to that many per thread, so results waiting to be consumed stay a few blocks'
    worth (vectorize writes each block's polygons as they come); ``None`` submits them all
    (predict, whose calls write their own outputs and return nothing). The first failure
    cancels the calls not yet started and is raised; ``workers=1`` runs them in this thread.
    """
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with progress(total=len(calls), desc=desc, unit="block") as bar:
        if workers <= 1:
            for call in calls:
                yield call()
                bar.update(1)
            return
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=desc)
        try:
            first = len(calls) if ahead is None else ahead * workers
            pending = deque(pool.submit(call) for call in calls[:first])
            waiting = deque(calls[first:])
            while pending:
                result = pending.popleft().result()
                if waiting:
                    pending.append(pool.submit(waiting.popleft()))
                yield result
                bar.update(1)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def run_in_order(
    calls: Sequence[Callable[[], Any]], *, workers: int, desc: str = "blocks"
) -> list[Any]:
    """:func:`iter_in_order` with every call submitted at once, its results as a list."""
    return list(iter_in_order(calls, workers=workers, desc=desc, ahead=None))
