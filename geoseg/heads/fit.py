"""Fitting the few-label head: logistic regression on frozen features, calibrated threshold.

The head sees the pixels of a handful of labelled tiles (16 tiles of 64×64 px is 65k pixels,
of which buildings are often a few percent). Three choices keep it honest with so few labels:

- **class-balanced** logistic regression (each class weighs the same in the loss), so the rare
  class is not ignored, with L2 regularisation (``C``) so that 100-odd features do not overfit;
- the features are **standardised** with the statistics of the labelled pixels (stored with
  the head, so predict applies exactly the same transform);
- the decision **threshold** is chosen where the building IoU on the labelled pixels is
  highest, after superpixel refinement, because a balanced classifier's 0.5 over-predicts the
  rare class; the IoU reached there is reported as the (optimistic, in-sample) estimate.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geoseg.heads.model import HeadedModel

log = logging.getLogger(__name__)

#: inverse L2 strength of the logistic regression (scikit-learn's ``C``)
C = 0.5
#: predict's tile edge for a model with this head: the pyramid's widest window is 41 px (81 px
#: with ``baseline.pyramid_metres`` on fine imagery) and its widest blur 3 x 16 px, so tiles of
#: 256 px with predict's 32 px overlap keep most edge effects to the blended margin
TILE = 256
#: polygons smaller than this (m²) are specks, not buildings (a garden shed is about 5 m²);
#: with holes filled (courtyards under this size are roof furniture and shadows)
MIN_BUILDING_M2 = 10.0
#: hidden units and Adam steps of the ``mlp`` head
HIDDEN = 32
MLP_STEPS = 600
#: folds of labelled tiles for ``calibration="folds"``
FOLDS = 4
#: thresholds scanned for the calibration
THRESHOLDS = np.round(np.arange(0.2, 0.91, 0.05), 2)


def ground_pixel_size(image: str | Path) -> float | None:
    """The raster's pixel size in metres (square root of its centre pixel's area, measured in
    UTM when the CRS is geographic or not in metres), or None without a CRS (a PNG): the
    superpixels' ground-unit parameters need it (:func:`geoseg.refine.superpixels.params_for`).
    """
    from rasterio.errors import NotGeoreferencedWarning

    from geoseg.io.crs import pixel_size_metres
    from geoseg.io.rasters import open_raster

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with open_raster(image, param="--image") as src:
            crs, t, width, height = src.crs, src.transform, src.width, src.height
    return pixel_size_metres(crs, t, width, height, name=str(image))


def _placeholder(base: torch.nn.Module, n_features: int, record: dict[str, Any]) -> HeadedModel:
    """A HeadedModel with identity standardisation, to compute raw features."""
    rec = {
        **record,
        "mean": np.zeros(n_features, np.float32),
        "std": np.ones(n_features, np.float32),
        "weight": np.zeros(n_features, np.float32),
        "bias": 0.0,
        "threshold": 0.5,
    }
    return HeadedModel(base, rec).eval()


def _temperatures(base, batch: torch.Tensor, heads: Sequence[int]) -> list[float]:
    """Per head, the logit scale that makes the cluster softmax neither one-hot nor flat.

    k-means logits are negative squared distances, whose scale depends on the features; a
    network's logits have their own. Dividing by the median gap between the best and the
    second-best logit puts every model on the same footing.
    """
    out = base(batch)
    temps = []
    for h in heads:
        top = out[h].float().topk(2, dim=1).values
        gap = float((top[:, 0] - top[:, 1]).median())
        temps.append(max(gap, 1e-3))
    return temps


def _fit_mlp(z: np.ndarray, y: np.ndarray, *, seed: int) -> dict[str, Any]:
    """One hidden layer of :data:`HIDDEN` ReLUs on standardised features, class-balanced BCE.

    Small on purpose: 16 labelled tiles hold a few thousand building pixels, and the
    neighbouring pixels of one roof are far from independent samples; weight decay and a fixed,
    short step budget keep the head from memorising roofs.
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(z.astype(np.float32))
    t = torch.from_numpy(y.astype(np.float32))
    pos = float(t.mean())
    weight = torch.where(t > 0, 0.5 / pos, 0.5 / (1 - pos))
    d = x.shape[1]
    w1 = (torch.randn(d, HIDDEN, generator=gen) / d**0.5).requires_grad_()
    b1 = torch.zeros(HIDDEN, requires_grad=True)
    w2 = (torch.randn(HIDDEN, generator=gen) / HIDDEN**0.5).requires_grad_()
    b2 = torch.zeros((), requires_grad=True)
    opt = torch.optim.AdamW([w1, b1, w2, b2], lr=3e-3, weight_decay=1e-2)
    loss_fn = torch.nn.functional.binary_cross_entropy_with_logits
    for _ in range(MLP_STEPS):
        idx = torch.randint(0, x.shape[0], (min(4096, x.shape[0]),), generator=gen)
        logit = torch.relu(x[idx] @ w1 + b1) @ w2 + b2
        loss = loss_fn(logit, t[idx], weight=weight[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {
        "hidden_weight": w1.detach().numpy().tolist(),
        "hidden_bias": b1.detach().numpy().tolist(),
        "weight": w2.detach().numpy().tolist(),
        "bias": float(b2.detach()),
    }


def fit_head(
    base: torch.nn.Module,
    tiles: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]],
    *,
    target: int,
    background: Sequence[int],
    cluster_heads: Sequence[int] = (0,),
    superpixels: bool = True,
    pyramid: bool = True,
    kind: str = "linear",
    seed: int = 0,
    pixel_size: float | None = None,
    calibration: str = "in-sample",
) -> dict[str, Any]:
    """Fit the head from normalised labelled windows; return the checkpoint's ``fewshot`` record.

    Args:
        base: the unsupervised model (eval mode, CPU).
        tiles: ``(x (C, H, W) float32 normalised, label (H, W) uint8, use (H, W) bool)``: a
            window with context, its labels, and which of its pixels are labelled tile
            pixels (the context margin and invalid pixels are not).
        target: label value of the class the head predicts (building).
        background: label values that count as "not the class".
        cluster_heads: base heads whose cluster probabilities feed the head.
        superpixels: refine the probability within superpixels (also used to calibrate).
        pyramid: feed the feature pyramid to the head (else only cluster probabilities).
        kind: ``linear`` (logistic regression) or ``mlp`` (one hidden layer of
            :data:`HIDDEN` ReLUs, weight decay, class-balanced, early-stopped by a step budget).
        seed: the MLP's initialisation and minibatch order.
        pixel_size: the scene's pixel size in metres (None: unknown, e.g. a PNG): sets the
            superpixels' parameters in ground units (:func:`geoseg.refine.superpixels.
            params_for`), stored in the record so that predict uses the same.
        calibration: ``in-sample`` (the threshold with the best IoU on the labelled pixels,
            as fitted) or ``folds``: the threshold chosen on out-of-fold probabilities, each
            tile scored by a head fitted without it (:data:`FOLDS` folds of tiles), which
            does not reward a head's memorising of its own tiles; the reported IoU is then
            out-of-sample too. Fewer tiles than folds fall back to in-sample.

    Returns:
        The ``fewshot`` record (plain lists and floats) with ``estimated_iou``, ``pixels`` and
        ``positives``.
    """

    from geoseg.models.pyramid import n_features
    from geoseg.refine.superpixels import params_for

    tiles = list(tiles)
    if not tiles:
        raise ValueError("no labelled tile")
    heads = [int(h) for h in cluster_heads]
    c = tiles[0][0].shape[0]
    with torch.inference_mode():
        temps = _temperatures(base, torch.from_numpy(tiles[0][0][None]), heads) if heads else []
        record: dict[str, Any] = {
            "kind": kind,
            "pyramid": bool(pyramid),
            "cluster_heads": heads,
            "temperatures": temps,
            "superpixels": bool(superpixels),
            "pixel_size": None if pixel_size is None else float(pixel_size),
            "superpixel_params": params_for(pixel_size),
            "tile_size": TILE,
            "polygons": {"min_area": MIN_BUILDING_M2, "fill_holes": True},
        }
        n_feat = (n_features(c) if pyramid else 0) + sum(int(base.n_clusters[h]) for h in heads)
        if not n_feat:
            raise ValueError("the head has no input: give it the pyramid or a cluster head")
        raw = _placeholder(base, n_feat, record)
        xs, ys = [], []
        for x, label, use in tiles:
            f = raw.features(torch.from_numpy(x[None]))[0].numpy()
            keep = use & np.isin(label, [target, *background])
            xs.append(f[:, keep].T)
            ys.append(label[keep] == target)
    features = np.concatenate(xs)
    y = np.concatenate(ys)
    if y.all() or not y.any():
        raise ValueError("the labelled pixels hold only one class")
    mean = features.mean(0)
    std = features.std(0) + 1e-6
    z = (features - mean) / std
    record.update(mean=mean.astype(np.float32).tolist(), std=std.astype(np.float32).tolist())
    record.update(_fit_weights(z, y, kind=kind, seed=seed))
    record["threshold"] = 0.5

    def scored(rec: dict[str, Any], which: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Refined probabilities and truths of the labelled pixels of tiles ``which``."""
        model = HeadedModel(base, rec).eval()
        probs, truths = [], []
        with torch.inference_mode():
            for i in which:
                x, label, use = tiles[i]
                _, p = model.probability(torch.from_numpy(x[None]))
                keep = use & np.isin(label, [target, *background])
                probs.append(p[0].numpy()[keep])
                truths.append(label[keep] == target)
        return np.concatenate(probs), np.concatenate(truths)

    if calibration == "folds" and len(tiles) >= FOLDS:
        p, t = _out_of_fold(tiles, xs, ys, record, kind=kind, seed=seed, scored=scored)
    else:
        p, t = scored(record, range(len(tiles)))
    ious = [((p > th) & t).sum() / max(((p > th) | t).sum(), 1) for th in THRESHOLDS]
    best = int(np.argmax(ious))
    record.update(
        threshold=float(THRESHOLDS[best]),
        estimated_iou=float(ious[best]),
        calibration=calibration if len(tiles) >= FOLDS else "in-sample",
        pixels=int(t.size),
        positives=int(t.sum()),
    )
    log.info(
        "few-label head: %d pixels (%d building), threshold %.2f, IoU on them %.3f",
        t.size,
        int(t.sum()),
        record["threshold"],
        record["estimated_iou"],
    )
    return record


def _out_of_fold(tiles, xs, ys, record, *, kind, seed, scored):
    """Probabilities of every labelled pixel from a head fitted on the other folds' tiles.

    Tiles, not pixels, are held out: neighbouring pixels of one roof are near-copies, so a
    pixel-level split would leak. Each fold's head is standardised and fitted exactly as the
    final one is (same kind, seed and step budget), on its training tiles only.
    """
    order = np.random.default_rng(seed).permutation(len(tiles))
    ps, ts = [], []
    for k in range(FOLDS):
        held = sorted(order[k::FOLDS].tolist())
        train = [i for i in range(len(tiles)) if i not in held]
        f = np.concatenate([xs[i] for i in train])
        y = np.concatenate([ys[i] for i in train])
        if y.all() or not y.any():
            continue  # this fold's training tiles hold one class: it cannot score its tiles
        mean, std = f.mean(0), f.std(0) + 1e-6
        z = (f - mean) / std
        rec = {**record, "mean": mean.astype(np.float32).tolist()}
        rec["std"] = std.astype(np.float32).tolist()
        rec.update(_fit_weights(z, y, kind=kind, seed=seed))
        p, t = scored(rec, held)
        ps.append(p)
        ts.append(t)
    if not ps:
        return scored(record, range(len(tiles)))
    return np.concatenate(ps), np.concatenate(ts)


def _fit_weights(z: np.ndarray, y: np.ndarray, *, kind: str, seed: int) -> dict[str, Any]:
    """The head's weights on standardised features ``z``: the MLP, or logistic regression."""
    if kind == "mlp":
        return _fit_mlp(z, y, seed=seed)
    from sklearn.linear_model import LogisticRegression

    # Newton steps converge in a handful of iterations on ~100 standardised features, where
    # L-BFGS needed hundreds (minutes on two busy cores)
    clf = LogisticRegression(C=C, class_weight="balanced", solver="newton-cholesky", max_iter=100)
    clf.fit(z, y)
    return {"weight": clf.coef_[0].astype(np.float32).tolist(), "bias": float(clf.intercept_[0])}
