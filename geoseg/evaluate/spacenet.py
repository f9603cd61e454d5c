"""SpaceNet building F1: greedy IoU matching of proposals to ground-truth footprints.

The rules are the competition's (SpaceNet utilities / solaris), because published numbers are
only comparable under the same rules:

- proposals are visited by decreasing confidence (file order breaks ties);
- each one takes the still-unmatched truth polygon of highest IoU; it is a true positive only
  if that IoU is *strictly* greater than the threshold (0.5), otherwise a false positive, and
  the truth polygon stays available;
- polygons below the minimum area are dropped first: truth kept if area >= min_area,
  proposals kept if area > min_area;
- invalid proposals are repaired with ``buffer(0)`` (truth too, so GEOS never fails on them).

Counts are per image; precision/recall/F1 per AOI and overall come from *summed* TP/FP/FN,
never from averaging per-image F1. When an image has neither truth nor proposals its
precision, recall and F1 are defined as 1.0 (nothing to find, nothing wrongly claimed); when
only one side is empty the undefined ratio is 0.0, as in the competition scorer.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from geoseg.errors import BadInput
from geoseg.evaluate.polygons import aoi_name, read_polygons, swapped_hint
from geoseg.io.crs import metric_crs

log = logging.getLogger(__name__)


def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Precision, recall, F1 from counts (definitions for empty cases in the module doc).

    F1 is computed as ``2 TP / (2 TP + FP + FN)``, algebraically equal to the harmonic mean
    but free of the rounding a ratio of ratios adds.
    """
    if tp + fp + fn == 0:
        return 1.0, 1.0, 1.0
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return precision, recall, 2 * tp / (2 * tp + fp + fn)


