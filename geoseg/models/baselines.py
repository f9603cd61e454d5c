"""Classical baselines behind the model interface: k-means and Kanezaki-style clustering.

Both are ``nn.Module``s whose ``forward`` returns ``[logits (B, K, H, W)]`` like every geoseg
model, so predict, evaluate and the checkpoint format treat them exactly as IIC/AC nets; a
baseline is what an unsupervised network has to beat to be worth its training time.

- k-means clusters normalised pixels (optionally with local mean/std texture features); its
  logits are negative squared distances to the centroids, so argmax is the nearest centroid.
- Kanezaki (Kim, Kanezaki & Tanaka 2020, "Unsupervised learning of image segmentation based on
  differentiable feature clustering"): a small conv net + BN whose argmax responses are their
  own pseudo-labels, trained with cross-entropy (feature similarity) plus μ × an L1 spatial
  continuity loss. One net is trained over the whole store, not per image, so cluster ids mean
  the same thing in every tile.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from geoseg.models.pyramid import check_scales, pyramid
from geoseg.models.pyramid import n_features as pyramid_features

log = logging.getLogger(__name__)


class KMeansSegmenter(nn.Module):
    """Nearest-centroid segmentation of per-pixel features.

    Args:
        in_channels: bands of the normalised input.
        n_clusters: ``[K]``, one head.
        texture: append local mean and std of each band (box filter) to the pixel features, so
            smooth roofs and textured trees separate even when their colours overlap.
        texture_window: box filter size (odd, pixels).
        pyramid: cluster the multi-scale feature pyramid (:mod:`geoseg.models.pyramid`)
            instead; buildings differ from roads and shadows by their context at the scale of
            a building, which a pixel's colour and a 5 px window do not see.
        pyramid_scales: the pyramid's pixel scales (:func:`geoseg.models.pyramid.scales_for`,
            set at training from the store's pixel size and kept in the checkpoint); None keeps
            the module's pixel scales (checkpoints from before they could be set).
    """

    head_names = ["main"]
    size_multiple = 1

    def __init__(
        self,
        in_channels: int,
        n_clusters: list[int],
        texture: bool = False,
        texture_window: int = 5,
        pyramid: bool = False,
        pyramid_scales: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.n_clusters = list(n_clusters)[:1]
        self.texture = texture
        self.texture_window = texture_window
        self.pyramid = pyramid
        self.pyramid_scales = None
        if pyramid_scales is not None:
            self.pyramid_scales = {k: list(v) for k, v in check_scales(pyramid_scales).items()}
        n_features = in_channels * (3 if texture else 1)
        if pyramid:
            n_features = pyramid_features(in_channels)
        self.register_buffer("centroids", torch.zeros(self.n_clusters[0], n_features))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel features (B, F, H, W) of a normalised batch."""
        if self.pyramid:
            return pyramid(x, self.pyramid_scales)
        if not self.texture:
            return x
        pad = self.texture_window // 2
        padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
        mean = F.avg_pool2d(padded, self.texture_window, stride=1)
        sq = F.avg_pool2d(padded * padded, self.texture_window, stride=1)
        std = (sq - mean * mean).clamp_min(0).sqrt()
        return torch.cat([x, mean, std], dim=1)

    def forward(self, x: torch.Tensor, *, all_sub_heads: bool = False) -> list:
        """``[logits (B, K, H, W)]``; ``all_sub_heads`` gives ``[[logits]]`` (one sub-head)."""
        logits = self.logits(self.features(x))
        return [[logits]] if all_sub_heads else [logits]

    def logits(self, f: torch.Tensor) -> torch.Tensor:
        """Negative squared distances (B, K, H, W) of features ``f`` to the centroids.

        Public so that a few-label head that reads the same feature pyramid computes it once.
        """
        c = self.centroids.to(f.dtype)
        # ||f - c||² = ||f||² - 2 f·c + ||c||²; ||f||² is the same for every k, but keeping it
        # makes the logits true (negative) squared distances, which is easier to reason about.
        dot = torch.einsum("bfhw,kf->bkhw", f, c)
        dist = (f * f).sum(1, keepdim=True) - 2 * dot + (c * c).sum(1)[None, :, None, None]
        return -dist

    def select_sub_heads(self, indices: list[int]) -> None:
        """A baseline has one sub-head per head; kept so every model has the same interface."""
        if list(indices) != [0]:
            raise ValueError(f"k-means has one sub-head; cannot select {indices}")

    def fit(self, pixels: torch.Tensor, *, seed: int = 0, n_init: int = 10) -> KMeansSegmenter:
        """Fit the centroids on ``pixels`` (N, F) feature vectors (scikit-learn k-means++).

        Several restarts matter: a rare but distinct class (5 % vegetation) is easily merged
        into a frequent one by a single unlucky initialisation.
        """
        from sklearn.cluster import KMeans

        km = KMeans(n_clusters=self.n_clusters[0], n_init=n_init, random_state=seed)
        km.fit(pixels.double().numpy())
        self.centroids.copy_(torch.from_numpy(km.cluster_centers_).float())
        return self


class KanezakiNet(nn.Module):
    """Kim/Kanezaki/Tanaka's clustering net: 3×3 conv+ReLU+BN layers, then a 1×1 conv+BN.

    The final BN normalises the responses so that argmax spreads over many channels at the
    start; training then merges them. The number of clusters actually used is emergent and at
    most ``width``; training stops once it falls to the requested ``min_clusters``.

    Args:
        in_channels: bands of the normalised input.
        n_clusters: ``[width]``: response channels = upper bound on clusters.
        layers: number of 3×3 conv layers (the paper's M).
    """

    head_names = ["main"]
    size_multiple = 1

    def __init__(self, in_channels: int, n_clusters: list[int], layers: int = 2):
        super().__init__()
        width = list(n_clusters)[0]
        self.n_clusters = [width]
        blocks: list[nn.Module] = []
        channels = in_channels
        for _ in range(layers):
            blocks += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(width)]
            channels = width
        blocks += [nn.Conv2d(width, width, 1), nn.BatchNorm2d(width)]
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor, *, all_sub_heads: bool = False) -> list:
        """``[logits (B, K, H, W)]``; ``all_sub_heads`` gives ``[[logits]]`` (one sub-head)."""
        logits = self.net(x)
        return [[logits]] if all_sub_heads else [logits]

    def select_sub_heads(self, indices: list[int]) -> None:
        """A baseline has one sub-head per head; kept so every model has the same interface."""
        if list(indices) != [0]:
            raise ValueError(f"the Kanezaki net has one sub-head; cannot select {indices}")


def build_baseline(
    method: str, model_cfg: dict[str, Any], in_channels: int, n_clusters: list[int]
) -> nn.Module:
    """An unfitted baseline from a checkpoint's ``model`` spec (the kwargs of build_model)."""
    if method == "kmeans":
        return KMeansSegmenter(
            in_channels,
            n_clusters,
            texture=bool(model_cfg.get("texture", False)),
            texture_window=int(model_cfg.get("texture_window", 5)),
            pyramid=bool(model_cfg.get("pyramid", False)),
            pyramid_scales=model_cfg.get("pyramid_scales"),
        )
    if method == "kanezaki":
        return KanezakiNet(in_channels, n_clusters, layers=int(model_cfg.get("layers", 2)))
    raise ValueError(f"unknown baseline {method!r}")
