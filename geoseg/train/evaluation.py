"""Periodic evaluation on fixed crops: the numbers of metrics.csv's ``eval`` rows.

Evaluation only looks: it runs the model in eval mode and puts the mode back, never touches the
global RNGs, and returns the sub-head it would pick per head instead of selecting it, so the
loop decides (and reads as deciding) what changes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from geoseg.config import TrainConfig
from geoseg.train.data import CropSampler, step_generator
from geoseg.train.methods import Method
from geoseg.train.monitor import confusion, eval_mode, hungarian_scores, joint_stats


@torch.no_grad()
def evaluate(
    model,
    sampler: CropSampler,
    method: Method,
    cfg: TrainConfig,
    device: torch.device,
    step: int,
) -> tuple[list[dict[str, Any]], list[int]]:
    """Loss, MI, marginal entropy, clusters used (and label scores) per head on fixed crops.

    The crops and augmentations are the same at every evaluation (stream 3 of steps
    ``0..eval_batches-1``) so the rows of metrics.csv are comparable over time. Each head's
    best sub-head is the one with the lowest loss (the IIC paper's choice, made without labels).

    Returns:
        ``(rows, best)``: one metrics row per head (with its best sub-head's numbers), and the
        best sub-head index per head, for ``model.select_sub_heads``.
    """
    rows, best_subs = [], []
    n_true = max([1, *(int(v) for v in sampler.store.label_classes.values())])
    with eval_mode(model):
        for head, name in enumerate(model.head_names):
            stats: dict[int, dict[str, Any]] = {}
            for b in range(cfg.schedule.eval_batches):
                batch = sampler.batch(b, stream=3)
                x, valid = batch["image"].to(device), batch["valid"].to(device)
                p1s, p2s, both = method.pair(model, x, valid, head, step_generator(cfg.seed, b, 2))
                # clusters as predict sees them (AC: no ordering mask at inference)
                infer = model(x, all_sub_heads=True)[head]
                for sub, (p1, p2) in enumerate(zip(p1s, p2s, strict=True)):
                    st = stats.setdefault(sub, {"loss": [], "mi": [], "ent": [], "used": set()})
                    st["loss"].append(float(method.loss(p1, p2, both)))
                    mi, ent = joint_stats(p1, p2, both)
                    st["mi"].append(mi)
                    st["ent"].append(ent)
                    pred = infer[sub].argmax(1)
                    st["used"].update(torch.unique(pred[valid]).tolist())
                    if batch["label"] is not None:
                        c = confusion(
                            pred.cpu().numpy(), batch["label"].numpy(), p1.shape[1], n_true
                        )
                        st["conf"] = st["conf"] + c if "conf" in st else c
            best = min(stats, key=lambda k: np.mean(stats[k]["loss"]))
            best_subs.append(int(best))
            st = stats[best]
            acc, miou = hungarian_scores(st["conf"]) if "conf" in st else (float("nan"),) * 2
            rows.append(
                {
                    "step": step,
                    "split": "eval",
                    "head": name,
                    "loss": float(np.mean(st["loss"])),
                    "mi": float(np.mean(st["mi"])),
                    "entropy": float(np.mean(st["ent"])),
                    "clusters_used": len(st["used"]),
                    "hungarian_acc": acc,
                    "miou": miou,
                }
            )
    return rows, best_subs
