"""Leave-scene-out building benchmark: every method on one scene, from 16 labelled tiles.

    python pipelines/benchmark_buildings.py IMAGE TRUTH [--bands SPEC] [--truth-filter COL=VAL]
        [--methods kmeans,kanezaki,iic,ac,rf,default] --out DIR [--json FILE]

IMAGE is any GDAL raster (a non-georeferenced PNG works: areas are then in px²). TRUTH is
building polygons in any vector format (``--truth-filter COL=VAL`` keeps some features, e.g.
``Niveau_2=Building``) or a building mask raster (non-zero = building, or ``value=V`` to keep
one class of a class raster; a nodata of 0 declared on a {0, 1} mask is the background, not a
hole). Truth is clipped to the image footprint (``pipelines/building_truth.py``).

Protocol, the same for every method:

1. **Train without labels** on IMAGE: tiled once into ``DIR/store.zarr`` (``geoseg.tiles.tile``,
   128 px tiles, no overlap), then ``geoseg.train.train`` with the method's CPU budget
   (:data:`METHODS`). The ``rf`` peer has no unsupervised stage.
2. **Label budget**: 16 tiles of 64×64 px drawn from the full tiles of the grid anchored at
   pixel (0, 0) that hold a building, three draws (seeds 0, 1, 2; ``numpy.random.default_rng``).
   Each draw is a label raster on the image grid (0 unlabelled, 1 background, 2 building, in
   ``DIR/inputs/labels_seed<k>.tif``) handed to ``geoseg.evaluate.fit_mapping`` (max 16 tiles),
   which names the clusters or fits the few-label head. A mapping that finds no building
   cluster (or raises NoClassFound) scores F1 0 for that draw: that is what the user would get.
3. **Predict** the whole image with the mapped checkpoint (``geoseg.predict.predict``: the
   building raster and its polygons, with the entry's polygon clean-up).
4. **Score**: SpaceNet F1 (``geoseg.evaluate.score``: IoU > 0.5, polygons under 20 px² dropped,
   converted to m² at the scene's pixel size) against the truth polygons clipped to the image
   footprint, and pixel building IoU of the building raster against the rasterised truth over
   every pixel of the image with data.

CPU budgets (all on CPU, torch's default threads; :data:`METHODS`): k-means 6 clusters fitted
on 100,000 sampled pixels; Kanezaki 32 response channels, batch 8, at most 100 steps (it stops
once its last batches use ≤ 6 clusters, typically after 20-30); IIC and AC 200 steps at
configs/cpu_smoke.yaml's settings (batch 4 of 64 px crops, 6 + 12 clusters, VGG trunk at 1/8
width / AC net of 16 channels); ``rf`` 50 trees on at most 30,000 labelled pixels per draw;
``default`` is whatever its marked METHODS entry holds (a training identical to another
entry's is shared, not repeated, when both run). Measured: all six on one scene in ≤ 15
minutes on 2 cores (docs/results.md).

Output: one JSON object per method (printed as one line, and ``DIR/<method>.json``) with the
mean and per-draw ``f1, precision, recall, iou, tp, fp, fn``, train/map/predict seconds, the
scene, its pixel size, the budget and the git commit; ``--json FILE`` writes them as one list.
A method that fails records ``error`` and the others carry on; bad input exits 2 with one line
naming the argument, before anything is written.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import building_truth as bt  # noqa: E402

log = logging.getLogger("benchmark_buildings")

ROOT = Path(__file__).resolve().parents[1]
SEEDS = (0, 1, 2)
STORE_TILE = 128  # tile store (training crops are CROP px inside)
CROP = 64
NAMES = {1: "background", 2: "building"}
METRICS = ("f1", "precision", "recall", "iou", "tp", "fp", "fn")

# --- the methods and their CPU budgets ---------------------------------------------------------
#: shared by the geoseg methods: 6 main clusters, 64 px crops with ≥ 50 % valid pixels, seed 0
COMMON = ("n_clusters=6", f"data.crop_size={CROP}", "seed=0", "data.min_valid=0.5")
#: IIC and AC share the objective, the batch and the step budget; they differ only in the net.
#: configs/cpu_smoke.yaml's settings (batch 4, 12 overclusters, 200 steps): about 2 minutes
#: each on two idle cores, so all six methods fit in 15 minutes on a shared machine
NET = (
    "n_over_clusters=12",
    "data.batch_size=4",
    "loss.displacement=2",
    "optim.lr=0.001",
    "schedule.eval_batches=2",
    "schedule.log_every=25",
)
NET_STEPS = 200
KANEZAKI_STEPS = 100


def steps(n: int) -> tuple[str, ...]:
    """A budget of ``n`` optimiser steps, evaluated and checkpointed once, at the end."""
    return tuple(
        f"schedule.{k}={n}" for k in ("steps", "steps_per_epoch", "eval_every", "checkpoint_every")
    )


#: Each geoseg entry: ``method`` (geoseg train method), ``train`` (config overrides on top of
#: COMMON), ``map`` (fit_mapping keywords; empty = fit_mapping's own defaults) and ``predict``
#: (predict keywords; ``polygons`` are vectorize keywords, where ``min_area_px`` is converted to
#: ``min_area`` in m² at the scene's pixel size). ``rf`` (the peer) is not in this table: it
#: lives in pipelines/rf_peer.py and takes ``default``'s polygon clean-up.
METHODS: dict[str, dict[str, Any]] = {
    "kmeans": {"method": "kmeans", "train": ("baseline.samples=100000",), "map": {}, "predict": {}},
    "kanezaki": {
        "method": "kanezaki",
        "train": (
            "baseline.width=32",
            "data.batch_size=8",
            "schedule.log_every=10",
            *steps(KANEZAKI_STEPS),
        ),
        "map": {},
        "predict": {},
    },
    "iic": {
        "method": "iic",
        "train": (*NET, "model.trunk=vgg", "model.width=0.125", *steps(NET_STEPS)),
        "map": {},
        "predict": {},
    },
    "ac": {
        "method": "ac",
        "train": (*NET, "model.channels=16", "model.dilations=[1, 2, 4, 1]", *steps(NET_STEPS)),
        "map": {},
        "predict": {},
    },
    # ---- DEFAULT: the recommended recipe (issue 8 item 5): k-means on the feature pyramid, the
    # ---- mlp head with superpixels in metres (the pixel size comes from the scene; a PNG keeps
    # ---- the pixel parameters), default's polygon clean-up.
    "default": {
        "method": "kmeans",
        "train": (
            "baseline.pyramid=true",
            "n_clusters=32",
            "baseline.samples=40000",
            "baseline.n_init=3",
        ),
        "map": {"head": "mlp", "head_options": {"superpixels": True}},
        "predict": {"polygons": {"min_area": 10.0, "fill_holes": True}},
    },
    # ---- end of DEFAULT
}

#: Ablations of ``default`` (docs/results.md): each removes one component, all else equal.
_CLEANUP_OFF = {"polygons": {"min_area": 0.0, "fill_holes": False}}
#: default's head options, kept by the variants that change something else of the head
_HEAD = METHODS["default"]["map"]["head_options"]
ABLATIONS: dict[str, dict[str, Any]] = {
    # the unsupervised clusters named by IoU, no head (the clean-up kept)
    "default-naming": {
        **METHODS["default"],
        "map": {},
        "predict": {"polygons": {"min_area": 10.0, "fill_holes": True}},
    },
    "default-no-superpixels": {
        **METHODS["default"],
        "map": {"head": "mlp", "head_options": {"superpixels": False}},
    },
    "default-no-clusters": {
        **METHODS["default"],
        "map": {"head": "mlp", "head_options": {**_HEAD, "cluster_heads": []}},
    },
    "default-no-cleanup": {**METHODS["default"], "predict": _CLEANUP_OFF},
    # superpixel parameters in pixels whatever the resolution (default before they were set
    # from the scene's pixel size in metres; heads fitted then keep them)
    "default-superpixels-px": {
        **METHODS["default"],
        "map": {"head": "mlp", "head_options": {"pixel_size": None}},
    },
    "default-linear": {**METHODS["default"], "map": {"head": "linear", "head_options": _HEAD}},
    # the threshold chosen on out-of-fold probabilities (4 folds of tiles), not in-sample
    "default-cv-threshold": {
        **METHODS["default"],
        "map": {"head": "mlp", "head_options": {**_HEAD, "calibration": "folds"}},
    },
    # the feature pyramid's blurs and windows sized in metres from the store's pixel size
    # (today's pixel scales at 0.5 m, within an octave either way); PNG scenes are unchanged
    "default-pyramid-m": {
        **METHODS["default"],
        "train": (*METHODS["default"]["train"], "baseline.pyramid_metres=true"),
    },
}
METHODS.update(ABLATIONS)
ALL_METHODS = ("kmeans", "kanezaki", "iic", "ac", "rf", "default")
KNOWN_METHODS = ALL_METHODS + tuple(ABLATIONS)


# --- helpers ----------------------------------------------------------------------------------


def commit() -> str:
    """The checkout's commit (short hash), or "?" outside git."""
    out = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    return out.stdout.strip() or "?"


