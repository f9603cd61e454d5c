"""The geoseg checkpoint: one ``torch.save`` dict that rebuilds a model anywhere.

The format (docs/contracts.md) holds only tensors and plain Python types so that
``torch.load(weights_only=True)`` can read it: loading a checkpoint never runs pickled code.
It stores what is needed to rebuild the model (``build_model`` kwargs), the band list and
normalisation statistics (so predict normalises exactly as training did), and the training state
for an exact resume.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from geoseg import __version__
from geoseg.errors import BadInput
from geoseg.paths import atomic_output, check_input

log = logging.getLogger(__name__)

#: keys every geoseg checkpoint has; anything without them is someone else's file
REQUIRED_KEYS = ("geoseg_version", "method", "model", "model_state", "norm", "n_clusters")
BASELINE_METHODS = ("kmeans", "kanezaki")


def save_checkpoint(ckpt: dict[str, Any], path: str | Path) -> Path:
    """Write ``ckpt`` to ``path`` atomically, replacing an older one.

    A crash while saving leaves the previous checkpoint intact, which is what makes periodic
    ``last.pt`` saves safe to resume from.
    """
    import torch

    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise ValueError(f"checkpoint lacks {missing}")
    ckpt = {**ckpt, "geoseg_version": ckpt.get("geoseg_version") or __version__}
    with atomic_output(path, overwrite=True, param="--output") as tmp:
        torch.save(ckpt, tmp)
    return Path(path)


def load_checkpoint(path: str | Path, *, param: str = "-m/--model") -> dict[str, Any]:
    """Read a geoseg checkpoint with ``weights_only=True``.

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
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise BadInput(
            f"{path} is not a geoseg checkpoint ({exc.__class__.__name__}); pass run/best.pt "
            "written by geoseg train",
            param=param,
        ) from exc
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED_KEYS):
        raise BadInput(
            f"{path} is not a geoseg checkpoint; pass run/best.pt written by geoseg train",
            param=param,
        )
    return ckpt


def build_from_spec(spec: dict[str, Any]):
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


def model_from_checkpoint(ckpt: dict[str, Any]):
    """Rebuild the checkpoint's model on CPU, with its weights, in eval mode."""
    model = build_from_spec(ckpt["model"])
    model.load_state_dict(ckpt["model_state"])
    return model.eval()
