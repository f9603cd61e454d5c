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
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)


class KMeansSegmenter(nn.Module):
    """Nearest-centroid segmentation of per-pixel features.

    Args:
        in_channels: bands of the normalised input.
        n_clusters: ``[K]``, one head.
        texture: append local mean and std of each band (box filter) to the pixel features, so
            smooth roofs and textured trees separate even when their colours overlap.
        texture_window: box filter size (odd, pixels).
    """

    head_names = ["main"]
    size_multiple = 1

    def __init__(
        self,
        in_channels: int,
        n_clusters: list[int],
        texture: bool = False,
        texture_window: int = 5,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.n_clusters = list(n_clusters)[:1]
        self.texture = texture
        self.texture_window = texture_window
        n_features = in_channels * (3 if texture else 1)
        self.register_buffer("centroids", torch.zeros(self.n_clusters[0], n_features))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel features (B, F, H, W) of a normalised batch."""
        if not self.texture:
            return x
        pad = self.texture_window // 2
        padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
        mean = F.avg_pool2d(padded, self.texture_window, stride=1)
        sq = F.avg_pool2d(padded * padded, self.texture_window, stride=1)
        std = (sq - mean * mean).clamp_min(0).sqrt()
        return torch.cat([x, mean, std], dim=1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f = self.features(x)
        c = self.centroids.to(f.dtype)
        # ||f - c||² = ||f||² - 2 f·c + ||c||²; ||f||² is the same for every k, but keeping it
        # makes the logits true (negative) squared distances, which is easier to reason about.
        dot = torch.einsum("bfhw,kf->bkhw", f, c)
        dist = (f * f).sum(1, keepdim=True) - 2 * dot + (c * c).sum(1)[None, :, None, None]
        return [-dist]

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

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.net(x)]


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
        )
    if method == "kanezaki":
        return KanezakiNet(in_channels, n_clusters, layers=int(model_cfg.get("layers", 2)))
    raise ValueError(f"unknown baseline {method!r}")


def sample_features(
    model: KMeansSegmenter,
    tiles: Iterator[tuple[torch.Tensor, torch.Tensor]],
    n_samples: int,
    *,
    seed: int = 0,
) -> torch.Tensor:
    """Draw up to ``n_samples`` valid pixel feature vectors spread evenly over the tiles.

    Args:
        model: gives the feature function (texture features need the pixel's neighbourhood,
            hence features are computed on whole tiles before sampling).
        tiles: ``(image (C,H,W) normalised float32, valid (H,W) bool)`` pairs.
        n_samples: total budget; each tile gets its share of the valid pixels it has.
    """
    rng = np.random.default_rng(seed)
    chunks = []
    tiles = list(tiles)
    per_tile = max(1, n_samples // max(1, len(tiles)))
    with torch.no_grad():
        for image, valid in tiles:
            feats = model.features(image[None])[0].flatten(1).T  # (H*W, F)
            idx = np.flatnonzero(valid.numpy().ravel())
            if idx.size == 0:
                continue
            take = rng.choice(idx, size=min(per_tile, idx.size), replace=False)
            chunks.append(feats[torch.from_numpy(take)])
    if not chunks:
        raise ValueError("no valid pixels to fit k-means on")
    return torch.cat(chunks)


def continuity_loss(response: torch.Tensor) -> torch.Tensor:
    """Mean L1 difference of responses between vertical and horizontal neighbours."""
    dy = (response[:, :, 1:, :] - response[:, :, :-1, :]).abs().mean()
    dx = (response[:, :, :, 1:] - response[:, :, :, :-1]).abs().mean()
    return dy + dx


def kanezaki_step(
    model: KanezakiNet,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    valid: torch.Tensor,
    mu: float,
) -> tuple[float, set[int]]:
    """One update of the paper's objective on a batch; returns (loss, clusters in the batch).

    The pseudo-labels are the argmax of the net's own responses (no gradient through argmax):
    cross-entropy pulls each pixel's response towards its current cluster, and the continuity
    term μ·L1 makes neighbouring pixels agree, so clusters merge into spatially coherent regions.
    """
    model.train()
    response = model(x)[0]
    target = response.detach().argmax(1)
    ce = F.cross_entropy(response, target, reduction="none")
    weight = valid.to(ce.dtype)
    ce = (ce * weight).sum() / weight.sum().clamp_min(1)
    loss = ce + mu * continuity_loss(response)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach()), set(torch.unique(target[valid]).tolist())


def fit_kanezaki(
    model: KanezakiNet,
    batches: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
    *,
    steps: int,
    mu: float,
    min_clusters: int,
    lr: float = 0.1,
    window: int = 10,
    on_step: Callable[[int, float, int], None] | None = None,
) -> KanezakiNet:
    """Train the Kanezaki net over random crops from the store (SGD, momentum 0.9, as the paper).

    Args:
        batches: ``step -> (x (B,C,H,W) normalised, valid (B,H,W) bool)``.
        steps: most updates; stops earlier once the last ``window`` batches together use
            ``min_clusters`` clusters or fewer. This is the paper's stopping rule (which keeps
            it from merging everything into one cluster) applied to the store rather than to
            one crop: a single small crop may hold few clusters only because it shows one roof.
        on_step: called with (step, loss, clusters used in the window) after every update.
    """
    from collections import deque

    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    recent: deque[set[int]] = deque(maxlen=window)
    for step in range(steps):
        x, valid = batches(step)
        loss, labels = kanezaki_step(model, optimizer, x, valid, mu)
        recent.append(labels)
        used = len(set().union(*recent))
        if on_step is not None:
            on_step(step, loss, used)
        if len(recent) == window and used <= min_clusters:
            log.info("kanezaki: %d clusters left at step %d; stopping", used, step + 1)
            break
    return model.eval()
