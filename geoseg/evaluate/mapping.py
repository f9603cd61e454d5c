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


def _image_tiles(image, labels, ckpt, *, column, fill, names, max_tiles, seed) -> tuple:
    """Labelled tiles of a raster: ``(iterator of (image, valid, label), n, names)``."""
    from rasterio.windows import Window

    from geoseg.io.labels import Grid, LabelSource
    from geoseg.io.rasters import open_raster, read_window
    from geoseg.predict.raster import select_bands
    from geoseg.tiles.grid import tile_windows

    src = open_raster(image, param="--image")
    bands = select_bands(src.count, ckpt["bands"], name=Path(image).name)
    size = int(ckpt.get("tile_size") or 256)
    source = LabelSource(labels, Grid.of(src), column=column, fill=fill, names=names,
                         param="--labels")  # fmt: skip
    labelled = []
    for row, col in tile_windows(src.height, src.width, size, 0):
        window = Window(col, row, min(size, src.width), min(size, src.height))
        lab = source.read(window)
        if ((lab > 0) & (lab != fill)).any():
            labelled.append(window)
    chosen = choose(labelled, max_tiles, seed)
    log.info(
        "%d of %d tiles of %s carry labels; using %d",
        len(labelled),
        len(tile_windows(src.height, src.width, size, 0)),
        Path(image).name,
        len(chosen),
    )

    def tiles() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        try:
            for window in chosen:
                data, valid = read_window(src, window, bands)
                yield data, valid, source.read(window)
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
        raise BadInput(f"{store} has {len(tiles_store.bands)} bands but the model expects "
                       f"{len(ckpt['bands'])}", param="--store")  # fmt: skip
    labelled = [i for i in range(tiles_store.n_tiles)
                if np.any(tiles_store.label[i] > 0)]  # fmt: skip
    chosen = choose(labelled, max_tiles, seed)
    names = {int(v): str(k) for k, v in tiles_store.label_classes.items()}

    def tiles():
        for i in chosen:
            t = tiles_store.read(i)
            lab = t["label"]
            if fill:
                lab = np.where((lab == 0) & t["valid"], np.uint8(fill), lab)
            yield t["image"], t["valid"], lab

    return tiles(), len(chosen), names


