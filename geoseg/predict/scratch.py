"""Per-thread work arrays that blocks reuse instead of allocating their own.

A block needs a few arrays of the block's size (blended probabilities, weight sums, the
arg-max) and a few of a batch's size (normalised tiles). Allocated afresh for every block,
each one over glibc's mmap threshold is a new mapping whose pages the kernel zeroes on first
touch (measured: 9 s of system time on 16 blocks of a 4096² k-means run, as much as the
user time), and below that threshold the per-thread heaps grow and fragment, so peak RSS
grew with the number of blocks, i.e. with the scene. Reused, the pages are touched once per
thread and memory is the block's whatever the scene.

One :class:`Scratch` lives for one predict run and is dropped with it; every dask worker
thread gets its own arrays, so blocks running side by side never share one.

glibc's malloc keeps its default, adaptive mmap threshold. predict used to fix it at 2 MiB
so large arrays went back to the system on free; with the block arrays reused here and tiles
one at a time through the model on a CPU, that only made every conv activation a fresh
mapping: on a quiet machine IIC 2048² took 8.6 s with it against 5.95 s without (system
time 4.0 s against 0.8 s), k-means 8192² 17.4 s against 14.8 s, and the peak RSS was 912
against 941 MiB at 8192² and 797 against 866 MiB at 2048² (8192² / 2048²: 1.14 with it,
1.09 without).
"""

from __future__ import annotations

import threading

import numpy as np


class Scratch:
    """Named arrays per thread, grown to the largest size asked for and then reused."""

    def __init__(self) -> None:
        self._local = threading.local()

    def array(self, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        """A C-contiguous array of ``shape`` and ``dtype`` for this thread, content undefined.

        The same ``name`` on the same thread returns a view of the same memory: the caller
        must be done with the previous one (a block is, once it has handed its arrays on).
        """
        dtype = np.dtype(dtype)
        n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        pool = self._local.__dict__.setdefault("pool", {})
        buf = pool.get(name)
        if buf is None or buf.size < n:
            buf = pool[name] = np.empty(n, np.uint8)
        return buf[:n].view(dtype).reshape(shape)
