"""``fit_mapping``: name unsupervised clusters from a small label budget; store it in the model.

Only a few labelled tiles are used (``max_tiles``, 50 by default, as in the SpaceNet
experiment that matched clusters to buildings from 50 annotated tiles): the point of the
method is that labels are scarce. Clusters are predicted on those tiles exactly as ``predict``
does (``geoseg.predict.predict_array``), counted against the labels in a confusion matrix, and
mapped many-to-one (majority) or one-to-one (Hungarian). The mapping goes into
``ckpt["mapping"]`` (docs/contracts.md), so ``predict`` then writes class rasters and polygons.

Writing back: with ``output`` the updated checkpoint goes there (refused if it exists, unless
``overwrite``); without it the checkpoint is updated in place, which is refused only when it
already holds a mapping and ``overwrite`` is not given (replacing a mapping loses it).
Either way the write is atomic.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np

from geoseg.errors import BadInput, GeoSegError
from geoseg.evaluate.pixels import accuracy, confusion_matrix, mapping_from_confusion
from geoseg.evaluate.rasters import add_confusion
from geoseg.io.labels import VECTOR_SUFFIXES
from geoseg.paths import check_output
from geoseg.progress import progress

log = logging.getLogger(__name__)


class NoClassFound(GeoSegError):
    """The labels are fine but no cluster is mostly one of their classes (exit 1): a result
    of the model and the label budget, not a mistake in the command."""


#: pixels of context read around each labelled tile (labels there are not used)
CONTEXT = 32
#: default mapping tile size (px): a labelling budget is counted in tiles of this size
MAP_TILE = 64
#: estimated IoU under which naming warns that the building layer will be poor
POOR_IOU = 0.3

#: label value of "outside every polygon" in the chosen tiles when --fill is not given: it
#: competes for clusters like any class, but is not stored (it is "not a named class")
BACKGROUND = 255


def mapping_record(
    assignment: np.ndarray,
    names: dict[int, str],
    *,
    head: int,
    method: str,
    skip: tuple[int, ...] = (),
) -> dict[str, Any]:
    """The checkpoint's ``mapping`` dict from a cluster → label value array (-1 = unmapped).

    Classes that got no cluster, and label values in ``skip``, are left out, so predict
    writes no always-empty raster and no raster of "background".
    """
    classes: dict[str, list[int]] = {}
    class_ids: dict[str, int] = {}
    for value in sorted({int(v) for v in assignment if v > 0 and v not in skip}):
        name = names.get(value, f"class_{value}")
        classes[name] = [int(c) for c in np.flatnonzero(assignment == value)]
        class_ids[name] = value
    return {"head": int(head), "method": method, "classes": classes, "class_ids": class_ids}


def choose(candidates: list, max_tiles: int, seed: int) -> list:
    """Up to ``max_tiles`` of ``candidates``, a seeded random sample kept in original order."""
    if len(candidates) <= max_tiles:
        return list(candidates)
    picked = np.random.default_rng(seed).choice(len(candidates), max_tiles, replace=False)
    return [candidates[i] for i in sorted(picked)]


def _image_tiles(
    image, labels, ckpt, *, column, fill, names, max_tiles, seed, size, nodata
) -> tuple:
    """Labelled tiles of a raster: ``(iterator of (image, valid, label, use), n, names)``.

    Tiles are ``size`` px windows of the grid anchored at pixel (0, 0); each is read with
    :data:`CONTEXT` pixels of its surroundings (labels there are 0 = unlabelled), so that a
    model with spatial context sees the tile as predict sees it inside a scene. ``use`` marks
    the tile's own pixels.
    """
    from rasterio.windows import Window

    from geoseg.io.bands import file_band_labels, match_bands
    from geoseg.io.labels import Grid, LabelReader
    from geoseg.io.rasters import open_raster, read_window
    from geoseg.tiles.grid import TileGrid

    src = open_raster(image, param="--image")
    # the band contract, as predict: by name and pixel type (docs/reliability.md)
    bands = match_bands(
        file_band_labels(src),
        src.dtypes[0],
        model_names=ckpt.get("band_names") or [f"b{b}" for b in ckpt["bands"]],
        model_bands=ckpt["bands"],
        model_dtype=ckpt.get("dtype"),
        model_count=ckpt.get("band_count"),
        name=Path(image).name,
    )
    windows = [
        (row, col)
        for row, col in TileGrid.for_prediction(size, 0).windows(src.height, src.width)
        if row + size <= src.height and col + size <= src.width
    ] or [(0, 0)]
    source = LabelReader(
        labels, Grid.of(src), column=column, fill=fill, names=names, reproject=True
    )
    labelled = []
    for row, col in windows:
        window = Window(col, row, min(size, src.width), min(size, src.height))
        lab = source.read(window)
        if ((lab > 0) & (lab != fill)).any():
            labelled.append(window)
    chosen = choose(labelled, max_tiles, seed)
    log.info(
        "%d of %d tiles of %s carry labels; using %d",
        len(labelled),
        len(windows),
        Path(image).name,
        len(chosen),
    )

    def tiles() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        try:
            for window in chosen:
                m = CONTEXT
                wide = Window(
                    window.col_off - m,
                    window.row_off - m,
                    window.width + 2 * m,
                    window.height + 2 * m,
                )
                data, valid = read_window(src, wide, bands, nodata=nodata)
                lab = np.zeros(valid.shape, np.uint8)
                use = np.zeros(valid.shape, bool)
                h, w = int(window.height), int(window.width)
                lab[m : m + h, m : m + w] = source.read(window)
                use[m : m + h, m : m + w] = True
                yield data, valid, lab, use & valid
        finally:
            source.close()
            src.close()

    return tiles(), len(chosen), source.names


def _store_tiles(store, ckpt, *, fill, max_tiles, seed) -> tuple:
    """Labelled tiles of a tile store (``label`` array), as :func:`_image_tiles`.

    A store keeps no difference between "unlabelled" and "outside every polygon" (both 0), so
    a non-zero ``fill`` is applied to the valid 0 pixels of the chosen tiles.
    """
    from geoseg.tiles.store import open_store

    tiles_store = open_store(store)
    if not tiles_store.has_labels:
        raise BadInput(f"{store} has no label array; tile it with --labels", param="--store")
    if len(tiles_store.bands) != len(ckpt["bands"]):
        raise BadInput(
            f"{store} has {len(tiles_store.bands)} bands but the model expects "
            f"{len(ckpt['bands'])}",
            param="--store",
        )
    labelled = [i for i in range(tiles_store.n_tiles) if np.any(tiles_store.label[i] > 0)]
    chosen = choose(labelled, max_tiles, seed)
    names = {int(v): str(k) for k, v in tiles_store.label_classes.items()}

    def tiles():
        for i in chosen:
            t = tiles_store.read(i)
            lab = t["label"]
            if fill:
                lab = np.where((lab == 0) & t["valid"], np.uint8(fill), lab)
            yield t["image"], t["valid"], lab, t["valid"]

    return tiles(), len(chosen), names


def _target_class(names: dict[int, str], skip: tuple[int, ...]) -> int:
    """The label value a few-label head predicts: ``building``, else the only named class."""
    named = {v: n for v, n in names.items() if v not in skip and n != "background"}
    for value, name in named.items():
        if name == "building":
            return value
    if len(named) == 1:
        return next(iter(named))
    found = f"name {sorted(named.values())}" if named else "hold numbered classes, unnamed"
    raise BadInput(
        f"a few-label head predicts one class, and the labels {found}; name the building "
        "value with --names VALUE=building (e.g. --names 1=building)",
        param="--head",
    )


def fit_mapping(
    checkpoint: str | Path,
    *,
    labels: str | Path | None = None,
    image: str | Path | None = None,
    store: str | Path | None = None,
    max_tiles: int = 50,
    method: Literal["iou", "majority", "hungarian"] = "iou",
    names: dict[int, str] | None = None,
    column: str | None = None,
    fill: int | None = None,
    head: int | Literal["linear", "mlp"] | None = None,
    tile_size: int = MAP_TILE,
    nodata: Any = None,
    head_options: dict[str, Any] | None = None,
    output: str | Path | None = None,
    overwrite: bool = False,
    seed: int = 0,
    device: str = "auto",
) -> dict[str, Any]:
    """Name clusters (or fit a few-label head) from a few labelled tiles; store it in the model.

    Args:
        checkpoint: a geoseg checkpoint (``run/best.pt``).
        labels, image: label polygons or raster and the image they annotate; or
        store: a tile store with a ``label`` array.
        max_tiles: label budget, in tiles of ``tile_size``.
        method: ``iou`` (default: per class, the cluster set with the best IoU on the labelled
            pixels, see :mod:`geoseg.evaluate.naming`; never fails), ``majority`` (many-to-one)
            or ``hungarian`` (one-to-one).
        names: label value → class name (default from the labels: vector labels without a
            column are ``1 = building``, a store's ``label_classes``; else ``class_<v>``). A
            class named ``background`` competes for clusters but is never stored.
        column: vector labels' class-value column (default: the file's ``label``/``class``
            column when it holds several classes, else every polygon is 1 = building).
        fill: class value of the pixels outside every polygon (vector labels) or labelled 0
            (tile store) in the chosen tiles. Default: a background class that takes clusters
            but is not stored, right for complete footprints (SpaceNet); 0 leaves those
            pixels out, for incomplete labels. Raster labels keep 0 as unlabelled.
        head: a cluster head to name (default: every head is tried and the one whose named
            set reaches the best IoU is kept, so an over-clustering head is used where it
            helps), or ``"linear"``: fit a logistic-regression head on the frozen features
            (feature pyramid + cluster probabilities of every head, see
            :mod:`geoseg.heads`), stored in the checkpoint and used by predict; ``"mlp"``:
            the same with one hidden layer.
        tile_size: the labelled tiles' size (px), independent of the training crop size.
        nodata: the image's nodata override (as ``geoseg tile`` / ``predict``).
        head_options: for ``head="linear"``, keywords of :func:`geoseg.heads.fit.fit_head`
            (``superpixels``, ``pyramid``, ``cluster_heads``, ``pixel_size``: by default the
            image's, in metres): the ablations of docs/results.md.
        output: write the mapped checkpoint here instead of updating ``checkpoint``.
        overwrite: see the module docstring.
        seed: which labelled tiles are drawn when there are more than ``max_tiles``.
        device: torch device for the cluster predictions.

    Returns:
        ``{"mapping", "tiles", "pixels", "accuracy", "estimated_iou" (per class name),
        "warning" (str or None), "confusion", "output"}``; a few-label head adds
        ``"estimate"``: ``in-sample`` or ``out-of-fold`` (its ``calibration="folds"``).
    """
    from geoseg.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
    from geoseg.evaluate.naming import name_by_iou

    if method not in ("iou", "majority", "hungarian"):
        raise BadInput(
            f"unknown method {method!r}; use iou, majority or hungarian", param="--method"
        )
    if max_tiles < 1:
        raise BadInput(f"{max_tiles} must be at least 1", param="--max-tiles")
    if tile_size < 8:
        raise BadInput(f"{tile_size} is too small; use 64 or more", param="--tile-size")
    if (store is None) == (labels is None):
        raise BadInput("give either --labels with --image, or --store", param="--labels")
    if labels is not None and image is None:
        raise BadInput("--labels needs the --image they annotate", param="--image")
    ckpt = load_checkpoint(checkpoint, param="CHECKPOINT")
    target = Path(output) if output is not None else Path(checkpoint)
    if output is not None:
        check_output(target, overwrite=overwrite, param="--output")
    elif ckpt.get("mapping") and not overwrite:
        raise BadInput(
            f"{checkpoint} already holds a mapping; pass --overwrite to replace it "
            "or -o to write a new checkpoint",
            param="CHECKPOINT",
        )
    ckpt = strip_head(ckpt)
    n_heads = len(ckpt["n_clusters"])
    linear = head in ("linear", "mlp")
    if not linear and head is not None and not 0 <= int(head) < n_heads:
        raise BadInput(f"head {head} does not exist; the model has {n_heads}", param="--head")
    skip: tuple[int, ...] = ()
    if fill is None and (store is not None or Path(labels).suffix.lower() in VECTOR_SUFFIXES):
        fill, skip = BACKGROUND, (BACKGROUND,)
    if store is not None:
        tiles, n_tiles, found = _store_tiles(store, ckpt, fill=fill, max_tiles=max_tiles, seed=seed)
        if fill and fill not in found:
            found[fill] = "background"
    else:
        tiles, n_tiles, found = _image_tiles(
            image,
            labels,
            ckpt,
            column=column,
            fill=fill or 0,
            names=names,
            max_tiles=max_tiles,
            seed=seed,
            size=tile_size,
            nodata=nodata,
        )
    if n_tiles == 0:
        raise BadInput(
            "no tile carries a label; check that the labels overlap the image",
            param="--labels" if store is None else "--store",
        )
    table = {**found, **(names or {})}
    skip = skip + tuple(v for v, n in table.items() if n == "background" and v not in skip)
    tiles = list(progress(tiles, total=n_tiles, desc="map", unit="tile"))
    model = model_from_checkpoint(ckpt)
    if linear:
        # the scene's pixel size puts the head's superpixels in metres (geoseg.refine)
        from geoseg.heads.fit import ground_pixel_size

        size = {"pixel_size": ground_pixel_size(image)} if image is not None else {}
        options = {"kind": head, "seed": seed, **size, **(head_options or {})}
        return _fit_linear(ckpt, model, tiles, table, skip, target=target, options=options)
    heads = range(n_heads) if head is None else [int(head)]
    best = None
    for h in heads:
        total = _confusion(model, ckpt, tiles, h, device)
        if not total[1:].sum() and not total.sum():
            continue
        values = [v for v in range(1, total.shape[1]) if v not in skip and total[:, v].sum()]
        if values and len([v for v in range(1, total.shape[1]) if total[:, v].sum()]) < 2:
            # one labelled class only (e.g. building polygons with --fill 0): every cluster
            # that touches it would be "building" with a perfect score, which means nothing
            raise BadInput(
                f"the labelled tiles hold only {table.get(values[0], values[0])} pixels, so any "
                "naming scores perfectly; label other classes too, or drop --fill 0 so pixels "
                "outside the polygons count as background",
                param="--labels" if store is None else "--store",
            )
        if method == "iou":
            assignment, estimates = name_by_iou(total, values, background=skip)
        else:
            assignment = mapping_from_confusion(total, method)
            estimates = {v: _class_iou(total, assignment, v) for v in values}
        score = float(np.mean(list(estimates.values()))) if estimates else 0.0
        if best is None or score > best[0]:
            best = (score, h, total, assignment, estimates)
    if best is None or not best[4]:
        raise BadInput(
            "no cluster got a class: the labelled tiles hold no labelled valid pixel",
            param="--labels",
        )
    _, h, total, assignment, estimates = best
    record = mapping_record(assignment, table, head=h, method=method, skip=skip)
    if not record["classes"]:
        raise NoClassFound(
            f"no cluster is mostly a named class in the {n_tiles} labelled tiles (each is mostly "
            "background); use --method iou (the default), more --max-tiles, or --head linear"
        )
    by_name = {table.get(v, f"class_{v}"): round(iou, 4) for v, iou in estimates.items()}
    warning = _warn_if_poor(by_name)
    ckpt["mapping"] = record
    save_checkpoint(ckpt, target)
    acc = accuracy(total, assignment)
    log.info(
        "mapping of head %d from %d tiles (%d pixels): %s; accuracy on them %.3f, IoU %s",
        h,
        n_tiles,
        int(total.sum()),
        record["classes"],
        acc,
        by_name,
    )
    return {
        "mapping": record,
        "tiles": n_tiles,
        "pixels": int(total.sum()),
        "accuracy": acc,
        "estimated_iou": by_name,
        "warning": warning,
        "confusion": total.tolist(),
        "output": str(target),
    }


def _confusion(model, ckpt, tiles, head: int, device: str) -> np.ndarray:
    """Cluster × label counts of ``head`` over the labelled pixels of ``tiles``."""
    from geoseg.predict.segment import predict_array

    k = int(ckpt["n_clusters"][head])
    total = None
    for data, valid, lab, use in tiles:
        probs = predict_array(model, data, valid, norm=ckpt["norm"], head=head, device=device)
        part = confusion_matrix(probs.argmax(axis=0), lab, n_clusters=k, valid=use)
        total = add_confusion(total, part)
    return total


def _class_iou(confusion: np.ndarray, assignment: np.ndarray, value: int) -> float:
    """IoU of label ``value`` on the labelled pixels under a cluster → value assignment."""
    labelled = [v for v in range(1, confusion.shape[1])]
    pred = confusion[assignment == value][:, labelled].sum()
    tp = confusion[assignment == value, value].sum()
    truth = confusion[:, value].sum()
    union = pred + truth - tp
    return float(tp / union) if union else 0.0


def _warn_if_poor(estimates: dict[str, float]) -> str | None:
    """A warning (logged and returned) when a class's estimated IoU is below :data:`POOR_IOU`."""
    poor = {k: v for k, v in estimates.items() if v < POOR_IOU}
    if not poor:
        return None
    text = (
        "estimated IoU on the labelled tiles is low ("
        + ", ".join(f"{k} {v:.2f}" for k, v in poor.items())
        + "): expect a poor class layer; try --head linear, more labelled tiles, or longer training"
    )
    log.warning(text)
    return text


def strip_head(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint without a previously fitted few-label head (its extra head entry)."""
    if not ckpt.get("fewshot"):
        return ckpt
    ckpt = dict(ckpt)
    ckpt.pop("fewshot")
    ckpt["n_clusters"] = list(ckpt["n_clusters"])[:-1]
    if "head_names" in ckpt:
        ckpt["head_names"] = list(ckpt["head_names"])[:-1]
    ckpt["mapping"] = None
    return ckpt


def _fit_linear(ckpt, model, tiles, table, skip, *, target, options) -> dict[str, Any]:
    """Fit the few-label head and store it as one more head, mapped to its class."""
    from geoseg.checkpoint import save_checkpoint
    from geoseg.heads.fit import fit_head
    from geoseg.heads.model import HEAD_NAME
    from geoseg.io.bands import normalize

    value = _target_class(table, skip)
    background = sorted({v for v in table if v != value} | set(skip))
    windows = []
    for data, valid, lab, use in tiles:
        x = normalize(data, ckpt["norm"]).astype(np.float32)
        x[:, ~valid] = 0.0
        windows.append((x, lab, use))
    n_pixels = int(
        sum(((lab == value) | np.isin(lab, background))[use].sum() for _, lab, use in windows)
    )
    if not any((lab[use] == value).any() for _, lab, use in windows):
        raise BadInput(
            f"the labelled tiles hold no {table.get(value, value)} pixel", param="--labels"
        )
    try:
        options = {"cluster_heads": range(len(ckpt["n_clusters"])), **options}
        record = fit_head(model, windows, target=value, background=background, **options)
    except ValueError as exc:
        raise BadInput(f"cannot fit a head: {exc}", param="--labels") from exc
    name = table.get(value, "building")
    ckpt["fewshot"] = record
    ckpt["n_clusters"] = list(ckpt["n_clusters"]) + [2]
    if "head_names" in ckpt:
        ckpt["head_names"] = list(ckpt["head_names"]) + [HEAD_NAME]
    ckpt["mapping"] = {
        "head": len(ckpt["n_clusters"]) - 1,
        "method": record["kind"],
        "classes": {name: [1]},
        "class_ids": {name: int(value)},
    }
    save_checkpoint(ckpt, target)
    by_name = {name: round(record["estimated_iou"], 4)}
    warning = _warn_if_poor(by_name)
    return {
        "mapping": ckpt["mapping"],
        "tiles": len(windows),
        "pixels": n_pixels,
        "accuracy": None,
        "estimated_iou": by_name,
        "estimate": "out-of-fold" if record.get("calibration") == "folds" else "in-sample",
        "warning": warning,
        "confusion": None,
        "output": str(target),
    }