def spec_of(name: str) -> dict[str, Any]:
    """What a method's numbers depend on (JSON-able): its METHODS entry, or for ``rf`` the
    forest settings and default's polygon clean-up. Cached results with another spec are stale."""
    if name == "rf":
        import rf_peer

        return json.loads(
            json.dumps(
                {
                    "forest": rf_peer.FOREST,
                    "scales": rf_peer.SCALES,
                    "max_samples": rf_peer.MAX_SAMPLES,
                    "polygons": METHODS["default"].get("predict", {}).get("polygons", {}),
                }
            )
        )
    return json.loads(json.dumps({**METHODS[name], "common": COMMON}))


def polygons_kwargs(spec: dict[str, Any], scene: bt.Scene) -> dict[str, Any]:
    """The entry's vectorize keywords with ``min_area_px`` converted to m² at the pixel size."""
    poly = dict(spec.get("predict", {}).get("polygons", {}) or {})
    if "min_area_px" in poly:
        poly["min_area"] = float(poly.pop("min_area_px")) * scene.pixel_size**2
    return poly


def accepts(func, name: str) -> bool:
    """Whether ``func`` takes the keyword ``name`` (fit_mapping gains keywords over time)."""
    import inspect

    params = inspect.signature(func).parameters
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def mapping_windows(tiles: list, shape: tuple[int, int], size: int) -> int:
    """How many of fit_mapping's tile windows hold a pixel of the drawn tiles.

    fit_mapping walks geoseg's tile grid, whose last row and column are snapped to the raster
    edge; a drawn tile in the last full row or column then also shows in a snapped window.
    Passing this count as ``max_tiles`` (16 when the grids agree) makes fit_mapping see every
    pixel of the 16 drawn tiles rather than a random 16 of the windows touching them.
    """
    from geoseg_api import tile_windows

    h, w = shape
    hits = 0
    for row, col in tile_windows(h, w, size, 0):
        if any(
            r < row + size and row < r + bt.TILE and c < col + size and col < c + bt.TILE
            for r, c in tiles
        ):
            hits += 1
    return hits


