"""Naming clusters from a few labels by the set that maximises the class's IoU.

Majority naming asks each cluster "are you mostly building?"; with a few labelled tiles and a
minority class (buildings are often 3–10 % of a scene) no cluster may be, and the user gets no
building layer at all. The question that matters is different: *which set of clusters, taken
together as "building", overlaps the labelled buildings best?*

For one class, write ``a_k`` for the labelled class pixels in cluster ``k`` and ``b_k`` for its
other labelled pixels. Calling a set ``S`` "building" gives
``IoU(S) = Σ_S a_k / (A + Σ_S b_k)`` with ``A`` all labelled class pixels. The best set is a
prefix of the clusters sorted by purity ``a_k / (a_k + b_k)``: swapping a purer cluster in for
a less pure one never lowers the ratio, so scanning the K prefixes finds the optimum exactly.
Any class that has a labelled pixel gets a set with IoU > 0, so naming never fails; a poor
estimate is reported (and warned about by the caller) instead.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def iou_optimal_set(confusion: np.ndarray, value: int, *, others: Iterable[int]) -> tuple:
    """The cluster set that maximises the IoU of label ``value`` on the labelled pixels.

    Args:
        confusion: (K, V) pixel counts ``[cluster, label value]``.
        value: the class's label value (column).
        others: the columns of every other labelled class (background included); column 0
            (unlabelled) should not be among them.

    Returns:
        ``(clusters, iou)``: sorted cluster ids and the IoU they reach on the labelled pixels
        (``([], 0.0)`` when the class has no labelled pixel).
    """
    conf = np.asarray(confusion, dtype=np.float64)
    a = conf[:, value]
    cols = [int(c) for c in others if int(c) != value]
    b = conf[:, cols].sum(axis=1) if cols else np.zeros_like(a)
    total = a.sum()
    if total <= 0:
        return [], 0.0
    purity = np.divide(a, a + b, out=np.zeros_like(a), where=(a + b) > 0)
    order = np.argsort(-purity, kind="stable")
    order = order[a[order] > 0]
    iou = np.cumsum(a[order]) / (total + np.cumsum(b[order]))
    best = int(np.argmax(iou))
    return sorted(int(k) for k in order[: best + 1]), float(iou[best])


def name_by_iou(
    confusion: np.ndarray, values: Iterable[int], *, background: Iterable[int] = ()
) -> tuple[np.ndarray, dict[int, float]]:
    """Cluster → label value assignment (-1 = unnamed) giving each named class its best IoU set.

    Args:
        confusion: (K, V) counts ``[cluster, label value]``; column 0 is "unlabelled".
        values: the label values to name (e.g. ``[2]`` for building).
        background: labelled values that compete for clusters but are never named.

    Returns:
        ``(assignment, iou)``: the (K,) assignment and each named value's estimated IoU. A
        cluster claimed by two classes goes to the one that holds more of its pixels.
    """
    conf = np.asarray(confusion)
    values = [int(v) for v in values]
    labelled = [v for v in range(1, conf.shape[1]) if conf[:, v].sum() > 0]
    labelled = sorted(set(labelled) | set(values) | {int(b) for b in background})
    assignment = np.full(conf.shape[0], -1, dtype=np.int64)
    estimates: dict[int, float] = {}
    for value in values:
        clusters, iou = iou_optimal_set(conf, value, others=labelled)
        estimates[value] = iou
        for k in clusters:
            held = assignment[k]
            if held < 0 or conf[k, value] > conf[k, held]:
                assignment[k] = value
    return assignment, estimates
