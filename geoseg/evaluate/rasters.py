"""``evaluate``: pixel metrics of a cluster or class raster against labels, strip by strip.

The confusion matrix is accumulated over row strips of the prediction, so memory is bounded
by one strip whatever the scene size; labels are reprojected or rasterised onto the same strip
(see :mod:`geoseg.io.labels`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from geoseg.errors import BadInput
from geoseg.evaluate.pixels import MERGES, Method, confusion_matrix, merge_labels, pixel_metrics
from geoseg.io.labels import Grid, LabelReader
from geoseg.io.rasters import open_raster
from geoseg.paths import atomic_output

log = logging.getLogger(__name__)


def add_confusion(total: np.ndarray | None, part: np.ndarray) -> np.ndarray:
    """Sum two confusion matrices of possibly different shapes (blocks see different ids)."""
    if total is None:
        return part
    rows, cols = max(total.shape[0], part.shape[0]), max(total.shape[1], part.shape[1])
    out = np.zeros((rows, cols), dtype=np.int64)
    out[: total.shape[0], : total.shape[1]] += total
    out[: part.shape[0], : part.shape[1]] += part
    return out


def raster_confusion(
    pred: str | Path,
    labels: str | Path,
    *,
    merge: str | None = None,
    column: str | None = None,
    fill: int = 0,
    names: dict[int, str] | None = None,
    strip_rows: int = 512,
) -> tuple[np.ndarray, dict[int, str]]:
    """Confusion matrix (prediction value × label value) of a raster against labels.

    Pixels that are nodata in the prediction, or unlabelled (0 / nodata) in the labels, are
    left out. Returns the matrix and the label value → name table (after ``merge``).
    """
    if merge is not None and merge not in MERGES:
        raise BadInput(f"unknown merge {merge!r}; choose from {', '.join(MERGES)}", param="--merge")
    from rasterio.windows import Window

    total = None
    with open_raster(Path(pred), param="PRED") as src:
        if src.count != 1:
            raise BadInput(
                f"{Path(pred).name} has {src.count} bands; give a single-band "
                "cluster or class raster",
                param="PRED",
            )
        if np.issubdtype(np.dtype(src.dtypes[0]), np.floating):
            raise BadInput(
                f"{Path(pred).name} holds floats; give integer cluster/class ids", param="PRED"
            )
        grid = Grid.of(src)
        with LabelReader(
            labels, grid, column=column, fill=fill, names=names, reproject=True, param="LABELS"
        ) as source:
            table = dict(source.names)
            for row in range(0, src.height, strip_rows):
                window = Window(0, row, src.width, min(strip_rows, src.height - row))
                pred_block = src.read(1, window=window)
                valid = np.ones(pred_block.shape, bool)
                if src.nodata is not None:
                    valid = pred_block != src.nodata
                lab = source.read(window)
                if merge is not None:
                    lab = merge_labels(lab, MERGES[merge][0])
                part = confusion_matrix(np.where(valid, pred_block, 0), lab, valid=valid)
                total = add_confusion(total, part)
    if merge is not None:
        table = dict(MERGES[merge][1])
        table.update(names or {})
    if total is None or total.sum() == 0:
        raise BadInput(
            "no pixel is both valid in the prediction and labelled; check that the "
            "two overlap and that labels are not all 0",
            param="LABELS",
        )
    return total, table


def evaluate(
    pred: str | Path,
    labels: str | Path,
    *,
    merge: str | None = None,
    method: Method = "hungarian",
    names: dict[int, str] | None = None,
    column: str | None = None,
    fill: int = 0,
    confusion_csv: str | Path | None = None,
    overwrite: bool = False,
) -> dict:
    """Pixel metrics of a cluster or class raster against a label raster or vector labels.

    Args:
        pred: single-band integer raster (GeoTIFF, or PNG of the same size as the labels).
        labels: label raster (values, 0 = ignore; 3-band ISPRS colour code is decoded) or
            polygons (rasterised onto the prediction grid, reprojected as needed).
        merge: label merge, e.g. ``"potsdam3"`` ({impervious, car}, {building, clutter},
            {low vegetation, tree}).
        method: cluster→class mapping behind per-class IoU: ``hungarian`` (one-to-one),
            ``majority`` (many-to-one, for overclustering) or ``identity`` (a class raster).
        names: label value → class name.
        column, fill: for vector labels, the class-value column and the value outside polygons.
        confusion_csv: also write the confusion matrix (rows prediction values, columns
            classes) as CSV.
        overwrite: replace an existing ``confusion_csv``.

    Returns:
        :func:`geoseg.evaluate.pixels.pixel_metrics`' dict plus ``confusion`` (nested list) and
        ``label_values``.
    """
    if method not in ("hungarian", "majority", "identity"):
        raise BadInput(
            f"unknown method {method!r}; use hungarian, majority or identity", param="--method"
        )
    confusion, table = raster_confusion(
        pred, labels, merge=merge, column=column, fill=fill, names=names
    )
    _refuse_single_class(confusion, table, method)
    result = pixel_metrics(confusion, method=method, class_names=table)
    result["label_values"] = list(range(confusion.shape[1]))
    result["confusion"] = confusion.tolist()
    if confusion_csv is not None:
        write_confusion_csv(confusion, table, confusion_csv, overwrite=overwrite)
    return result


def _refuse_single_class(confusion: np.ndarray, names: dict[int, str], method: str) -> None:
    """A learned mapping against one labelled class is trivially perfect: refuse it.

    Building-only polygons with ``fill=0`` score only pixels inside buildings, so every
    cluster maps to "building" and many-to-one accuracy is 1.0 whatever the model did.
    """
    present = np.flatnonzero(confusion[:, 1:].sum(axis=0)) + 1
    if method == "identity" or len(present) != 1:
        return
    name = names.get(int(present[0]), f"class {int(present[0])}")
    raise BadInput(
        f"only one class ({name}) is labelled in the scored pixels, so every cluster maps to "
        "it and the accuracy would be a trivial 1.0; score the pixels outside the polygons as "
        "a second class with --fill (e.g. --fill 2 --names 1=building,2=other) or give labels "
        "with two or more classes",
        param="LABELS",
    )


def write_confusion_csv(confusion: np.ndarray, names: dict[int, str], path, *, overwrite=False):
    """CSV with one row per prediction value and one column per label value (0 left out)."""
    import pandas as pd

    cols = list(range(1, confusion.shape[1]))
    frame = pd.DataFrame(
        confusion[:, 1:], columns=[names.get(c, f"class_{c}") for c in cols]
    ).rename_axis("prediction")
    with atomic_output(path, overwrite=overwrite, param="--confusion") as tmp:
        frame.to_csv(tmp)
    return Path(path)
