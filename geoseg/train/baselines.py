"""Fitting the classical baselines (k-means, Kanezaki) inside ``geoseg train``.

The loop saves them through the same run folder as the networks (metrics.csv with the same
evaluation rows, a quicklook, ``best.pt`` = ``last.pt`` in the shared checkpoint format), so
every later command treats a baseline run exactly like an IIC or AC run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from geoseg.config import TrainConfig
from geoseg.errors import BadInput
from geoseg.models.baselines import KanezakiNet, KMeansSegmenter
from geoseg.progress import progress
from geoseg.train.data import CropSampler
from geoseg.train.monitor import MetricsLog

log = logging.getLogger(__name__)


def store_pixel_size(cfg: TrainConfig, store) -> float | None:
    """The ground pixel size (m) a k-means pyramid in metres is sized for, else None.

    Read from the store's sources (their CRS and transform; :func:`geoseg.io.crs.
    pixel_size_metres`), so training needs no raster. Sources of one store are one sensor;
    with several, the median of the georeferenced ones. None when the option is off, or no
    source is georeferenced (PNG scenes keep the pixel scales).
    """
    if not (cfg.method == "kmeans" and cfg.baseline.pyramid and cfg.baseline.pyramid_metres):
        return None
    from geoseg.io.crs import pixel_size_metres

    sizes = [
        pixel_size_metres(s["crs"], s["transform"], s["width"], s["height"], name=s["path"])
        for s in store.sources
        if s.get("crs")
    ]
    sizes = [s for s in sizes if s is not None]
    return float(np.median(sizes)) if sizes else None


def fit_baseline(
    model, sampler: CropSampler, cfg: TrainConfig, metrics: MetricsLog, dev: torch.device
) -> int:
    """Fit k-means or the Kanezaki net in place; returns the number of updates made.

    k-means fits its centroids on pixels spread over the store (no steps); Kanezaki trains
    until the configured steps or its stopping rule, logging training rows to ``metrics``.
    """
    if cfg.method == "kmeans":
        # at most ~256 tiles spread over the store: enough pixels, bounded memory
        picks = sampler.tiles[:: max(1, sampler.tiles.size // 256)]
        reads = progress(
            map(sampler.tile, picks), total=len(picks), desc="k-means: tiles", unit="tile"
        )
        tiles = ((d["image"], d["valid"]) for d in reads)
        pixels = sample_features(model, tiles, cfg.baseline.samples, seed=cfg.seed)
        k = int(model.n_clusters[0])
        if pixels.shape[0] < k:  # scikit-learn's message names neither the store nor the fix
            raise BadInput(
                f"{sampler.store.url} has {pixels.shape[0]} valid pixel(s) but k-means needs at "
                f"least n_clusters={k}; tile a larger image or pass --set n_clusters=<fewer>",
                param="STORE",
            )
        # scikit-learn reports no progress; say what runs, so a quiet minute is not a hang
        log.info("k-means: fitting %d clusters on %d pixels", k, pixels.shape[0])
        model.fit(pixels, seed=cfg.seed, n_init=cfg.baseline.n_init)
        return 0

    def batches(step: int):
        b = sampler.batch(step)
        return b["image"].to(dev), b["valid"].to(dev)

    done = [0]

    def on_step(step: int, loss: float, used: int) -> None:
        done[0] = step + 1
        if (step + 1) % cfg.schedule.log_every == 0:
            metrics.write(step=step + 1, split="train", head="main", loss=loss, clusters_used=used)

    fit_kanezaki(
        model,
        batches,
        steps=cfg.schedule.steps,
        mu=cfg.baseline.mu,
        min_clusters=cfg.n_clusters,
        lr=cfg.baseline.lr,
        on_step=on_step,
    )
    return done[0]  # fewer than configured when it stopped at n_clusters


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