def truth_count(scene: bt.Scene) -> int:
    """Truth polygons that SpaceNet scoring keeps (area ≥ the minimum): the FN of no proposal."""
    from geoseg_api import score

    return int(score(scene.truth_path, scene.truth_path, min_area=scene.min_area).total["tp"])


def score_draw(
    vector: Path | None, building_tif: Path | None, scene: bt.Scene, n_truth: int
) -> dict[str, Any]:
    """SpaceNet F1 of the polygons and pixel IoU of the raster; nothing predicted = F1 0."""
    import rasterio
    from geoseg_api import score

    if vector is None or building_tif is None:
        res = {"tp": 0, "fp": 0, "fn": n_truth, "precision": 0.0, "recall": 0.0, "f1": 0.0}
        return {**res, "iou": 0.0, "pixels_pred": 0, "pixels_true": int((scene.mask == 1).sum())}
    total = score(vector, scene.truth_path, min_area=scene.min_area).total
    res = {k: total[k] for k in ("tp", "fp", "fn", "precision", "recall", "f1")}
    with rasterio.open(building_tif) as src:
        pred = src.read(1)
    res.update(bt.pixel_iou(pred, scene))
    return res


def summary(draws: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean of each metric over the draws that produced a score."""
    scored = [d for d in draws if d.get("f1") is not None]
    if not scored:
        return {k: None for k in METRICS}
    return {k: float(np.mean([d[k] for d in scored])) for k in METRICS}


# --- one method --------------------------------------------------------------------------------


def run_geoseg(
    name: str,
    spec: dict[str, Any],
    scene: bt.Scene,
    store: Path,
    draws: dict[int, tuple[list, Path]],
    out: Path,
    n_truth: int,
    trained: dict[tuple, tuple[Path, float, str]],
) -> dict[str, Any]:
    """Train a geoseg method once, then map, predict and score each draw."""
    from geoseg_api import NoClassFound, fit_mapping, load_checkpoint, predict, train

    overrides = (*COMMON, *spec["train"])
    if not scene.georeferenced:
        # a PNG is tiled from its stand-in grid of 1 m pixels; geoseg tile on the PNG itself
        # gives a store without CRS, whose pyramid keeps the pixel scales: train as that would
        overrides = tuple(o for o in overrides if not o.startswith("baseline.pyramid_metres="))
    key = (spec["method"], overrides)
    run = out / "runs" / name
    rec: dict[str, Any] = {
        "budget": {
            "train_method": spec["method"],
            "overrides": list(overrides),
            "map": spec.get("map", {}),
            "predict": spec.get("predict", {}),
        }
    }
    if key in trained:  # same training as an earlier entry of this run: reuse its checkpoint
        best, seconds, origin = trained[key]
        rec["train_shared_with"] = origin
    else:
        run.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        best = train(
            store,
            run / "train",
            method=spec["method"],
            overrides=overrides,
            device="cpu",
            overwrite=True,
        )
        seconds = time.perf_counter() - t0
        trained[key] = (best, seconds, name)
    ckpt = load_checkpoint(best)
    rec.update(
        {
            "train_s": round(seconds, 1),
            "steps": int(ckpt.get("step", 0)),
            "clusters": [int(k) for k in ckpt["n_clusters"]],
        }
    )
    map_kwargs = dict(spec.get("map", {}))
    if map_kwargs.get("head") and not scene.georeferenced:
        # a PNG is staged on a stand-in grid of 1 m pixels; geoseg map on the PNG itself finds
        # no CRS and so no pixel size, which is what the head must see here too
        map_kwargs["head_options"] = {"pixel_size": None, **map_kwargs.get("head_options", {})}
    if accepts(fit_mapping, "tile_size"):
        map_kwargs.setdefault("tile_size", bt.TILE)
    predict_kwargs = {k: v for k, v in spec.get("predict", {}).items() if k != "polygons"}
    poly = polygons_kwargs(spec, scene)
    if poly:
        predict_kwargs["polygons"] = poly
    results, map_s, predict_s = [], [], []
    reuse: dict[tuple[int, ...], dict[str, Any]] = {}  # building clusters → scored draw
    for seed, (tiles, labels) in draws.items():
        folder = run / f"seed{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        draw: dict[str, Any] = {"seed": seed, "tiles": len(tiles)}
        size = int(map_kwargs.get("tile_size") or ckpt.get("tile_size") or 256)
        draw["map_windows"] = max(bt.N_TILES, mapping_windows(tiles, scene.mask.shape, size))
        try:
            t0 = time.perf_counter()
            try:
                mapped = fit_mapping(
                    best,
                    labels=labels,
                    image=scene.image,
                    max_tiles=draw["map_windows"],
                    names=dict(NAMES),
                    seed=seed,
                    output=folder / "mapped.pt",
                    overwrite=True,
                    device="cpu",
                    **map_kwargs,
                )
            except NoClassFound as exc:
                mapped = None
                draw["note"] = f"no building cluster: {exc}"
            map_s.append(time.perf_counter() - t0)
            building = (mapped or {}).get("mapping", {}).get("classes", {}).get("building")
            for extra in ("accuracy", "estimated_iou", "iou"):
                if mapped and extra in mapped:
                    draw[f"map_{extra}"] = mapped[extra]
            if not building:
                draw.setdefault("note", "the mapping named no building cluster")
                draw.update(score_draw(None, None, scene, n_truth))
                results.append(draw)
                continue
            draw["building_clusters"] = [int(c) for c in building]
            key = tuple(draw["building_clusters"])
            same = None if "head" in spec.get("map", {}) else reuse.get(key)
            if same is not None:  # same clusters named: predict would write the same files
                draw.update(
                    {
                        k: v
                        for k, v in same.items()
                        if k not in ("seed", "tiles", "map_windows", "note", "error")
                        and not k.startswith("map_")
                    }
                )
                draw["predict_reused_from_seed"] = same["seed"]
                results.append(draw)
                continue
            t0 = time.perf_counter()
            written = predict(
                scene.image,
                folder / "mapped.pt",
                folder,
                device="cpu",
                # the mapping names the head and the clusters (a few-label head is its own head)
                overwrite=True,
                **predict_kwargs,
            )
            predict_s.append(time.perf_counter() - t0)
            draw.update(score_draw(written["building:vector"], written["building"], scene, n_truth))
            if "head" not in spec.get("map", {}):  # a fitted head differs per draw: no reuse
                reuse[tuple(draw["building_clusters"])] = dict(draw)
        except Exception as exc:  # a broken draw must not cost the other draws
            log.error("%s seed %d failed:\n%s", name, seed, traceback.format_exc())
            draw.update({k: None for k in METRICS})
            draw["error"] = f"{type(exc).__name__}: {exc}"
        results.append(draw)
    rec["draws"] = results
    rec["map_s"] = round(float(np.mean(map_s)), 1) if map_s else None
    rec["predict_s"] = round(float(np.mean(predict_s)), 1) if predict_s else None
    return rec


def run_rf(
    scene: bt.Scene, store_bands: list[int], stats: dict, draws, out: Path, n_truth: int
) -> dict[str, Any]:
    """The random-forest peer on each draw (pipelines/rf_peer.py), default's polygon clean-up."""
    import rasterio
    import rf_peer

    poly = polygons_kwargs(METHODS["default"], scene)
    rec: dict[str, Any] = {
        "budget": {
            "forest": rf_peer.FOREST,
            "scales": rf_peer.SCALES,
            "max_samples": rf_peer.MAX_SAMPLES,
            "polygons": poly,
        }
    }
    results, train_s, predict_s = [], [], []
    for seed, (tiles, labels_tif) in draws.items():
        draw: dict[str, Any] = {"seed": seed, "tiles": len(tiles)}
        try:
            with rasterio.open(labels_tif) as src:
                labels = src.read(1)
            got = rf_peer.run(
                scene.image,
                store_bands,
                stats,
                labels,
                tiles,
                bt.TILE,
                seed,
                out / "runs" / "rf" / f"seed{seed}",
                poly,
            )
            train_s.append(got["train_s"])
            predict_s.append(got["predict_s"])
            draw.update(
                score_draw(
                    got["paths"]["building:vector"], got["paths"]["building"], scene, n_truth
                )
            )
        except Exception as exc:
            log.error("rf seed %d failed:\n%s", seed, traceback.format_exc())
            draw.update({k: None for k in METRICS})
            draw["error"] = f"{type(exc).__name__}: {exc}"
        results.append(draw)
    rec["draws"] = results
    rec["train_s"] = round(float(np.mean(train_s)), 1) if train_s else None
    rec["predict_s"] = round(float(np.mean(predict_s)), 1) if predict_s else None
    return rec


# --- the scene -------------------------------------------------------------------------------


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (exit 2), like geoseg's CLI."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {message}; see --help\n")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = OneLineParser(prog="benchmark_buildings.py", description=__doc__.splitlines()[0])
    p.add_argument("image", metavar="IMAGE", type=Path, help="the scene (any GDAL raster)")
    p.add_argument(
        "truth",
        metavar="TRUTH",
        type=Path,
        help="building polygons (any vector format) or a building mask raster",
    )
    p.add_argument("--bands", default=None, help="band selection, as geoseg tile --bands")
    p.add_argument(
        "--truth-filter",
        default=None,
        metavar="COL=VAL",
        help="keep the TRUTH features with COL == VAL (a mask: value=V)",
    )
    p.add_argument(
        "--methods",
        default=",".join(ALL_METHODS),
        help=f"comma-separated subset of {','.join(ALL_METHODS)}",
    )
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="working folder")
    p.add_argument(
        "--json",
        type=Path,
        default=None,
        metavar="FILE",
        help="also write every method's object as one JSON list",
    )
    return p.parse_args(argv)


