"""Random training crops from a tile store, reproducible from ``(seed, step)`` alone.

Each batch's randomness comes from a generator seeded with ``(seed, step)``, so the "sampler
position" of a resumed run is just its step number: resuming at step N draws exactly the crops
an uninterrupted run would have drawn, with no sampler state to save. The same property lets
data-loader workers cut batches ahead of the model (:func:`step_batches`): batch ``s`` is the
same whichever process cuts it, so the number of workers never changes a run.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from geoseg.errors import BadInput
from geoseg.io.bands import BandSpec

log = logging.getLogger(__name__)


def step_generator(seed: int, step: int, stream: int = 0, rank: int = 0) -> np.random.Generator:
    """The numpy generator of one step (``stream`` separates crops from augmentation; ``rank``
    gives each data-parallel process its own crops, and leaves rank 0's as a single process's).
    """
    return np.random.default_rng([seed, step, stream] + ([rank] if rank else []))


class CropSampler:
    """Draw normalised random crops from the valid parts of a tile store.

    Args:
        store: a :class:`geoseg.tiles.TileStore`.
        crop_size: crop edge; capped at the store's tile size.
        batch_size: crops per batch.
        min_valid: fraction of valid pixels a crop should have (best of a few tries otherwise).
        seed: run seed.
        rank: data-parallel rank (each rank draws different crops).
        size_multiple: crops are rounded down to a multiple of this (the model's requirement).
        cache_mb: decoded tiles kept in memory (per process), so a tile drawn again is not
            read and decompressed again; crops are cut from the same arrays either way.
    """

    def __init__(
        self,
        store: Any,
        *,
        crop_size: int,
        batch_size: int,
        min_valid: float,
        seed: int,
        rank: int = 0,
        size_multiple: int = 1,
        cache_mb: float = 256.0,
    ):
        self.store = store
        self.bands = BandSpec.of_store(store)
        self.batch_size = batch_size
        self.min_valid = min_valid
        self.seed = seed
        self.rank = rank
        size = min(crop_size, store.tile_size)
        self.crop_size = max(size_multiple, size - size % max(1, size_multiple))
        n_valid = np.asarray(store.origin[:])[:, 3] if store.n_tiles else np.zeros(0)
        need = min_valid * self.crop_size**2
        self.tiles = np.flatnonzero(n_valid >= need)
        if self.tiles.size == 0:
            self.tiles = np.flatnonzero(n_valid > 0)
        if self.tiles.size == 0:
            raise BadInput(f"{store.url} has no valid pixels to train on", param="STORE")
        self.stats = store.stats
        self.has_labels = bool(store.has_labels)
        self.cache_bytes = int(cache_mb * 2**20)
        self._cache: OrderedDict[int, tuple] = OrderedDict()
        self._cached = 0

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the open store (a worker opens its own: :meth:`reopen`)."""
        state = dict(self.__dict__)
        state.update(store=None, _cache=OrderedDict(), _cached=0)
        state["_url"] = self.store.url
        return state

    def reopen(self) -> None:
        """Open the store again in this process (a data-loader worker): zarr handles and their
        I/O threads are not shared across processes, and the tile cache starts empty."""
        from geoseg.tiles.store import open_store

        url = self.__dict__.pop("_url", None) or self.store.url
        self.store = open_store(url)
        self._cache, self._cached = OrderedDict(), 0

    def _tile(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Tile ``i``'s image, valid mask and label, decoded once and kept (LRU, bounded)."""
        hit = self._cache.get(i)
        if hit is not None:
            self._cache.move_to_end(i)
            return hit
        store = self.store
        arrays = (
            np.asarray(store.image[i]),
            np.asarray(store.valid[i]),
            np.asarray(store.label[i]) if self.has_labels else None,
        )
        size = sum(a.nbytes for a in arrays if a is not None)
        if size <= self.cache_bytes:
            self._cache[i] = arrays
            self._cached += size
            while self._cached > self.cache_bytes:
                _, old = self._cache.popitem(last=False)
                self._cached -= sum(a.nbytes for a in old if a is not None)
        return arrays

    def _crop(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """One crop: the best of a few random windows by valid fraction (rejection sampling)."""
        c, t = self.crop_size, self.store.tile_size
        best = None
        for _ in range(8):
            i = int(rng.choice(self.tiles))
            r, q = (int(v) for v in rng.integers(0, t - c + 1, size=2))
            valid = self._tile(i)[1][r : r + c, q : q + c]
            frac = valid.mean()
            if best is None or frac > best[0]:
                best = (frac, i, r, q, valid)
            if frac >= self.min_valid:
                break
        _, i, r, q, valid = best
        image, _, label = self._tile(i)
        image = image[:, r : r + c, q : q + c]
        label = label[r : r + c, q : q + c] if label is not None else None
        return image, valid, label

    def batch(self, step: int, *, stream: int = 0) -> dict[str, torch.Tensor | None]:
        """The batch of ``step``: ``image`` (B,C,h,w) float32 normalised, ``valid``, ``label``."""
        rng = step_generator(self.seed, step, stream, self.rank)
        crops = [self._crop(rng) for _ in range(self.batch_size)]
        # invalid and non-finite pixels become 0, so no NaN ever reaches a loss
        image, valid = self.bands.model_input(
            np.stack([im for im, _, _ in crops]), np.stack([v for _, v, _ in crops])
        )
        label = np.stack([lb for _, _, lb in crops]) if self.has_labels else None
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
            "valid": torch.from_numpy(valid),
            "label": None if label is None else torch.from_numpy(label),
        }

    def tile(self, i: int) -> dict[str, Any]:
        """Whole tile ``i`` normalised (for quicklooks and baselines): image (C,T,T), valid, raw."""
        data = self.store.read(i)
        raw = data["image"]
        image, data["valid"] = self.bands.model_input(raw, data["valid"])
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
            "valid": torch.from_numpy(data["valid"]),
            "label": data["label"],
            "raw": raw,
        }

    def fixed_tiles(self, n: int) -> list[int]:
        """``n`` tiles spread evenly over the store, the same in every run (for quicklooks)."""
        if n <= 0:
            return []
        picks = np.linspace(0, self.tiles.size - 1, num=min(n, self.tiles.size))
        return [int(self.tiles[int(round(p))]) for p in picks]


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's share)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def loader_workers(setting: int, *, cuda: bool, store: Any) -> int:
    """Data-loader worker processes for ``data.workers`` (``-1`` = choose).

    Chosen: on CUDA up to 8 (cores − 1), so crops for a fast GPU are cut in parallel; on CPU
    one when there are at least two cores (reads and crops overlap the model step, whose
    threads get the other cores); none for a store another process cannot open (``memory://``).
    """
    if str(getattr(store, "url", "")).startswith("memory://"):
        return 0
    if setting >= 0:
        return setting
    cores = available_cores()
    if cuda:
        return max(1, min(8, cores - 1))
    return 1 if cores >= 2 else 0


def torch_threads(workers: int) -> int:
    """Intra-op threads for the training process: the cores left by the loader workers.

    ``OMP_NUM_THREADS``, when set, is an upper bound (the user's or a test runner's share).
    Oversubscribed cores cost far more than they give: under load, torch's default (every
    core) made the same 200 steps use 177 s of CPU instead of 37 s.
    """
    threads = max(1, available_cores() - workers)
    limit = os.environ.get("OMP_NUM_THREADS", "")
    if limit.isdigit() and int(limit) > 0:
        threads = min(threads, int(limit))
    return threads


class _StepBatches(torch.utils.data.Dataset):
    """Item ``k`` is the batch of step ``start + k``: a pure function of (seed, step)."""

    def __init__(self, sampler: CropSampler, start: int, stop: int):
        self.sampler, self.start, self.stop = sampler, start, stop

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor | None]:
        return self.sampler.batch(self.start + k)


