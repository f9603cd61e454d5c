"""A few-label head on a frozen unsupervised model, as one model with one more head.

The unsupervised model (k-means on the feature pyramid, Kanezaki, IIC, AC) gives, for every
pixel, its cluster distribution; the feature pyramid gives what the pixel and its surroundings
look like. A logistic regression over both, fitted from a few labelled tiles
(:mod:`geoseg.heads.fit`), turns them into a building probability; nothing of the unsupervised
model is changed (the "linear evaluation" protocol of IIC). The cluster distribution is what
makes a linear head enough: a soft assignment to many clusters is a non-linear (radial-basis)
embedding of the features, so a linear read-out can carve out "light compact roof" from
"light road" even when no single feature separates them.

:class:`HeadedModel` exposes the head as one more head of the model (``n_clusters[-1] == 2``:
background, building), so that predict, TTA and blending treat it exactly like a cluster head:
the checkpoint's mapping names cluster 1 of that head "building". Superpixel refinement
(:mod:`geoseg.refine.superpixels`) is applied per tile inside ``forward``, before blending.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from geoseg.models.pyramid import pyramid
from geoseg.refine.superpixels import refine

HEAD_NAME = "building"


class HeadedModel(nn.Module):
    """``base`` plus a few-label head over [feature pyramid, cluster probabilities]: linear
    (``kind="linear"``) or with one hidden ReLU layer (``kind="mlp"``).

    Args:
        base: any geoseg model (its heads are kept; the new head is appended).
        record: the checkpoint's ``fewshot`` dict (see :func:`geoseg.heads.fit.fit_head`).
    """

    def __init__(self, base: nn.Module, record: dict[str, Any]):
        super().__init__()
        self.base = base
        self.record = record
        self.cluster_heads = [int(h) for h in record.get("cluster_heads", [0])]
        self.use_pyramid = bool(record.get("pyramid", True))
        self.temperature = [float(t) for t in record.get("temperatures", [1.0])]
        self.superpixels = bool(record.get("superpixels", True))
        # Felzenszwalb parameters in pixels, derived from the scene's pixel size at fit time; a
        # record without them (fitted before they existed) keeps the module's pixel parameters
        self.superpixel_params = dict(record.get("superpixel_params") or {})
        self.kind = str(record.get("kind", "linear"))
        for key in ("mean", "std", "weight", "hidden_weight", "hidden_bias"):
            if key in record:
                self.register_buffer(key, torch.as_tensor(record[key], dtype=torch.float32))
        self.bias = float(record["bias"])
        self.threshold = float(record.get("threshold", 0.5))
        self.head_names = list(base.head_names) + [HEAD_NAME]
        self.n_clusters = list(base.n_clusters) + [2]
        self.size_multiple = int(getattr(base, "size_multiple", 1))

    def _base(self, x: torch.Tensor) -> tuple[list, torch.Tensor | None]:
        """``(base outputs, feature pyramid or None)``; the pyramid is computed once when the
        base model is k-means on that same pyramid (the recommended recipe), which halves the
        cost of prediction."""
        if self.use_pyramid and getattr(self.base, "pyramid", False):
            # the base's own pyramid, at the scales it was trained with (metres or pixels)
            fp = self.base.features(x)
            return [self.base.logits(fp)], fp
        fp = pyramid(x) if self.use_pyramid else None
        return list(self.base(x)), fp

    def features(self, x: torch.Tensor, base: tuple | None = None) -> torch.Tensor:
        """The head's standardised input features (B, D, H, W) of a normalised batch."""
        outputs, fp = self._base(x) if base is None else base
        parts = [fp] if fp is not None else []
        for head, temp in zip(self.cluster_heads, self.temperature, strict=True):
            parts.append(torch.softmax(outputs[head].float() / temp, dim=1))
        f = torch.cat(parts, 1)
        return (f - self.mean[None, :, None, None]) / self.std[None, :, None, None]

    def probability(self, x: torch.Tensor, *, refined: bool = True) -> tuple[list, torch.Tensor]:
        """``(base outputs, building probability (B, H, W))``, superpixel-refined if enabled."""
        base = self._base(x)
        outputs = base[0]
        f = self.features(x, base)
        if self.kind == "mlp":  # one hidden ReLU layer: (D, H) then (H,)
            h = torch.einsum("bdhw,dk->bkhw", f, self.hidden_weight)
            f = torch.relu(h + self.hidden_bias[None, :, None, None])
        prob = torch.sigmoid(torch.einsum("bdhw,d->bhw", f, self.weight) + self.bias)
        if refined and self.superpixels:
            img = x.detach().float().cpu().numpy()
            p = prob.detach().float().cpu().numpy()
            params = self.superpixel_params
            p = np.stack([refine(pi, xi, **params) for pi, xi in zip(p, img, strict=True)])
            prob = torch.from_numpy(p).to(prob.device, prob.dtype)
        return outputs, prob

    def forward(self, x: torch.Tensor, *, all_sub_heads: bool = False) -> list:
        """The base model's heads, then ``[background, building]`` logits.

        The logits are shifted by the calibrated threshold, so that the argmax (and the
        blended softmax compared at 0.5) calls "building" exactly where the refined
        probability exceeds the threshold chosen on the labelled tiles.
        """
        outputs, prob = self.probability(x)
        eps = 1e-6
        p = prob.clamp(eps, 1 - eps)
        t = min(max(self.threshold, eps), 1 - eps)
        logit = torch.log(p / (1 - p)) - float(np.log(t / (1 - t)))
        two = torch.stack([torch.zeros_like(logit), logit], dim=1)
        outputs = list(outputs) + [two]
        return [[o] for o in outputs] if all_sub_heads else outputs

    def select_sub_heads(self, indices: list[int]) -> None:
        """Sub-head selection applies to the base model's heads; the few-label head has one."""
        self.base.select_sub_heads(list(indices)[: len(self.base.n_clusters)])


def attach(model: nn.Module, ckpt: dict[str, Any]) -> nn.Module:
    """The checkpoint's model with its few-label head, if it has one (else ``model`` itself)."""
    record = ckpt.get("fewshot")
    if not record:
        return model
    return HeadedModel(model, record).eval()