def check_args(args: argparse.Namespace) -> tuple[list[str], list[int], Any]:
    """Everything that can be refused before any output is written."""
    from geoseg_api import BadInput, resolve_bands

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in KNOWN_METHODS]
    if unknown or not methods:
        raise bt.BadArgument(
            f"unknown method {unknown[0] if unknown else '(none)'!r}; choose "
            f"from {','.join(ALL_METHODS)}",
            "--methods",
        )
    with bt._open(args.image, "IMAGE") as src:
        try:
            bands = resolve_bands(src, args.bands)
        except BadInput as exc:
            raise bt.BadArgument(str(exc), "--bands") from exc
        if src.width < bt.TILE or src.height < bt.TILE:
            raise bt.BadArgument(
                f"{args.image} is {src.height}×{src.width} px, smaller than "
                f"one {bt.TILE}×{bt.TILE} labelled tile",
                "IMAGE",
            )
    flt = bt.parse_filter(args.truth_filter)
    if args.json is not None and not args.json.parent.exists():
        raise bt.BadArgument(f"the folder of {args.json} does not exist", "--json")
    if args.out.exists() and not args.out.is_dir():
        raise bt.BadArgument(f"{args.out} exists and is not a folder", "--out")
    return methods, bands, flt


def stage_all(args, bands, flt) -> tuple[bt.Scene, dict[int, tuple[list, Path]]]:
    """Stage image and truth into DIR/inputs (via a temporary folder), draw the label tiles."""
    import shutil

    args.out.mkdir(parents=True, exist_ok=True)
    tmp = args.out / "inputs.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        scene = bt.stage(args.image, args.truth, tmp, bands=bands, flt=flt)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    final = args.out / "inputs"
    shutil.rmtree(final, ignore_errors=True)
    (tmp / "inputs").replace(final)
    shutil.rmtree(tmp, ignore_errors=True)
    if not scene.georeferenced:
        scene.image = final / scene.image.name
    scene.truth_path = final / scene.truth_path.name
    if not bt.candidate_tiles(scene.mask):
        raise bt.BadArgument(
            f"no full {bt.TILE}×{bt.TILE} tile of IMAGE holds a building of {args.truth}", "TRUTH"
        )
    draws = {}
    for seed in SEEDS:
        tiles = bt.draw_tiles(scene.mask, seed)
        path = bt.label_raster(scene.mask, tiles, scene.image, final / f"labels_seed{seed}.tif")
        draws[seed] = (tiles, path)
    return scene, draws


