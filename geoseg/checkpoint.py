"""The geoseg checkpoint: one ``torch.save`` dict that rebuilds a model anywhere.

The format (docs/contracts.md) holds only tensors and plain Python types so that
``torch.load(weights_only=True)`` can read it: loading a checkpoint never runs pickled code.
It stores what is needed to rebuild the model (``build_model`` kwargs), the band spec (so
predict normalises exactly as training did), the training crop size, and the training state
for an exact resume.

:class:`Checkpoint` is the one type for it: it assembles the keys (:meth:`Checkpoint.new`),
saves atomically, loads with ``weights_only`` and rebuilds the model. It is a ``dict`` of the
on-disk keys, so stages that add keys (a cluster mapping, a few-label head) and readers of the
documented format keep working, and ``torch.save`` is always handed a plain dict.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from geoseg import __version__
from geoseg.errors import BadInput
from geoseg.io.bands import BandSpec
from geoseg.paths import atomic_output, check_input

log = logging.getLogger(__name__)

#: keys every geoseg checkpoint has; anything without them is someone else's file
REQUIRED_KEYS = ("geoseg_version", "method", "model", "model_state", "norm", "n_clusters")
BASELINE_METHODS = ("kmeans", "kanezaki")


class Checkpoint(dict):
    """A geoseg checkpoint: the keys of docs/contracts.md, with the operations on them."""

    @classmethod
    def new(
        cls,
        model,
        *,
        method: str,
        spec: Mapping[str, Any],
        bands: BandSpec,
        crop_size: int | None,
        config: Mapping[str, Any] | None = None,
        head: int = 0,
        mapping: Mapping[str, Any] | None = None,
        step: int = 0,
        epoch: int = 0,
        optimizer_state: dict | None = None,
        rng_state: dict | None = None,
        best_loss: float | None = None,
        **extra: Any,
    ) -> Checkpoint:
        """The checkpoint of ``model`` (its weights are copied to CPU).

        Args:
            model: the built model (``build_from_spec(spec)``), trained or not.
            method: ``iic`` | ``ac`` | ``kmeans`` | ``kanezaki``.
            spec: ``build_model`` kwargs (``method``, ``model_cfg``, ``in_channels``,
                ``n_clusters``).
            bands: the bands and statistics the model was trained on.
            crop_size: the training crop edge (px): predict's default tile size.
            **extra: further keys (``band_count``, ``scaler_state``...), stored as given.
        """
        return cls(
            {
                "geoseg_version": __version__,
                "method": method,
                "config": dict(config or {}),
                "model": dict(spec),
                "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "optimizer_state": optimizer_state,
                "step": int(step),
                "epoch": int(epoch),
                "rng_state": rng_state,
                **bands.to_checkpoint(),
                "n_clusters": list(model.n_clusters),
                "head_names": list(model.head_names),
                "head": int(head),
                "crop_size": crop_size,
                # the same value under its first name, for readers of the 0.1 format
                "tile_size": crop_size,
                "mapping": None if mapping is None else dict(mapping),
                "best_loss": best_loss,
                **extra,
            }
        )

    @classmethod
    def load(cls, path: str | Path, *, param: str = "-m/--model") -> Checkpoint:
        """Read a checkpoint file (or a run folder's ``best.pt``) with ``weights_only=True``.

        Raises:
            BadInput: the file is missing, not a torch file, or not a geoseg checkpoint.
        """
        import pickle

        import torch

        path = check_input(path, param=param)
        if path.is_dir():
            best = path / "best.pt"
            if not best.is_file():
                raise BadInput(f"{path} is a folder without best.pt; pass run/best.pt", param=param)
            path = best
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
            raise BadInput(
                f"{path} is not a geoseg checkpoint ({exc.__class__.__name__}); pass run/best.pt "
                "written by geoseg train",
                param=param,
            ) from exc
        if not isinstance(raw, dict) or any(k not in raw for k in REQUIRED_KEYS):
            raise BadInput(
                f"{path} is not a geoseg checkpoint; pass run/best.pt written by geoseg train",
                param=param,
            )
        return cls(raw)

    def save(self, path: str | Path) -> Path:
        """Write atomically, replacing an older file.

        A crash while saving leaves the previous checkpoint intact, which is what makes
        periodic ``last.pt`` saves safe to resume from.
        """
        import torch

        missing = [k for k in REQUIRED_KEYS if k not in self]
        if missing:
            raise ValueError(f"checkpoint lacks {missing}")
        # a plain dict: weights_only loading refuses any class, this one included
        data = {**self, "geoseg_version": self.get("geoseg_version") or __version__}
        with atomic_output(path, overwrite=True, param="--output") as tmp:
            torch.save(data, tmp)
        return Path(path)

    @property
    def bands(self) -> BandSpec:
        """The bands, names, dtype and statistics the model was trained on."""
        return BandSpec.of_checkpoint(self)

    @property
    def crop_size(self) -> int | None:
        """The training crop edge in pixels (written as ``tile_size`` before 0.2)."""
        value = self.get("crop_size", self.get("tile_size"))
        return None if value is None else int(value)

    @property
    def predict_tile(self) -> int | None:
        """predict's default tile edge: a few-label head's own (its features see 40 px of
        context, which small training crops would cut), else the training crop size."""
        head = self.get("fewshot") or {}
        return int(head["tile_size"]) if head.get("tile_size") else self.crop_size

    def build_model(self):
        """The checkpoint's model on CPU, with its weights, in eval mode."""
        model = build_from_spec(self["model"])
        model.load_state_dict(self["model_state"])
        return model.eval()


def save_checkpoint(ckpt: Mapping[str, Any], path: str | Path) -> Path:
    """:meth:`Checkpoint.save` of a checkpoint dict."""
    return Checkpoint(ckpt).save(path)


def load_checkpoint(path: str | Path, *, param: str = "-m/--model") -> Checkpoint:
    """:meth:`Checkpoint.load`: a geoseg checkpoint read with ``weights_only=True``."""
    return Checkpoint.load(path, param=param)


def build_from_spec(spec: Mapping[str, Any]):
    """Build an untrained model from the ``ckpt["model"]`` spec (``build_model`` kwargs).

    Baselines are built by :mod:`geoseg.models.baselines`, networks by
    :func:`geoseg.models.build_model`; both share one interface so callers never need to know
    which they hold.
    """
    if spec["method"] in BASELINE_METHODS:
        from geoseg.models.baselines import build_baseline

        return build_baseline(**spec)
    from geoseg.models import build_model

    return build_model(**spec)


def model_from_checkpoint(ckpt: Mapping[str, Any]):
    """:meth:`Checkpoint.build_model` of a checkpoint dict."""
    return Checkpoint(ckpt).build_model()