def match_greedy(
    proposals: np.ndarray,
    confidence: np.ndarray,
    truth: np.ndarray,
    *,
    iou_threshold: float = 0.5,
    prop_group: np.ndarray | None = None,
    truth_group: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Match proposals to truth polygons the SpaceNet way.

    Candidate pairs come from one STRtree query over all truth polygons, so the cost grows with
    the number of overlapping pairs, not with proposals × truth; pairs whose IoU cannot reach
    the threshold (by areas and bounding boxes) are never intersected.

    Args:
        proposals: shapely polygons (valid), one per proposal.
        confidence: float per proposal; higher is visited first, NaN last.
        truth: shapely polygons (valid).
        iou_threshold: a match needs IoU strictly above this.
        prop_group, truth_group: integer image codes; polygons only match within an image.

    Returns:
        ``(matched, best_iou)``: per proposal the index of its truth polygon or -1 (false
        positive), and the IoU with the best still-unmatched truth polygon when it was visited
        (0 for a false positive no truth polygon could have matched).
    """
    n_prop = len(proposals)
    matched = np.full(n_prop, -1, dtype=np.int64)
    best_iou = np.zeros(n_prop)
    if n_prop == 0 or len(truth) == 0:
        return matched, best_iou
    p_idx, t_idx = shapely.STRtree(truth).query(proposals)  # bounding boxes overlap
    if prop_group is not None and truth_group is not None:
        same = prop_group[p_idx] == truth_group[t_idx]
        p_idx, t_idx = p_idx[same], t_idx[same]
    p_area, t_area = shapely.area(proposals), shapely.area(truth)
    # Exact intersections dominate the cost, so skip pairs that cannot reach the threshold:
    # the intersection is at most the smaller area and at most the bounding boxes' overlap.
    pb, tb = shapely.bounds(proposals)[p_idx], shapely.bounds(truth)[t_idx]
    overlap = np.clip(np.minimum(pb[:, 2], tb[:, 2]) - np.maximum(pb[:, 0], tb[:, 0]), 0, None)
    overlap *= np.clip(np.minimum(pb[:, 3], tb[:, 3]) - np.maximum(pb[:, 1], tb[:, 1]), 0, None)
    bound = np.minimum(overlap, np.minimum(p_area[p_idx], t_area[t_idx]))
    union_lo = p_area[p_idx] + t_area[t_idx] - bound
    possible = bound >= iou_threshold * union_lo
    if iou_threshold > 0:
        possible &= bound > 0
    p_idx, t_idx = p_idx[possible], t_idx[possible]
    inter = shapely.area(shapely.intersection(proposals[p_idx], truth[t_idx]))
    union = p_area[p_idx] + t_area[t_idx] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    rank = np.empty(n_prop, dtype=np.int64)
    rank[np.argsort(-np.asarray(confidence, dtype=float), kind="stable")] = np.arange(n_prop)
    # visiting order: proposal rank, then its candidates by IoU (lowest truth index on ties)
    order = np.lexsort((t_idx, -iou, rank[p_idx]))
    taken = np.zeros(len(truth), dtype=bool)
    decided = np.zeros(n_prop, dtype=bool)
    for p, t, value in zip(
        p_idx[order].tolist(), t_idx[order].tolist(), iou[order].tolist(), strict=True
    ):
        if decided[p] or taken[t]:
            continue
        decided[p] = True
        best_iou[p] = value
        if value > iou_threshold:
            matched[p] = t
            taken[t] = True
    return matched, best_iou


@dataclass
class ScoreResult:
    """What :func:`score` found: counts per image / AOI / overall, and the classified polygons.

    ``proposals`` has columns image_id, confidence, iou, truth_id (the matched truth row, -1
    for a false positive), status ("tp"/"fp"); ``truth`` has image_id, truth_id, status
    ("tp"/"fn"). Both are in the truth file's CRS (None for pixel coordinates) and hold only
    the polygons that passed the area filter.
    """

    per_image: pd.DataFrame
    per_aoi: pd.DataFrame
    total: dict
    proposals: gpd.GeoDataFrame = field(repr=False)
    truth: gpd.GeoDataFrame = field(repr=False)

    def to_dict(self) -> dict:
        """Plain JSON-able summary (total, per AOI, per image)."""
        return {
            "total": self.total,
            "per_aoi": self.per_aoi.to_dict(orient="records"),
            "per_image": self.per_image.to_dict(orient="records"),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def write_layers(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write TP / FP / FN polygons as layers "tp", "fp", "fn" of one GeoPackage (for QGIS).

        Each layer carries its default QGIS style (distinct outline colours), so the three
        read at a glance when opened; geometries are 2D even when the truth file is 3D.
        """
        from geoseg.vector.formats import write_layers
        from geoseg.vector.styles import score_layer_style

        layers = {
            "tp": self.proposals[self.proposals["status"] == "tp"],
            "fp": self.proposals[self.proposals["status"] == "fp"],
            "fn": self.truth[self.truth["status"] == "fn"],
        }
        layers = {name: frame.drop(columns="status") for name, frame in layers.items()}
        styles = {name: score_layer_style(name) for name in layers}
        with warnings.catch_warnings():
            # pixel-coordinate (CSV) results have no CRS, and that is expected
            warnings.filterwarnings("ignore", message="'crs' was not provided")
            return write_layers(layers, path, styles=styles, overwrite=overwrite, param="--layers")


def _metric_crs(pred: gpd.GeoDataFrame, truth: gpd.GeoDataFrame):
    """Reproject both sides into one CRS in metres, where IoU and m² areas mean something."""
    if pred.crs is None or truth.crs is None:
        if pred.crs is None and truth.crs is None:
            log.warning("neither file has a CRS; areas are in the files' own units")
            return pred, truth
        missing = "PRED" if pred.crs is None else "TRUTH"
        raise BadInput("file has no CRS while the other has one; set its CRS", param=missing)
    valid = truth[~truth.is_empty]
    bounds = (valid if len(valid) else pred[~pred.is_empty]).total_bounds
    crs = metric_crs(truth.crs, bounds)
    if crs is None:
        crs = truth.crs
    else:
        log.info("scoring in %s (metric)", crs)
    return pred.to_crs(crs), truth.to_crs(crs)


def _repair(geoms: np.ndarray, what: str) -> np.ndarray:
    bad = ~shapely.is_valid(geoms) & ~shapely.is_empty(geoms)
    if bad.any():
        log.info("repairing %d invalid %s polygons with buffer(0)", int(bad.sum()), what)
        geoms = geoms.copy()
        geoms[bad] = shapely.buffer(geoms[bad], 0)
    return geoms


def score(
    pred: str | Path,
    truth: str | Path,
    *,
    iou_threshold: float = 0.5,
    min_area: float = 20.0,
    area_unit: str | None = None,
    image: str | Path | None = None,
    pred_filter: str | None = None,
    truth_filter: str | None = None,
) -> ScoreResult:
    """SpaceNet building F1 of predicted polygons against ground-truth footprints.

    Args:
        pred: proposals: SpaceNet CSV, GeoJSON, GeoPackage, FlatGeobuf or GeoParquet.
        truth: ground truth in the same family (both CSV, or both georeferenced).
        iou_threshold: a true positive needs IoU strictly above this.
        min_area: minimum polygon area, in ``area_unit``.
        area_unit: ``"px"`` (pixels²) or ``"m2"``; None keeps the historical meaning, px² for
            CSV (pixel coordinates) and m² for georeferenced files. ``"px"`` on georeferenced
            files needs ``image`` for the pixel size.
        image: the scored image: truth is clipped to its footprint (a footprint outside the
            image cannot be found, so it must not count as a miss), and its pixel size turns
            ``"px"`` areas into m².
        pred_filter, truth_filter: ``COLUMN=VALUE`` to keep only some rows (e.g. ``label=1``).

    Returns:
        A :class:`ScoreResult`.

    Raises:
        BadInput: unreadable files, mixing pixel CSV with georeferenced files, a CRS on one
            side only, or one side with image ids and the other without.
    """
    if not 0.0 <= iou_threshold < 1.0:
        raise BadInput(f"{iou_threshold} is outside [0, 1)", param="--iou")
    if min_area < 0:
        raise BadInput(f"{min_area} is negative; use 0 to keep every polygon", param="--min-area")
    hint = swapped_hint(pred, truth)
    if hint:
        log.warning("%s", hint)
    prop = read_polygons(pred, param="PRED", where=pred_filter)
    true = read_polygons(truth, param="TRUTH", where=truth_filter)
    pixel = prop.attrs["pixel"]
    if pixel != true.attrs["pixel"]:
        raise BadInput(
            "cannot score a pixel-coordinate CSV against a georeferenced file; "
            "give both as SpaceNet CSV or both as vector files",
            param="PRED",
        )
    if not pixel:
        if prop.attrs["has_image_id"] != true.attrs["has_image_id"]:
            raise BadInput(
                "only one file has an ImageId column; add it to both or neither", param="PRED"
            )
        if not true.attrs["has_image_id"]:
            prop["image_id"] = true["image_id"].iloc[0] if len(true) else Path(truth).stem
        out_crs = true.crs
        prop, true = _metric_crs(prop, true)
    else:
        out_crs = None

    min_area, unit = _area_threshold(min_area, area_unit, pixel=pixel, image=image, crs=true.crs)

    images = pd.Index(pd.unique(np.concatenate([true["image_id"], prop["image_id"]])))
    pg = _repair(prop.geometry.values.to_numpy(), "proposal")
    tg = _repair(true.geometry.values.to_numpy(), "truth")
    if image is not None:  # truth outside the image cannot be found: not a miss
        tg = shapely.intersection(tg, _footprint(image, pixel=pixel, crs=true.crs))
    keep_p = ~shapely.is_empty(pg) & (shapely.area(pg) > min_area)
    keep_t = ~shapely.is_empty(tg) & (shapely.area(tg) >= min_area)
    prop = prop[keep_p].reset_index(drop=True).set_geometry(pg[keep_p])
    true = true[keep_t].reset_index(drop=True).set_geometry(tg[keep_t])
    p_code = images.get_indexer(prop["image_id"])
    t_code = images.get_indexer(true["image_id"])

    matched, best = match_greedy(
        prop.geometry.values.to_numpy(),
        prop["confidence"].to_numpy(dtype=float),
        true.geometry.values.to_numpy(),
        iou_threshold=iou_threshold,
        prop_group=p_code,
        truth_group=t_code,
    )
    n = len(images)
    tp = np.bincount(p_code[matched >= 0], minlength=n)
    fp = np.bincount(p_code, minlength=n) - tp
    fn = np.bincount(t_code, minlength=n) - tp
    per_image = _table(
        pd.DataFrame(
            {"image_id": images, "aoi": [aoi_name(i) for i in images], "tp": tp, "fp": fp, "fn": fn}
        )
    )
    per_aoi = _table(per_image.groupby("aoi", sort=True)[["tp", "fp", "fn"]].sum().reset_index())
    t_all, f_all, n_all = int(tp.sum()), int(fp.sum()), int(fn.sum())
    precision, recall, f1 = prf(t_all, f_all, n_all)
    total = {
        "tp": t_all,
        "fp": f_all,
        "fn": n_all,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "images": n,
        "iou_threshold": iou_threshold,
        "min_area": min_area,
        "area_unit": unit,
    }

    prop["iou"] = best
    prop["truth_id"] = matched
    prop["status"] = np.where(matched >= 0, "tp", "fp")
    true["truth_id"] = np.arange(len(true))
    true["status"] = "fn"
    true.loc[matched[matched >= 0], "status"] = "tp"
    if out_crs is not None:
        prop, true = prop.to_crs(out_crs), true.to_crs(out_crs)
    return ScoreResult(per_image, per_aoi, total, prop, true)


def _footprint(image: str | Path, *, pixel: bool, crs):
    """The image's extent as a polygon in the scoring frame (pixels for CSV, else ``crs``)."""
    from geoseg.io.rasters import open_raster

    with open_raster(image, param="--image") as src:
        if pixel:
            return shapely.box(0, 0, src.width, src.height)
        outline = gpd.GeoSeries([shapely.box(*src.bounds)], crs=src.crs)
    if crs is None:
        return outline.iloc[0]
    return outline.to_crs(crs).iloc[0]


def _area_threshold(min_area: float, unit: str | None, *, pixel: bool, image, crs):
    """``(min_area, unit)`` in the scoring frame's unit: px2 for CSV, m2 for georeferenced."""
    if unit is None or (unit == "px" and pixel) or (unit == "m2" and not pixel):
        return min_area, "px2" if pixel else "m2"
    if unit == "m2":
        raise BadInput(
            "SpaceNet CSVs are in pixel coordinates; give the area in pixels, e.g. 20px",
            param="--min-area",
        )
    if image is None:
        raise BadInput(
            "an area in px on georeferenced files needs --image for the pixel size; or give "
            "it in square metres, e.g. 2m2",
            param="--min-area",
        )
    from geoseg.io.rasters import open_raster

    with open_raster(image, param="--image") as src:
        col, row = src.width // 2, src.height // 2
        pixel_box = shapely.box(
            *(src.transform * (col, row + 1)), *(src.transform * (col + 1, row))
        )
        one = gpd.GeoSeries([pixel_box], crs=src.crs)
    area = float(one.to_crs(crs).area.iloc[0]) if crs is not None else float(one.area.iloc[0])
    return min_area * area, "m2"


def _table(counts: pd.DataFrame) -> pd.DataFrame:
    rows = [
        prf(int(a), int(b), int(c)) for a, b, c in zip(counts.tp, counts.fp, counts.fn, strict=True)
    ]
    counts[["precision", "recall", "f1"]] = pd.DataFrame(rows, index=counts.index)
    for col in ("tp", "fp", "fn"):
        counts[col] = counts[col].astype(int)
    return counts
