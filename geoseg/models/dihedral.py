"""The eight symmetries of the square on (..., H, W) tensors, and their inverses.

One definition for the three places that turn images: AC's raster-scan orderings, IIC's
augmentations and predict's test-time augmentation. Order: horizontal flip first, then ``k``
counter-clockwise quarter turns (``torch.rot90``); the inverse undoes them in reverse.
"""

from __future__ import annotations

import torch
from torch import Tensor


def dihedral(x: Tensor, k: int, flip: bool) -> Tensor:
    """``x`` flipped left-right (if ``flip``), then turned ``k`` quarter turns."""
    x = x.flip(-1) if flip else x
    return torch.rot90(x, k, dims=(-2, -1))


def undihedral(y: Tensor, k: int, flip: bool) -> Tensor:
    """Inverse of :func:`dihedral`: maps a turned output back onto the input's frame."""
    y = torch.rot90(y, -k, dims=(-2, -1))
    return y.flip(-1) if flip else y
