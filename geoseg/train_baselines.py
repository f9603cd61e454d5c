"""Fitting the classical baselines (k-means, Kanezaki) inside ``geoseg train``.

They go through the same run folder as the networks (metrics.csv with the same evaluation
rows, a quicklook, ``best.pt`` = ``last.pt`` in the shared checkpoint format), so every later
command treats a baseline run exactly like an IIC or AC run.
"""

from __future__ import annotations

from pathlib import Path

import torch

from geoseg.checkpoint import save_checkpoint
from geoseg.config import TrainConfig
from geoseg.train import checkpoint_dict, evaluate
from geoseg.train_data import CropSampler
from geoseg.train_monitor import MetricsLog, quicklook


def fit_baseline(
    model, sampler: CropSampler, cfg: TrainConfig, output: Path, dev: torch.device
) -> Path:
    """Fit k-means or the Kanezaki net; both write the same checkpoint as a network."""
    from geoseg.baselines import fit_kanezaki, sample_features

    metrics = MetricsLog(output / "metrics.csv")
    if cfg.method == "kmeans":
        # at most ~256 tiles spread over the store: enough pixels, bounded memory
        picks = sampler.tiles[:: max(1, sampler.tiles.size // 256)]
        tiles = ((d["image"], d["valid"]) for d in map(sampler.tile, picks))
        model.fit(sample_features(model, tiles, cfg.baseline.samples, seed=cfg.seed), seed=cfg.seed)
        steps = 0
    else:

        def batches(step: int):
            b = sampler.batch(step)
            return b["image"].to(dev), b["valid"].to(dev)

        done = [0]

        def on_step(step: int, loss: float, used: int) -> None:
            done[0] = step + 1
            if (step + 1) % cfg.schedule.log_every == 0:
                metrics.write(
                    step=step + 1, split="train", head="main", loss=loss, clusters_used=used
                )

        fit_kanezaki(
            model,
            batches,
            steps=cfg.schedule.steps,
            mu=cfg.baseline.mu,
            min_clusters=cfg.n_clusters,
            lr=cfg.baseline.lr,
            on_step=on_step,
        )
        steps = done[0]  # fewer than configured when it stopped at n_clusters
    model.eval()
    for row in evaluate(model, sampler, cfg, dev, steps):
        metrics.write(**row)
    ckpt = checkpoint_dict(model, None, cfg, sampler, steps, None)
    save_checkpoint(ckpt, output / "last.pt")
    save_checkpoint(ckpt, output / "best.pt")
    look = sampler.fixed_tiles(cfg.data.quicklook_tiles)
    quicklook(model, sampler, look, output / "quicklook" / "epoch_001.png", dev)
    return output / "best.pt"
