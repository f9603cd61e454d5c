"""What a training run reports about itself: metrics.csv rows and quicklook PNGs.

Label metrics here are for *monitoring only*: they are computed after the fact on the store's
labels and never enter a loss or the choice of ``best.pt`` (that is chosen by loss), so the
method stays unsupervised.
"""

from __future__ import annotations

import csv
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from geoseg.paths import atomic_output

COLUMNS = [
    "step",
    "split",
    "head",
    "loss",
    "mi",
    "entropy",
    "clusters_used",
    "hungarian_acc",
    "miou",
    "data_stall",  # train rows: fraction of step time spent waiting for batches, so far
]


@contextmanager
def eval_mode(model):
    """Run a block with ``model`` in eval mode, then restore its mode: looking never changes it."""
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was)


def joint_stats(p1: torch.Tensor, p2: torch.Tensor, valid: torch.Tensor) -> tuple[float, float]:
    """MI of the two views' joint (no displacement) and entropy of its marginal, in nats.

    Entropy near log K means every cluster is used; near 0 means the run has collapsed.
    """
    from geoseg.train.losses import joint_distribution, mutual_information

    joint = joint_distribution(p1, p2, mask=valid)
    marginal = joint.sum(1)
    entropy = -(marginal * marginal.clamp_min(1e-12).log()).sum()
    return float(mutual_information(joint)), float(entropy)


def confusion(pred: np.ndarray, label: np.ndarray, n_pred: int, n_true: int) -> np.ndarray:
    """(n_pred, n_true) counts over labelled pixels (label k in 1..n_true is column k-1)."""
    keep = (label > 0) & (label <= n_true)
    idx = pred[keep].astype(np.int64) * n_true + (label[keep].astype(np.int64) - 1)
    return np.bincount(idx, minlength=n_pred * n_true).reshape(n_pred, n_true)


def hungarian_scores(conf: np.ndarray) -> tuple[float, float]:
    """One-to-one (Hungarian) accuracy and mean IoU over the true classes of a confusion matrix."""
    from scipy.optimize import linear_sum_assignment

    total = conf.sum()
    if total == 0:
        return float("nan"), float("nan")
    rows, cols = linear_sum_assignment(conf, maximize=True)
    acc = conf[rows, cols].sum() / total
    match = dict(zip(cols.tolist(), rows.tolist(), strict=True))
    ious = []
    for c in np.flatnonzero(conf.sum(0)):
        r = match.get(int(c))  # a class left without a cluster scores IoU 0
        tp = conf[r, c] if r is not None else 0
        union = conf[:, c].sum() + (conf[r, :].sum() - tp if r is not None else 0)
        ious.append(tp / union)
    return float(acc), float(np.mean(ious))


class MetricsLog:
    """Append-only ``metrics.csv``; on resume, rows after the resumed step are dropped first.

    Rows written after the last checkpoint of an interrupted run would otherwise appear twice.
    """

    def __init__(self, path: Path, *, resume_step: int | None = None):
        self.path = path
        rows: list[dict[str, str]] = []
        if resume_step is not None and path.exists():
            with path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)

    def write(self, **row: Any) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=COLUMNS).writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
            )


def _rgb(raw: np.ndarray, band_names: list[str], stats: dict[str, Any]) -> np.ndarray:
    """(H, W, 3) uint8 display image: red/green/blue bands if named, else the first three."""
    names = [n.lower() for n in band_names]
    if all(n in names for n in ("red", "green", "blue")):
        idx = [names.index(n) for n in ("red", "green", "blue")]
    else:
        idx = [min(i, raw.shape[0] - 1) for i in range(3)]
    out = []
    for i in idx:
        lo, hi = float(stats["p2"][i]), float(stats["p98"][i])
        band = (raw[i].astype(np.float32) - lo) / max(hi - lo, 1e-6)
        out.append(np.clip(band * 255, 0, 255))
    return np.stack(out, -1).astype(np.uint8)


def write_quicklook(
    path: Path,
    tiles: list[dict[str, Any]],
    clusters: list[np.ndarray],
    *,
    band_names: list[str],
    stats: dict[str, Any],
) -> Path:
    """One PNG, a row per tile: image RGB | clusters (shared palette; invalid pixels black)."""
    from PIL import Image

    from geoseg.io.palette import colour_table

    palette = np.array([rgba[:3] for rgba in colour_table(256).values()], np.uint8)
    rows = []
    for tile, cl in zip(tiles, clusters, strict=True):
        rgb = _rgb(tile["raw"], band_names, stats)
        colour = palette[cl.astype(np.int64) % 256]
        colour[~tile["valid"].numpy()] = 0
        rows.append(np.concatenate([rgb, colour], axis=1))
    image = np.concatenate(rows, axis=0)
    with atomic_output(path, overwrite=True) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    return path


@torch.no_grad()
def quicklook(model, sampler, tiles: list[int], path: Path, device) -> None:
    """image RGB | clusters (main head) of a few fixed tiles, one PNG per epoch."""
    data = [sampler.tile(i) for i in tiles]
    clusters = []
    with eval_mode(model):
        for d in data:
            x = d["image"][None].to(device)
            m = model.size_multiple
            h, w = x.shape[-2:]
            x = F.pad(x, (0, (-w) % m, 0, (-h) % m))
            clusters.append(model(x)[0][0, :, :h, :w].argmax(0).cpu().numpy())
    path.parent.mkdir(exist_ok=True)
    write_quicklook(path, data, clusters, band_names=sampler.store.band_names, stats=sampler.stats)
