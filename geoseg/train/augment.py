"""Paired augmentations that know their inverse.

IIC compares the network output on an image with its output on a transformed view ``g(x)``;
for per-pixel clustering the second output has to be mapped back with ``g⁻¹`` before the two
can be paired, and the pixels that one of the views could not see must be left out. A
:class:`PairTransform` therefore carries its sampled parameters (one set per sample of the
batch) and offers :meth:`~PairTransform.apply` (make the view), :meth:`~PairTransform.invert`
(map the view's output back) and :meth:`~PairTransform.valid` (pixels present in both views).

Photometric jitter touches only the optical bands: infrared reflectance carries the vegetation
signal that the clusters should keep, so it is never perturbed (DESIGN.md).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from geoseg.models.dihedral import dihedral, undihedral

log = logging.getLogger(__name__)

_DEFAULTS: dict[str, Any] = {
    "flip": True,
    "rotate": True,
    "jitter": 0.1,
    "noise": 0.0,
    "affine": False,
    "max_angle": 10.0,
    "scale_range": (0.9, 1.1),
    "translate": 0.05,
}


def _cfg_value(cfg: Any, key: str) -> Any:
    if cfg is None:
        return _DEFAULTS[key]
    if isinstance(cfg, Mapping):
        return cfg.get(key, _DEFAULTS[key])
    return getattr(cfg, key, _DEFAULTS[key])


def _uniform(n: int, lo: float, hi: float, generator: torch.Generator) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=generator)


@dataclasses.dataclass(frozen=True)
class PairTransform:
    """Sampled augmentation parameters for a batch, one set per sample.

    Geometric order is: horizontal flip, then ``rot90`` by ``k`` quarter turns (together the
    eight symmetries of the square), then the small affine warp; photometric jitter and noise
    come last and need no inverse because they do not move pixels.

    Attributes:
        hflip: ``(B,)`` bool, flip left-right.
        k: ``(B,)`` int64 in 0..3, counter-clockwise quarter turns (``torch.rot90``).
        theta: ``(B, 2, 3)`` float32 affine in ``affine_grid`` convention (view pixel →
            source position, normalised coordinates), or None for no warp.
        brightness, contrast, saturation: ``(B,)`` float32 jitter factors, or None.
        jitter_bands: band indices the jitter applies to.
        noise: std of additive Gaussian noise (normalised units).
        seed: seed of the noise, so applying the transform twice gives the same view.
    """

    hflip: Tensor
    k: Tensor
    theta: Tensor | None = None
    brightness: Tensor | None = None
    contrast: Tensor | None = None
    saturation: Tensor | None = None
    jitter_bands: tuple[int, ...] = ()
    noise: float = 0.0
    seed: int = 0

    @property
    def batch_size(self) -> int:
        return int(self.hflip.shape[0])

    def _check(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[0] != self.batch_size:
            raise ValueError(f"expected (B={self.batch_size}, C, H, W), got {tuple(x.shape)}")
        if x.shape[-1] != x.shape[-2] and bool((self.k % 2 == 1).any()):
            raise ValueError("quarter turns need square tiles; disable rotate for non-square")

    def _dihedral(self, x: Tensor, inverse: bool) -> Tensor:
        out = []
        for i in range(self.batch_size):
            xi, k, flip = x[i], int(self.k[i]), bool(self.hflip[i])
            out.append(undihedral(xi, k, flip) if inverse else dihedral(xi, k, flip))
        return torch.stack(out)

    def _warp(self, x: Tensor, theta: Tensor) -> Tensor:
        theta = theta.to(device=x.device, dtype=torch.float32)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(
            x.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False
        ).to(x.dtype)

    def _inverse_theta(self) -> Tensor:
        assert self.theta is not None
        full = torch.zeros(self.batch_size, 3, 3)
        full[:, :2] = self.theta
        full[:, 2, 2] = 1
        return torch.linalg.inv(full)[:, :2]

    def geometric(self, x: Tensor) -> Tensor:
        """Move pixels as the view does (no photometric change); for labels and masks too."""
        self._check(x)
        x = self._dihedral(x, inverse=False)
        return self._warp(x, self.theta) if self.theta is not None else x

    def apply(self, x: Tensor) -> Tensor:
        """Make the view ``g(x)`` of a normalised batch ``(B, C, H, W)``."""
        y = self.geometric(x)
        if self.brightness is not None and self.jitter_bands:
            y = y.clone()
            bands = list(self.jitter_bands)
            v = y[:, bands]
            dev = {"device": y.device, "dtype": y.dtype}
            b, c, s = (
                t.to(**dev).view(-1, 1, 1, 1)
                for t in (self.brightness, self.contrast, self.saturation)
            )
            grey = v.mean(1, keepdim=True)
            v = grey + s * (v - grey)
            mean = v.mean((1, 2, 3), keepdim=True)
            y[:, bands] = mean + c * (v - mean) + b
        if self.noise > 0:
            gen = torch.Generator(device=y.device).manual_seed(self.seed)
            y = y + self.noise * torch.randn(y.shape, generator=gen, device=y.device, dtype=y.dtype)
        return y

    def invert(self, y: Tensor) -> Tensor:
        """Map an output of the view, ``(B, K, H, W)``, back onto the original frame.

        Pixels the view never saw come back as zeros (or interpolated towards zero at the
        border); :meth:`valid` says which pixels to trust.
        """
        self._check(y)
        if self.theta is not None:
            y = self._warp(y, self._inverse_theta())
        return self._dihedral(y, inverse=True)

    def valid(self, mask: Tensor | None = None, *, shape: Sequence[int] | None = None) -> Tensor:
        """Pixels of the original frame that are valid in both the image and its view.

        Args:
            mask: ``(B, H, W)`` bool valid pixels of the input (e.g. the tile's ``valid``),
                or None when every pixel is valid (then give ``shape=(H, W)``).
            shape: ``(H, W)`` when ``mask`` is None.

        Returns:
            ``(B, H, W)`` bool. A pixel is kept only if every sample that the round trip
            interpolates from is valid, so interpolation never mixes in padding or nodata.
        """
        if mask is None:
            if shape is None:
                raise ValueError("give mask or shape")
            m = torch.ones(self.batch_size, 1, *shape[-2:])
        else:
            m = mask.reshape(mask.shape[0], 1, *mask.shape[-2:]).float()
        back = self.invert(self.geometric(m))
        # fully valid neighbourhoods give 1 up to float32 rounding (~1e-7); anything lower
        # had a non-negligible weight on padding or nodata
        return ((back > 1 - 1e-5) & (m > 0.5))[:, 0]


def sample_transform(
    generator: torch.Generator,
    cfg: Any,
    batch_size: int,
    *,
    jitter_bands: Sequence[int] = (),
) -> PairTransform:
    """Draw one augmentation per sample of a batch.

    Args:
        generator: a CPU ``torch.Generator``; the same seed gives the same transforms.
        cfg: ``geoseg.config.AugmentConfig``, a dict or None (defaults). Keys read: ``flip``,
            ``rotate`` (bool), ``jitter`` (strength, 0 = off), ``noise`` (std), ``affine``
            (bool), ``max_angle`` (degrees), ``scale_range`` ((lo, hi) zoom factors),
            ``translate`` (fraction of the half-width). Missing keys take defaults.
        batch_size: samples in the batch.
        jitter_bands: indices of the optical bands (see :func:`optical_bands`).

    Returns:
        the :class:`PairTransform`.
    """
    n = batch_size
    flip, rotate = bool(_cfg_value(cfg, "flip")), bool(_cfg_value(cfg, "rotate"))
    hflip = torch.rand(n, generator=generator) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    if rotate:
        k = torch.randint(0, 4, (n,), generator=generator)
    elif flip:
        # hflip + half turn is a vertical flip: with rotate off, flips still cover both axes
        k = 2 * torch.randint(0, 2, (n,), generator=generator)
    else:
        k = torch.zeros(n, dtype=torch.int64)
    theta = None
    if _cfg_value(cfg, "affine"):
        angle = _uniform(n, -1, 1, generator) * math.radians(float(_cfg_value(cfg, "max_angle")))
        lo, hi = _cfg_value(cfg, "scale_range")
        scale = _uniform(n, float(lo), float(hi), generator)
        shift = float(_cfg_value(cfg, "translate"))
        tx, ty = _uniform(n, -shift, shift, generator), _uniform(n, -shift, shift, generator)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        # view pixel p samples the source at R(angle) p / scale + t (scale > 1 zooms in)
        theta = torch.stack(
            [torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1
        ).float()
    strength = float(_cfg_value(cfg, "jitter"))
    bright = contrast = saturation = None
    if strength > 0 and jitter_bands:
        bright = _uniform(n, -strength, strength, generator)
        contrast = _uniform(n, 1 - strength, 1 + strength, generator)
        saturation = _uniform(n, 1 - strength, 1 + strength, generator)
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    return PairTransform(
        hflip=hflip,
        k=k,
        theta=theta,
        brightness=bright,
        contrast=contrast,
        saturation=saturation,
        jitter_bands=tuple(int(b) for b in jitter_bands),
        noise=float(_cfg_value(cfg, "noise")),
        seed=seed,
    )
