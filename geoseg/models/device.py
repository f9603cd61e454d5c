"""Which torch device a command runs on: the one rule for ``--device``."""

from __future__ import annotations

from geoseg.errors import BadInput


def resolve_device(device: str = "auto"):
    """``"auto"`` → CUDA when present, else CPU; a ``cuda`` request without a GPU is refused.

    Raises:
        BadInput: (``--device``) CUDA asked for on a machine without it.
    """
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BadInput(
            "CUDA is not available on this machine; use --device cpu or auto", param="--device"
        )
    return torch.device(device)