def fit_mapping(
    checkpoint: str | Path,
    *,
    labels: str | Path | None = None,
    image: str | Path | None = None,
    store: str | Path | None = None,
    max_tiles: int = 50,
    method: Literal["majority", "hungarian"] = "majority",
    names: dict[int, str] | None = None,
    column: str | None = None,
    fill: int | None = None,
    head: int | None = None,
    output: str | Path | None = None,
    overwrite: bool = False,
    seed: int = 0,
    device: str = "auto",
) -> dict[str, Any]:
    """Learn a cluster→class mapping from a few labelled tiles and store it in the checkpoint.

    Args:
        checkpoint: a geoseg checkpoint (``run/best.pt``).
        labels, image: label polygons or raster and the image they annotate; or
        store: a tile store with a ``label`` array.
        max_tiles: label budget, in tiles (of the checkpoint's tile size).
        method: ``majority`` (many-to-one, suits overclustering) or ``hungarian`` (one-to-one).
        names: label value → class name (default from the labels: vector labels without a
            column are ``1 = building``, a store's ``label_classes``; else ``class_<v>``).
        column: vector labels' class-value column (default: every polygon is 1 = building).
        fill: class value of the pixels outside every polygon (vector labels) or labelled 0
            (tile store) in the chosen tiles. Default: a background class that takes clusters
            but is not stored, right for complete footprints (SpaceNet); 0 leaves those
            pixels out, for incomplete labels. Raster labels keep 0 as unlabelled.
        head: head to map (default the checkpoint's ``head``).
        output: write the mapped checkpoint here instead of updating ``checkpoint``.
        overwrite: see the module docstring.
        seed: which labelled tiles are drawn when there are more than ``max_tiles``.
        device: torch device for the cluster predictions.

    Returns:
        ``{"mapping": ckpt["mapping"], "tiles": n, "pixels": n, "accuracy": float,
        "confusion": nested list, "output": path}``.
    """
    from geoseg.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
    from geoseg.predict.segment import predict_array

    if method not in ("majority", "hungarian"):
        raise BadInput(f"unknown method {method!r}; use majority or hungarian", param="--method")
    if max_tiles < 1:
        raise BadInput(f"{max_tiles} must be at least 1", param="--max-tiles")
    if (store is None) == (labels is None):
        raise BadInput("give either --labels with --image, or --store", param="--labels")
    if labels is not None and image is None:
        raise BadInput("--labels needs the --image they annotate", param="--image")
    ckpt = load_checkpoint(checkpoint, param="CHECKPOINT")
    target = Path(output) if output is not None else Path(checkpoint)
    if output is not None:
        check_output(target, overwrite=overwrite, param="--output")
    elif ckpt.get("mapping") and not overwrite:
        raise BadInput(f"{checkpoint} already holds a mapping; pass --overwrite to replace it "
                       "or -o to write a new checkpoint", param="CHECKPOINT")  # fmt: skip
    head = int(ckpt.get("head", 0)) if head is None else int(head)
    if not 0 <= head < len(ckpt["n_clusters"]):
        raise BadInput(f"head {head} does not exist; the model has {len(ckpt['n_clusters'])}",
                       param="--head")  # fmt: skip
    skip: tuple[int, ...] = ()
    if fill is None and (store is not None or Path(labels).suffix.lower() in VECTOR_SUFFIXES):
        fill, skip = BACKGROUND, (BACKGROUND,)
    if store is not None:
        tiles, n_tiles, found = _store_tiles(store, ckpt, fill=fill, max_tiles=max_tiles, seed=seed)
        if fill and fill not in found:
            found[fill] = "background"
    else:
        tiles, n_tiles, found = _image_tiles(
            image, labels, ckpt, column=column, fill=fill or 0, names=names,
            max_tiles=max_tiles, seed=seed,
        )  # fmt: skip
    if n_tiles == 0:
        raise BadInput("no tile carries a label; check that the labels overlap the image",
                       param="--labels" if store is None else "--store")  # fmt: skip
    model = model_from_checkpoint(ckpt)
    k = int(ckpt["n_clusters"][head])
    total = None
    for data, valid, lab in progress(tiles, total=n_tiles, desc="map", unit="tile"):
        probs = predict_array(model, data, valid, tile_size=ckpt.get("tile_size"),
                              norm=ckpt["norm"], head=head, device=device)  # fmt: skip
        clusters = probs.argmax(axis=0)
        part = confusion_matrix(clusters, lab, n_clusters=k, valid=valid)
        total = add_confusion(total, part)
    assignment = mapping_from_confusion(total, method)
    table = {**found, **(names or {})}
    record = mapping_record(assignment, table, head=head, method=method, skip=skip)
    if not record["classes"]:
        named = [v for v in range(1, total.shape[1]) if v not in skip]
        if not total[:, named].sum():
            raise BadInput("no cluster got a class: the labelled tiles hold no labelled valid "
                           "pixel", param="--labels")  # fmt: skip
        raise NoClassFound(
            f"no cluster is mostly a named class in the {n_tiles} labelled tiles (each is mostly "
            "background); try more --max-tiles, --method hungarian, or a longer training run"
        )
    ckpt["mapping"] = record
    save_checkpoint(ckpt, target)
    acc = accuracy(total, assignment)
    log.info("mapping from %d tiles (%d pixels): %s; accuracy on them %.3f", n_tiles,
             int(total.sum()), record["classes"], acc)  # fmt: skip
    return {"mapping": record, "tiles": n_tiles, "pixels": int(total.sum()), "accuracy": acc,
            "confusion": total.tolist(), "output": str(target)}  # fmt: skip
