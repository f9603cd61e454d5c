"""Pixel metrics on a confusion matrix: pure numpy, so training can monitor with them too.

Convention: ``confusion[i, j]`` counts pixels predicted as cluster (or class) ``i`` whose label
is ``j``. Columns are indexed by raw label values, and label 0 means "unlabelled": those
pixels never enter the matrix, so column 0 stays empty. A cluster→class mapping is an int
array over rows holding a label value, or -1 for a cluster left unmapped (Hungarian matching
with more clusters than classes leaves some out; they count as wrong everywhere).

Unsupervised clusters have arbitrary ids, so accuracy is only meaningful after a mapping:
one-to-one (Hungarian, the IIC paper's metric) or many-to-one (each cluster to its majority
class, the fair metric for overclustering).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np

Method = Literal["hungarian", "majority", "identity"]

#: Potsdam-3 (IIC paper): {impervious, car}, {building, clutter}, {low vegetation, tree}
MERGES: dict[str, tuple[np.ndarray, dict[int, str]]] = {
    "potsdam3": (
        np.array([0, 1, 2, 3, 3, 1, 2], dtype=np.uint8),
        {1: "impervious_car", 2: "building_clutter", 3: "vegetation"},
    ),
}


def confusion_matrix(
    pred: np.ndarray,
    target: np.ndarray,
    *,
    n_clusters: int | None = None,
    n_classes: int | None = None,
    valid: np.ndarray | None = None,
    ignore_index: int | None = 0,
) -> np.ndarray:
    """Count (prediction, label) pairs over the valid, labelled pixels.

    Args:
        pred: integer cluster/class ids, any shape.
        target: integer labels, same shape.
        n_clusters, n_classes: matrix size; default one past the largest value seen. Pass them
            when accumulating over blocks so every block's matrix has the same shape.
        valid: optional bool mask, False pixels are skipped (nodata).
        ignore_index: label value that means "unlabelled" (None: keep every label).

    Returns:
        int64 array (n_clusters, n_classes).
    """
    pred = np.asarray(pred).ravel()
    target = np.asarray(target).ravel()
    if pred.shape != target.shape:
        raise ValueError(f"pred has {pred.size} pixels, target {target.size}")
    keep = np.ones(pred.shape, bool) if valid is None else np.asarray(valid, bool).ravel()
    if ignore_index is not None:
        keep &= target != ignore_index
    pred, target = pred[keep].astype(np.int64), target[keep].astype(np.int64)
    n_clusters = int(pred.max(initial=-1)) + 1 if n_clusters is None else n_clusters
    n_classes = int(target.max(initial=-1)) + 1 if n_classes is None else n_classes
    if pred.size and (pred.min() < 0 or pred.max() >= n_clusters):
        raise ValueError(f"prediction values outside 0..{n_clusters - 1}")
    if target.size and (target.min() < 0 or target.max() >= n_classes):
        raise ValueError(f"label values outside 0..{n_classes - 1}")
    flat = np.bincount(pred * n_classes + target, minlength=n_clusters * n_classes)
    return flat.reshape(n_clusters, n_classes)


def mapping_from_confusion(confusion: np.ndarray, method: Method = "hungarian") -> np.ndarray:
    """Map every cluster (row) to a label value (column), or -1 when it gets none.

    ``majority``: each cluster to the class most of its pixels carry (many-to-one; ties go to
    the lower class; clusters with no labelled pixel stay -1). ``hungarian``: the one-to-one
    assignment maximising matched pixels, over clusters and classes that occur at all.
    ``identity``: the prediction already holds class values.
    """
    confusion = np.asarray(confusion)
    n_rows, n_cols = confusion.shape
    mapping = np.full(n_rows, -1, dtype=np.int64)
    if method == "identity":
        rows = np.arange(min(n_rows, n_cols))
        mapping[rows] = rows
    elif method == "majority":
        seen = confusion.sum(axis=1) > 0
        mapping[seen] = confusion[seen].argmax(axis=1)
    elif method == "hungarian":
        from scipy.optimize import linear_sum_assignment

        rows = np.flatnonzero(confusion.sum(axis=1) > 0)
        cols = np.flatnonzero(confusion.sum(axis=0) > 0)
        r, c = linear_sum_assignment(confusion[np.ix_(rows, cols)], maximize=True)
        mapping[rows[r]] = cols[c]
    else:
        raise ValueError(f"unknown mapping method {method!r}; use hungarian, majority or identity")
    return mapping


def accuracy(confusion: np.ndarray, mapping: np.ndarray) -> float:
    """Share of labelled pixels whose cluster maps to their label (NaN with no pixels)."""
    confusion = np.asarray(confusion)
    total = confusion.sum()
    mapped = np.flatnonzero(mapping >= 0)
    hits = confusion[mapped, mapping[mapped]].sum()
    return float(hits / total) if total else float("nan")


def hungarian_accuracy(confusion: np.ndarray) -> float:
    """Accuracy under the best one-to-one cluster→class assignment."""
    return accuracy(confusion, mapping_from_confusion(confusion, "hungarian"))


def many_to_one_accuracy(confusion: np.ndarray) -> float:
    """Accuracy when each cluster takes its majority class (never below Hungarian)."""
    return accuracy(confusion, mapping_from_confusion(confusion, "majority"))


def per_class_iou(confusion: np.ndarray, mapping: np.ndarray) -> np.ndarray:
    """IoU per label value (column) after mapping clusters to classes; NaN where undefined.

    A class's union is its labelled pixels plus the pixels predicted as it (through the
    mapping); pixels of unmapped clusters belong to no predicted class.
    """
    confusion = np.asarray(confusion)
    n_cols = confusion.shape[1]
    mapped = np.flatnonzero(mapping >= 0)
    predicted = np.zeros((n_cols, n_cols), dtype=np.int64)
    np.add.at(predicted, mapping[mapped], confusion[mapped])
    inter = np.diag(predicted).astype(float)
    union = confusion.sum(axis=0) + predicted.sum(axis=1) - inter
    return np.divide(inter, union, out=np.full(n_cols, np.nan), where=union > 0)


def pixel_metrics(
    confusion: np.ndarray,
    *,
    method: Method = "hungarian",
    class_names: Mapping[int, str] | None = None,
    ignore_index: int | None = 0,
) -> dict:
    """All pixel metrics of one confusion matrix, as plain Python values (JSON-able).

    Args:
        confusion: (clusters, label values) counts from :func:`confusion_matrix`.
        method: mapping used for per-class IoU / mIoU (accuracies report both mappings).
        class_names: label value → name; default ``class_<value>``.
        ignore_index: label value excluded from the class list.

    Returns:
        dict with ``pixels``, ``hungarian_accuracy``, ``many_to_one_accuracy``, ``iou_mapping``,
        ``per_class_iou`` (name → IoU, classes present in the labels), ``miou``,
        ``building_iou`` (first class whose name starts with "building", else None) and
        ``mapping`` (cluster → class name, for the clusters that got one).
    """
    confusion = np.asarray(confusion)
    names = dict(class_names or {})
    present = [j for j in np.flatnonzero(confusion.sum(axis=0) > 0) if j != ignore_index]
    mapping = mapping_from_confusion(confusion, method)
    iou = per_class_iou(confusion, mapping)

    def name(j: int) -> str:
        return names.get(int(j), f"class_{int(j)}")

    per_class = {name(j): float(iou[j]) for j in present}
    building = next((v for k, v in per_class.items() if k.startswith("building")), None)
    return {
        "pixels": int(confusion.sum()),
        "hungarian_accuracy": hungarian_accuracy(confusion),
        "many_to_one_accuracy": many_to_one_accuracy(confusion),
        "iou_mapping": method,
        "per_class_iou": per_class,
        "miou": float(np.mean(list(per_class.values()))) if per_class else float("nan"),
        "building_iou": building,
        "mapping": {int(i): name(c) for i, c in enumerate(mapping) if c >= 0},
    }


def merge_labels(labels: np.ndarray, lookup: np.ndarray) -> np.ndarray:
    """Apply a label lookup table (e.g. ``MERGES["potsdam3"][0]``); values past it become 0."""
    labels = np.asarray(labels)
    table = np.zeros(max(int(labels.max(initial=0)) + 1, len(lookup)), dtype=lookup.dtype)
    table[: len(lookup)] = lookup
    return table[labels]