def _open_per_worker(_: int) -> None:
    """worker_init_fn: each worker opens the Zarr store itself (no shared zarr handles)."""
    torch.set_num_threads(1)  # a worker cuts crops with numpy; torch threads would only compete
    torch.utils.data.get_worker_info().dataset.sampler.reopen()


def _collate(batch: dict[str, torch.Tensor | None]) -> dict[str, torch.Tensor | None]:
    return batch  # a whole batch per item already (DataLoader's batch_size=None)


def step_batches(
    sampler: CropSampler,
    start: int,
    stop: int,
    *,
    workers: int = 0,
    pin_memory: bool = False,
    prefetch: int = 4,
) -> Iterator[dict[str, torch.Tensor | None]]:
    """The batches of steps ``start..stop-1`` in order, cut ``workers`` processes ahead.

    With ``workers == 0`` they are cut on demand in this thread (exactly the same tensors).
    ``pin_memory`` pins them (in the loader's pinning thread) for asynchronous copies to a GPU.
    With workers, the first batch is cut in this thread while the workers start on the next
    ones: the first step would otherwise wait for a worker process to start, open the store
    and cut its first batch (issue 11: most of the measured stall of a short run).
    """

    def pinned(batch):
        if not pin_memory:
            return batch
        return {k: (v.pin_memory() if v is not None else None) for k, v in batch.items()}

    if workers <= 0:
        for step in range(start, stop):
            yield pinned(sampler.batch(step))
        return
    if start >= stop:
        return
    if start + 1 == stop:  # one batch: no process to start for nothing
        yield pinned(sampler.batch(start))
        return
    ahead = iter(_loader(sampler, start + 1, stop, workers, pin_memory, prefetch))  # starts now
    yield pinned(sampler.batch(start))
    yield from ahead


def _loader(sampler, start: int, stop: int, workers: int, pin_memory: bool, prefetch: int):
    """The DataLoader whose workers cut the batches of steps ``start..stop-1``."""
    return torch.utils.data.DataLoader(
        _StepBatches(sampler, start, stop),
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        worker_init_fn=_open_per_worker,
        collate_fn=_collate,
        pin_memory=pin_memory,
        prefetch_factor=prefetch,
        persistent_workers=False,
    )


class StallMeter:
    """Time the training thread waits for batches, against the time its steps take.

    ``data_stall = waited / stepped``: the fraction of training-step wall time spent waiting
    for input (evaluation, checkpoints and quicklooks are outside both figures).
    """

    def __init__(self) -> None:
        self.waited = 0.0
        self.stepped = 0.0
        self.steps = 0
        self._t0: float | None = None

    def begin(self) -> None:
        """A step starts (before its batch is asked for)."""
        self._t0 = time.perf_counter()

    def got_batch(self) -> None:
        """Its batch arrived."""
        self.waited += time.perf_counter() - self._t0

    def end(self) -> None:
        """The step's work was issued (and, at sync points, done)."""
        self.stepped += time.perf_counter() - self._t0
        self.steps += 1

    @property
    def stall(self) -> float:
        return self.waited / self.stepped if self.stepped > 0 else 0.0


def rng_state() -> dict[str, Any]:
    """Global RNG states as tensors and plain types (``weights_only`` loadable)."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {"version": version, "state": list(internal), "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (model initialisation draws from torch's global RNG)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
