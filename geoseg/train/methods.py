"""What differs between method families, behind one small interface.

The loop asks a :class:`Method` for two things: the softmax outputs of a pair of views of a
batch (mapped back to the batch's frame) and the loss of such a pair. IIC pairs ``x`` with an
augmented ``g(x)``; AC additionally runs the two views under two different raster-scan
orderings. The classical baselines (k-means, Kanezaki) are fitted once instead of by gradient
steps (:mod:`geoseg.train.baselines`), but are evaluated with the IIC pair like the networks,
so their metrics.csv rows compare with a network's.

A new family is a subclass here plus its network in :mod:`geoseg.models`; the loop stays.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from geoseg.config import TrainConfig
from geoseg.io.bands import optical_bands
from geoseg.train.augment import sample_transform
from geoseg.train.losses import ac_loss, iic_loss

#: methods fitted once (no gradient loop); their networks live in geoseg.models.baselines
BASELINES = ("kmeans", "kanezaki")

#: (softmax of view 1 per sub-head, softmax of view 2 per sub-head, pixels valid in both)
Pair = tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]


class Method:
    """A pair of views and its loss; subclasses say how the two views are run and scored."""

    loss_fn = staticmethod(iic_loss)

    def __init__(self, cfg: TrainConfig, band_names: list[str]):
        self.cfg = cfg
        self.jitter_bands = optical_bands(band_names)

    def forward_pair(self, model, x: torch.Tensor, x2: torch.Tensor, head: int, rng) -> tuple:
        """Logits of every sub-head of ``head`` for the two views."""
        raise NotImplementedError

    def pair(
        self,
        model,
        x: torch.Tensor,
        valid: torch.Tensor,
        head: int,
        rng: np.random.Generator,
    ) -> Pair:
        """Softmax outputs of the two views per sub-head, all in x's frame, and the pixels
        valid in both views.

        g's geometric part is undone on the second output (g⁻¹), so pixel u of both outputs
        shows the same ground. All randomness comes from ``rng``.
        """
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        g = sample_transform(gen, self.cfg.augment, x.shape[0], jitter_bands=self.jitter_bands)
        x2 = g.apply(x)
        z1, z2 = self.forward_pair(model, x, x2, head, rng)
        both = g.valid(valid.cpu()).to(valid.device)
        p1 = [F.softmax(z.float(), 1) for z in z1]
        p2 = [F.softmax(g.invert(z.float()), 1) for z in z2]
        return p1, p2, both

    def loss(self, p1: torch.Tensor, p2: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """The objective of one pair of views (one sub-head)."""
        c = self.cfg.loss
        return self.loss_fn(
            p1,
            p2,
            displacement=c.displacement,
            lamb=c.lamb,
            mask=valid,
            uncollapsed=c.uncollapsed,
        )


class IIC(Method):
    """Invariant information clustering: the mutual information of a pixel's clusters under x
    and g(x)."""

    def forward_pair(self, model, x, x2, head, rng):
        return model(x, all_sub_heads=True)[head], model(x2, all_sub_heads=True)[head]


class AC(Method):
    """Autoregressive clustering (Ouali et al.): two views under two distinct orderings; the
    second view is also g(x) when augmentation is on (the paper uses both)."""

    loss_fn = staticmethod(ac_loss)

    def forward_pair(self, model, x, x2, head, rng):
        o1, o2 = (int(o) for o in rng.choice(8, size=2, replace=False))
        return (
            model(x, ordering=o1, all_sub_heads=True)[head],
            model(x2, ordering=o2, all_sub_heads=True)[head],
        )


def method_for(cfg: TrainConfig, band_names: list[str]) -> Method:
    """The :class:`Method` of ``cfg.method`` (baselines are evaluated as IIC pairs)."""
    return (AC if cfg.method == "ac" else IIC)(cfg, band_names)


def model_spec(
    cfg: TrainConfig, in_channels: int, pixel_size: float | None = None
) -> dict[str, Any]:
    """``build_model`` kwargs for this config (what the checkpoint stores under ``model``);
    ``pixel_size`` (the store's, metres) sizes the pyramid when ``baseline.pyramid_metres``."""
    if cfg.method == "kmeans":
        b = cfg.baseline
        model_cfg = {
            "texture": b.texture,
            "texture_window": b.texture_window,
            "pyramid": b.pyramid,
        }
        if b.pyramid and b.pyramid_metres:
            from geoseg.models.pyramid import scales_for

            model_cfg["pyramid_scales"] = scales_for(pixel_size)
        return {
            "method": "kmeans",
            "model_cfg": model_cfg,
            "in_channels": in_channels,
            "n_clusters": [cfg.n_clusters],
        }
    if cfg.method == "kanezaki":
        return {
            "method": "kanezaki",
            "model_cfg": {"layers": cfg.baseline.layers},
            "in_channels": in_channels,
            "n_clusters": [cfg.baseline.width],
        }
    heads = [cfg.n_clusters] + ([cfg.n_over_clusters] if cfg.n_over_clusters > 0 else [])
    return {
        "method": cfg.method,
        "model_cfg": dict(cfg.model),
        "in_channels": in_channels,
        "n_clusters": heads,
    }
