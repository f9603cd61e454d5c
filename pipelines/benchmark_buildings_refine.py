"""Screening of `default`'s refinement and threshold on the building benchmark's scenes.

    OMP_NUM_THREADS=1 python pipelines/benchmark_buildings_refine.py --cache bench/buildings \
        --out bench/refine [--scenes vegas,quebec1] [--variants off,px,m1] [--json FILE]

The full benchmark (pipelines/benchmark_buildings_all.py) predicts every draw with the real
tiled predict: 20-45 s per draw, about 40 minutes per variant of `default` over 12 scenes. This
screens variants of what happens *after* the head (superpixel refinement, threshold choice) at a
fraction of that cost, on the same scenes, draws and unsupervised training:

1. the `default` k-means training cached by the benchmark (``<cache>/<scene>/runs/default/
   train/best.pt``) and the benchmark's own tile draws (seeds 0, 1, 2);
2. per draw, the mlp head fitted by ``fit_mapping`` exactly as `default` does, with the
   superpixels off (the head's weights do not depend on them: only its threshold does);
3. the head's raw building probability over the whole image in one pass (not predict's
   blended 256 px tiles: numbers are close to, not equal to, the benchmark's);
4. per variant: refinement, the threshold calibrated on the labelled pixels of the draw (as
   ``geoseg.heads.fit``), polygons with default's clean-up, SpaceNet F1 and pixel IoU with the
   benchmark's scoring.

Variants: ``off`` (no superpixels), ``px`` (the pixel parameters of ``geoseg.refine``), ``mX``
(parameters in metres, X times the reference region size; a scene without georeferencing falls
back to ``px``), and ``+f1`` after any of them: the threshold chosen for object F1 on the
labelled tiles instead of pixel IoU. Rankings from here are confirmed with the real benchmark
before anything is adopted (docs/results.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchmark_buildings as bb  # noqa: E402
import benchmark_buildings_all as ba  # noqa: E402
import building_truth as bt  # noqa: E402

log = logging.getLogger("benchmark_buildings_refine")
VARIANTS = ("off", "px", "m0.1", "m0.25", "m1", "off+f1", "px+f1")


def _scene(name: str, cache: Path, out: Path) -> bt.Scene:
    from geoseg_api import resolve_bands

    image, truth = ba.stage(name, cache / "staged")
    extra = list(ba.SCENES[name][2])
    opts = dict(zip(extra[::2], extra[1::2], strict=True))
    with bt._open(image, "IMAGE") as src:
        bands = resolve_bands(src, opts.get("--bands"))
    flt = bt.parse_filter(opts.get("--truth-filter"))
    scene = bt.stage(image, truth, out / name, bands=bands, flt=flt)
    return scene


def _raw_probability(mapped: Path, scene: bt.Scene) -> tuple[np.ndarray, np.ndarray]:
    """(building probability before refinement (H, W), normalised image (C, H, W))."""
    import rasterio
    import torch

    from geoseg.checkpoint import load_checkpoint, model_from_checkpoint
    from geoseg.heads.model import attach
    from geoseg.io.bands import normalize

    ckpt = load_checkpoint(mapped)
    model = attach(model_from_checkpoint(ckpt), ckpt)
    with rasterio.open(scene.image) as src:
        data = src.read(list(ckpt["bands"])).astype(np.float32)
    x = normalize(data, ckpt["norm"]).astype(np.float32)
    x[:, ~scene.valid] = 0.0
    with torch.inference_mode():
        _, p = model.probability(torch.from_numpy(x[None]), refined=False)
    return p[0].numpy(), x


def _refine(p: np.ndarray, x: np.ndarray, kind: str, pixel_size: float | None) -> np.ndarray:
    from geoseg.refine import superpixels as sp

    if kind == "off":
        return p
    if kind == "px" or pixel_size is None:
        return sp.refine(p, x)
    factor = float(kind[1:])
    # reference: the pixel parameters at 0.5 m, the resolution where they were a measured gain
    area = 0.25 * factor / pixel_size**2  # reference m² → px²
    return sp.refine(
        p,
        x,
        scale=sp.SCALE * area,
        sigma=sp.SIGMA * 0.5 * np.sqrt(factor) / pixel_size,
        min_size=max(1, round(sp.MIN_SIZE * area)),
    )


def _components_f1(pred: np.ndarray, truth: np.ndarray, min_px: float) -> tuple[int, int, int]:
    """TP, FP, FN of connected components matched at IoU > 0.5 (components are disjoint, so a
    match is unique), components under ``min_px`` pixels dropped."""
    from scipy import ndimage

    lp, n_p = ndimage.label(pred)
    lt, n_t = ndimage.label(truth)
    sp_ = np.bincount(lp.ravel(), minlength=n_p + 1)
    st = np.bincount(lt.ravel(), minlength=n_t + 1)
    keep_p = sp_ >= min_px
    keep_t = st >= min_px
    keep_p[0] = keep_t[0] = False
    both = (lp > 0) & (lt > 0)
    pairs = np.bincount(lp[both] * (n_t + 1) + lt[both], minlength=(n_p + 1) * (n_t + 1))
    inter = pairs.reshape(n_p + 1, n_t + 1)
    union = sp_[:, None] + st[None, :] - inter
    match = (inter / np.maximum(union, 1) > 0.5) & keep_p[:, None] & keep_t[None, :]
    tp = int(match.sum())
    return tp, int(keep_p.sum()) - tp, int(keep_t.sum()) - tp


def _threshold(p, labels, scene, tiles, objective: str) -> float:
    from geoseg.heads.fit import THRESHOLDS

    use = labels > 0
    t = labels[use] == 2
    pv = p[use]
    ious = np.array([((pv > th) & t).sum() / max(((pv > th) | t).sum(), 1) for th in THRESHOLDS])
    if objective == "iou":
        return float(THRESHOLDS[int(np.argmax(ious))])
    min_px = max(scene.min_area, 10.0) / scene.pixel_size**2
    f1s = []
    for th in THRESHOLDS:
        tp = fp = fn = 0
        for r, c in tiles:
            win = np.s_[r : r + bt.TILE, c : c + bt.TILE]
            a, b, cc = _components_f1(p[win] > th, labels[win] == 2, min_px)
            tp, fp, fn = tp + a, fp + b, fn + cc
        f1s.append(2 * tp / max(2 * tp + fp + fn, 1))
    # object F1 on 16 small tiles is coarse: ties are broken by pixel IoU
    return float(THRESHOLDS[int(np.lexsort((ious, np.array(f1s)))[-1])])


def _score(binary, scene: bt.Scene, folder: Path, n_truth: int) -> dict[str, Any]:
    import rasterio
    from geoseg_api import vectorize

    folder.mkdir(parents=True, exist_ok=True)
    tif = folder / "building.tif"
    with rasterio.open(scene.image) as src:
        profile = dict(
            driver="GTiff",
            width=src.width,
            height=src.height,
            count=1,
            dtype="uint8",
            crs=src.crs,
            transform=src.transform,
            nodata=255,
        )
    out = np.where(scene.valid, binary.astype(np.uint8), 255).astype(np.uint8)
    with rasterio.open(tif, "w", **profile) as dst:
        dst.write(out, 1)
    poly = bb.polygons_kwargs(bb.METHODS["default"], scene)
    gpkg = folder / "buildings.gpkg"
    gdf = vectorize(tif, classes={"building": 1}, class_names={1: "building"}, **poly)
    if len(gdf) == 0:
        return bb.score_draw(None, None, scene, n_truth)
    gpkg.unlink(missing_ok=True)
    gdf.to_file(gpkg, driver="GPKG")
    return bb.score_draw(gpkg, tif, scene, n_truth)


def run_scene(name: str, cache: Path, out: Path, variants: list[str]) -> dict[str, Any]:
    from geoseg_api import fit_mapping

    best = cache / name / "runs" / "default" / "train" / "best.pt"
    scene = _scene(name, cache, out)
    n_truth = bb.truth_count(scene)
    px = scene.pixel_size if scene.georeferenced else None
    rec: dict[str, Any] = {"scene": name, "pixel_size": px, "draws": []}
    for seed in bb.SEEDS:
        tiles = bt.draw_tiles(scene.mask, seed)
        folder = out / name / f"seed{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        labels_tif = bt.label_raster(scene.mask, tiles, scene.image, folder / "labels.tif")
        t0 = time.perf_counter()
        fit_mapping(
            best,
            labels=labels_tif,
            image=scene.image,
            max_tiles=max(bt.N_TILES, bb.mapping_windows(tiles, scene.mask.shape, 64)),
            names=dict(bb.NAMES),
            seed=seed,
            output=folder / "mapped.pt",
            overwrite=True,
            device="cpu",
            head="mlp",
            tile_size=bt.TILE,
            head_options={"superpixels": False},
        )
        p_raw, x = _raw_probability(folder / "mapped.pt", scene)
        import rasterio

        with rasterio.open(labels_tif) as src:
            labels = src.read(1)
        draw: dict[str, Any] = {"seed": seed, "head_s": round(time.perf_counter() - t0, 1)}
        refined: dict[str, np.ndarray] = {}
        for v in variants:
            kind, _, obj = v.partition("+")
            if kind not in refined:
                refined[kind] = _refine(p_raw, x, kind, px)
            p = refined[kind]
            th = _threshold(p, labels, scene, tiles, "f1" if obj == "f1" else "iou")
            res = _score((p > th) & scene.valid, scene, folder / v, n_truth)
            draw[v] = {"threshold": th, **{k: res[k] for k in bb.METRICS}}
            log.info(
                "%s seed %d %s: thr %.2f F1 %.3f IoU %.3f", name, seed, v, th, res["f1"], res["iou"]
            )
        rec["draws"].append(draw)
    rec["mean"] = {
        v: {k: float(np.mean([d[v][k] for d in rec["draws"]])) for k in ("f1", "iou")}
        for v in variants
    }
    return rec


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", type=Path, default=Path("bench/buildings"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--scenes", default=",".join(s for s in ba.SCENES if s not in ba.RECALL_ONLY))
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("rasterio", "fiona", "pyogrio", "geoseg"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from geoseg_api import set_enabled

    set_enabled(False)
    variants = [v for v in args.variants.split(",") if v]
    records = []
    for name in [s for s in args.scenes.split(",") if s]:
        path = args.out / f"{name}.json"
        if path.exists():
            rec = json.loads(path.read_text())
            if all(v in rec["mean"] for v in variants):
                records.append(rec)
                continue
        rec = run_scene(name, args.cache, args.out, variants)
        bb.write_json(path, rec)
        records.append(rec)
    print("| scene | " + " | ".join(variants) + " |")
    print("|---|" + "---|" * len(variants))
    for r in records:
        print(
            f"| {r['scene']} | "
            + " | ".join(f"{r['mean'][v]['f1']:.2f} / {r['mean'][v]['iou']:.2f}" for v in variants)
            + " |"
        )
    means = [np.mean([r["mean"][v]["f1"] for r in records]) for v in variants]
    ious = [np.mean([r["mean"][v]["iou"] for r in records]) for v in variants]
    print(
        "| **mean** | "
        + " | ".join(f"**{a:.3f}** / {b:.3f}" for a, b in zip(means, ious, strict=True))
        + " |"
    )
    if args.json:
        bb.write_json(args.json, records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
