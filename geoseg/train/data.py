"""Random training crops from a tile store, reproducible from ``(seed, step)`` alone.

Each batch's randomness comes from a generator seeded with ``(seed, step)``, so the "sampler
position" of a resumed run is just its step number: resuming at step N draws exactly the crops
an uninterrupted run would have drawn, with no sampler state to save.
"""

from __future__ import annotations

import logging
import random
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

    def _crop(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """One crop: the best of a few random windows by valid fraction (rejection sampling)."""
        c, t = self.crop_size, self.store.tile_size
        best = None
        for _ in range(8):
            i = int(rng.choice(self.tiles))
            r, q = (int(v) for v in rng.integers(0, t - c + 1, size=2))
            valid = np.asarray(self.store.valid[i, r : r + c, q : q + c])
            frac = valid.mean()
            if best is None or frac > best[0]:
                best = (frac, i, r, q, valid)
            if frac >= self.min_valid:
                break
        _, i, r, q, valid = best
        image = np.asarray(self.store.image[i, :, r : r + c, q : q + c])
        label = np.asarray(self.store.label[i, r : r + c, q : q + c]) if self.has_labels else None
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