def tile_store(scene: bt.Scene, bands: list[int], out: Path):
    """The scene's tile store (labels never staged), rebuilt unless it has these bands."""
    from geoseg_api import BadInput, open_store, tile

    path = out / "store.zarr"
    try:
        store = open_store(path)
        source = Path(str(store.sources[0].get("path", ""))) if store.sources else Path()
        same = list(store.bands) == list(bands) and source.resolve() == scene.image.resolve()
        if same:
            return store
    except (BadInput, FileNotFoundError, KeyError, ValueError):
        pass
    return tile([scene.image], path, bands=bands, tile_size=STORE_TILE, overlap=0, overwrite=True)


def hold_folder(out: Path):
    """An exclusive lock on DIR for this run: two runs on one DIR (e.g. a ``default`` rerun
    beside the other methods) would re-stage the inputs and the store under each other, so the
    second waits. Released when the process exits."""
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    handle = open(out / ".benchmark.lock", "w")  # noqa: SIM115 (held for the process)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.info("another run holds %s; waiting for it", out)
        fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


def write_json(path: Path, obj: Any) -> None:
    """Atomic JSON write (temporary name in the same folder, then renamed)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=float) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    for noisy in ("rasterio", "fiona", "pyogrio", "distributed", "numba"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from geoseg_api import set_enabled

    set_enabled(False)  # progress bars would flood the log of a long unattended run
    try:
        methods, bands, flt = check_args(args)
        lock = hold_folder(args.out)  # noqa: F841 (held until the process exits)
        scene, draws = stage_all(args, bands, flt)
    except bt.BadArgument as exc:
        print(f"error: {exc.param}: {exc}", file=sys.stderr)
        return 2
    sha = commit()
    try:
        store = tile_store(scene, bands, args.out)
    except Exception as exc:
        param = getattr(exc, "param", None)
        if param:
            print(f"error: {param}: {exc}", file=sys.stderr)
            return 2
        raise
    stats = {k: np.asarray(v, np.float64) for k, v in store.stats.items()}
    n_truth = truth_count(scene)
    base = {
        "scene": scene.name,
        "image": str(args.image),
        "truth": str(args.truth),
        "truth_filter": args.truth_filter,
        "bands": bands,
        "pixel_size": scene.pixel_size,
        "units": "m" if scene.georeferenced else "px",
        "min_area": scene.min_area,
        "size": list(scene.mask.shape),
        "truth_polygons": scene.n_truth,
        "truth_polygons_scored": n_truth,
        "building_fraction": float((scene.mask == 1).mean()),
        "candidate_tiles": len(bt.candidate_tiles(scene.mask)),
        "draw_tiles": {str(s): [list(t) for t in d[0]] for s, d in draws.items()},
        "seeds": list(SEEDS),
        "commit": sha,
        "cpu_count": os.cpu_count(),
    }
    trained: dict[tuple, tuple[Path, float, str]] = {}
    records = []
    for name in methods:
        rec: dict[str, Any] = {
            "method": name,
            "spec": spec_of(name),
            **copy.deepcopy(base),
            "load_avg": round(os.getloadavg()[0], 2),
        }
        t0 = time.perf_counter()
        try:
            if name == "rf":
                got = run_rf(scene, list(store.bands), stats, draws, args.out, n_truth)
            else:
                got = run_geoseg(
                    name,
                    METHODS[name],
                    scene,
                    Path(args.out / "store.zarr"),
                    draws,
                    args.out,
                    n_truth,
                    trained,
                )
            rec.update(got)
            rec["mean"] = summary(rec["draws"])
            errors = [d["error"] for d in rec["draws"] if d.get("error")]
            rec["error"] = errors[0] if len(errors) == len(rec["draws"]) else None
        except Exception as exc:  # one broken method must not cost the others
            log.error("%s failed:\n%s", name, traceback.format_exc())
            rec.update(
                {
                    "mean": {k: None for k in METRICS},
                    "draws": [],
                    "error": f"{type(exc).__name__}: {exc}",
                }
            )
        rec["wall_s"] = round(time.perf_counter() - t0, 1)
        write_json(args.out / f"{name}.json", rec)
        print(json.dumps(rec, default=float), flush=True)
        records.append(rec)
    if args.json is not None:
        write_json(args.json, records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
