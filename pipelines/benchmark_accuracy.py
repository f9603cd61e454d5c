"""Accuracy benchmark: every method × every real labelled scene, one protocol, a stated CPU budget.

Each row runs the user's chain through the library, exactly as the CLI would:
``tile`` → ``train`` (fixed step budget, wall and CPU seconds measured) → ``fit_mapping``
(majority, from at most ``MAP_TILES`` labelled tiles of the scene) → ``predict`` (COGs and
building polygons) → metrics:

- footprint scenes (SpaceNet Vegas, Massachusetts, SpaceNet Atlanta): building IoU (pixels of
  the mapped building raster against the rasterised footprints, over valid pixels) and the
  SpaceNet F1 of the predicted polygons (IoU > 0.5, min area 20 px² converted to m²);
- dense scenes (the ISPRS Potsdam and Vaihingen crops): Hungarian and many-to-one accuracy of
  the clusters over every labelled pixel, 6 classes and the Potsdam-3 merge, plus the accuracy
  of the few-tile mapping applied to the whole crop.

Rows are cached as JSON (``<out>/<scene>__<method>.json``) so a partial rerun only does what
is missing; the markdown section is rebuilt from every cached row each time::

    python pipelines/benchmark_accuracy.py --scenes vegas,massachusetts --methods kmeans,iic
    python pipelines/benchmark_accuracy.py --report-only --results docs/results.md

Only the text between ``<!-- accuracy-benchmark:start -->`` and ``<!-- accuracy-benchmark:end
-->`` of the results file is replaced; the rest (e.g. "## Training results") is kept.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy_report import _budget, markdown, write_section  # noqa: E402

log = logging.getLogger("benchmark_accuracy")

ROOT = Path(__file__).resolve().parents[1]
#: the shared sample data (../shared/data of the checkout); GEOSEG_DATA points elsewhere
DATA = Path(os.environ.get("GEOSEG_DATA", ROOT.parent / "shared" / "data"))

TILE_SIZE = 128  # store tiles; training crops are CROP px inside them
CROP = 64
MAP_TILES = 16  # label budget of the mapping, in CROP×CROP tiles
SEED = 0
SETTINGS = {"tile_size": TILE_SIZE, "crop": CROP, "map_tiles": MAP_TILES}


@dataclasses.dataclass(frozen=True)
class Scene:
    """One labelled scene and how its labels are read.

    Attributes:
        image: the raster (a PNG is converted to a GeoTIFF first, see :func:`prepare`).
        labels: footprint polygons (``kind="footprints"``) or a label raster (``"dense"``).
        bands: 1-based bands to use (None: all).
        column, names: class-value column of vector labels and value → name.
        truth_filter: ``COLUMN=VALUE`` keeping only the building footprints for scoring.
        drop_nodata: the declared nodata is real data (Massachusetts: 255 on uint8 RGB).
        res: pixel size written into the GeoTIFF made from a PNG (not georeferenced).
        descriptions: band names written into that GeoTIFF, so colour jitter (optical bands
            only, never IR) treats the PNG bands like named bands of a GeoTIFF.
    """

    image: Path
    labels: Path
    kind: str
    bands: tuple[int, ...] | None = None
    column: str | None = None
    names: dict[int, str] | None = None
    truth_filter: str | None = None
    drop_nodata: bool = False
    res: float | None = None
    descriptions: tuple[str, ...] | None = None


SCENES = {
    "vegas": Scene(
        DATA / "spacenet-vegas-img2144/MUL-PanSharpen_AOI_2_Vegas_img2144_uint8.tif",
        DATA / "spacenet-vegas-img2144/labels.geojson",
        "footprints",
        bands=(5, 3, 2, 7),
        column="label",
        names={1: "building", 2: "road", 3: "tree"},
        truth_filter="label=1",
    ),
    "massachusetts": Scene(
        DATA / "massachusetts-22978945/22978945_15.tif",
        DATA / "massachusetts-22978945/22978945_15.gpkg",
        "footprints",
        drop_nodata=True,
    ),
    "atlanta": Scene(
        DATA / "spacenet-atlanta-pan/sample_geotiff.tif",
        DATA / "spacenet-atlanta-pan/geotiff_labels.geojson",
        "footprints",
    ),
    "potsdam": Scene(
        DATA / "isprs-crops/potsdam_2_10_rgb_512.png",
        DATA / "isprs-crops/potsdam_2_10_label_512.png",
        "dense",
        res=0.05,
        descriptions=("red", "green", "blue"),
    ),
    "vaihingen": Scene(
        DATA / "isprs-crops/vaihingen_area1_irrg_512.png",
        DATA / "isprs-crops/vaihingen_area1_label_512.png",
        "dense",
        res=0.09,
        descriptions=("nir", "red", "green"),
    ),
}

#: The budget. Shared by all methods: 6 main clusters, CROP px crops, seed; IIC and AC share the
#: objective settings and step count so they differ only in the network.
COMMON = ("n_clusters=6", f"data.crop_size={CROP}", f"seed={SEED}", "data.min_valid=0.5")
NET = (
    "n_over_clusters=24",
    "data.batch_size=8",
    "loss.displacement=2",
    "optim.lr=0.001",
    "schedule.eval_batches=2",
    "schedule.log_every=10",
)
METHODS: dict[str, tuple[str, ...]] = {
    "kmeans": ("baseline.samples=100000",),
    "kanezaki": ("baseline.width=32", "data.batch_size=8", "schedule.log_every=10"),
    "iic": (*NET, "model.trunk=vgg", "model.width=0.125"),
    "ac": (*NET, "model.channels=16", "model.dilations=[1, 2, 4, 1]"),
}


def schedule(method: str, steps: int) -> tuple[str, ...]:
    """Step budget overrides; evaluation/checkpoint once, at the end (best.pt = last step)."""
    if method == "kmeans":
        return ()
    every = f"{max(1, steps)}"
    keys = ("steps", "steps_per_epoch", "eval_every", "checkpoint_every")
    return tuple(f"schedule.{k}={every}" for k in keys)


def prepare(name: str, scene: Scene, out: Path) -> tuple[Path, Path]:
    """The image and labels the chain reads: a GeoTIFF copy where the source needs one.

    PNGs get an arbitrary metric grid (EPSG:32632, origin (500000, 5000000), ``scene.res`` m
    pixels); the label PNG the same grid. Massachusetts' declared nodata=255 is dropped in a copy
    because ``predict`` and ``fit_mapping`` have no nodata override (white roofs are data).
    """
    import rasterio
    from rasterio.transform import from_origin

    from geoseg.io.rasters import open_raster

    folder = out / "inputs"
    folder.mkdir(parents=True, exist_ok=True)
    if scene.res is None and not scene.drop_nodata:
        return scene.image, scene.labels
    pairs = [(scene.image, folder / f"{name}.tif")]
    if scene.res is not None:
        pairs.append((scene.labels, folder / f"{name}_labels.tif"))
    for src_path, dst_path in pairs:
        if dst_path.exists():
            continue
        with open_raster(src_path, param="IMAGE") as src:
            data, profile = src.read(), src.profile
        profile.update(driver="GTiff", nodata=None)
        if scene.res is not None:
            transform = from_origin(500000.0, 5000000.0, scene.res, scene.res)
            profile.update(crs="EPSG:32632", transform=transform)
        tmp = dst_path.with_suffix(".tmp.tif")
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(data)
            if src_path == scene.image and scene.descriptions:
                for band, text in enumerate(scene.descriptions, start=1):
                    dst.set_band_description(band, text)
        tmp.replace(dst_path)
    labels = pairs[1][1] if scene.res is not None else scene.labels
    return pairs[0][1], labels


def store_for(name: str, scene: Scene, image: Path, out: Path):
    """The scene's tile store, built once and shared by every method (labels not staged)."""
    from geoseg.errors import BadInput
    from geoseg.tiles.store import open_store
    from geoseg.tiles.writer import tile

    path = out / "stores" / f"{name}.zarr"
    try:
        return open_store(path)
    except BadInput:
        path.parent.mkdir(parents=True, exist_ok=True)
        return tile(
            [image],
            path,
            bands=list(scene.bands) if scene.bands else None,
            tile_size=TILE_SIZE,
            overlap=0,
            overwrite=True,
        )


def min_area_m2(image: Path) -> float:
    """SpaceNet's 20 px² in m² at the image's pixel size (measured in UTM when geographic)."""
    import geopandas as gpd
    import rasterio
    from rasterio.transform import xy
    from shapely.geometry import box

    with rasterio.open(image) as src:
        t, crs = src.transform, src.crs
        x, y = xy(t, src.height // 2, src.width // 2, offset="ul")
    pixel = gpd.GeoSeries([box(x, y + t.e, x + t.a, y)], crs=crs)
    if crs.is_geographic:
        pixel = pixel.to_crs(pixel.estimate_utm_crs())
    return 20.0 * float(pixel.area.iloc[0])


def building_iou(clusters_tif: Path, building: list[int], scene: Scene) -> dict[str, Any]:
    """Pixel IoU of the mapped building clusters against the rasterised building footprints.

    Also the IoU of the single best cluster (chosen with every label: an oracle), which tells
    "no cluster captures buildings" apart from "the few-tile mapping missed the cluster".
    """
    import geopandas as gpd
    import rasterio
    from rasterio.features import rasterize

    with rasterio.open(clusters_tif) as src:
        band, shape, transform, crs = src.read(1), src.shape, src.transform, src.crs
        valid = band != src.nodata
    truth = gpd.read_file(scene.labels)
    if scene.truth_filter:
        key, value = scene.truth_filter.split("=")
        truth = truth[truth[key].astype(str) == value]
    true = (
        rasterize(
            ((g, 1) for g in truth.to_crs(crs).geometry), out_shape=shape, transform=transform
        ).astype(bool)
        & valid
    )

    def iou(pred: np.ndarray) -> float:
        union = int((pred | true).sum())
        return float((pred & true).sum() / union) if union else float("nan")

    pred = np.isin(band, building) & valid
    ids = np.unique(band[valid])
    return {
        "building_iou": iou(pred),
        "best_cluster_iou": max((iou((band == c) & valid) for c in ids), default=float("nan")),
        "building_pixels_pred": int(pred.sum()),
        "building_pixels_true": int(true.sum()),
    }


def footprint_metrics(name, scene, image, labels, best, run) -> dict[str, Any]:
    """Map clusters from a few labelled tiles, predict, then building IoU and SpaceNet F1."""
    from geoseg.errors import BadInput
    from geoseg.evaluate import fit_mapping, score
    from geoseg.predict.raster import predict

    try:
        mapped = fit_mapping(
            best,
            labels=labels,
            image=image,
            column=scene.column,
            names=scene.names,
            max_tiles=MAP_TILES,
            method="majority",
            output=run / "mapped.pt",
            overwrite=True,
            seed=SEED,
            device="cpu",
            head=0,
        )
        model, building = run / "mapped.pt", mapped["mapping"]["classes"].get("building", [])
        tiles = mapped["tiles"]
    except BadInput as exc:
        # fit_mapping refuses a mapping where every cluster's majority is the background;
        # under this protocol that is a real outcome (no building cluster), not a failure
        if "no cluster got a class" not in str(exc):
            raise
        log.warning("%s: every cluster maps to background (%s)", run.name, exc)
        model, building, tiles = best, [], MAP_TILES
    classes = {"building": building} if building else {}
    written = predict(image, model, run / "predict", device="cpu", classes=classes, overwrite=True)
    row = {
        "map_tiles": tiles,
        "building_clusters": building,
        "clusters_used": clusters_used(written["clusters"]),
    }
    row.update(building_iou(written["clusters"], building, scene))
    area = min_area_m2(image)
    if building:
        total = score(
            written["building:vector"], labels, min_area=area, truth_filter=scene.truth_filter
        ).total
    else:  # no cluster is mostly building: every footprint is missed
        truth = score(labels, labels, min_area=area, truth_filter=scene.truth_filter).total
        total = {"tp": 0, "fp": 0, "fn": truth["tp"], "precision": 0.0, "recall": 0.0, "f1": 0.0}
    row.update({k: total[k] for k in ("tp", "fp", "fn", "precision", "recall", "f1")})
    row["min_area_m2"] = area
    return row


def dense_metrics(name, scene, image, labels, best, run) -> dict[str, Any]:
    """Hungarian / many-to-one accuracy (6 and Potsdam-3 classes) and the few-tile mapping."""
    from geoseg.evaluate import evaluate, fit_mapping
    from geoseg.evaluate.pixels import accuracy
    from geoseg.io.labels import ISPRS_NAMES
    from geoseg.predict.raster import predict

    mapped = fit_mapping(
        best,
        labels=labels,
        image=image,
        names=dict(ISPRS_NAMES),
        max_tiles=MAP_TILES,
        method="majority",
        output=run / "mapped.pt",
        overwrite=True,
        seed=SEED,
        device="cpu",
        head=0,
    )
    written = predict(image, best, run / "predict", device="cpu", overwrite=True)
    six = evaluate(written["clusters"], labels, method="hungarian", names=dict(ISPRS_NAMES))
    three = evaluate(written["clusters"], labels, merge="potsdam3", method="hungarian")
    conf = np.asarray(six["confusion"])
    assignment = np.full(conf.shape[0], -1)
    for cls, clusters in mapped["mapping"]["classes"].items():
        assignment[clusters] = mapped["mapping"]["class_ids"][cls]
    return {
        "map_tiles": mapped["tiles"],
        "map_pixels": mapped["pixels"],
        "hungarian6": six["hungarian_accuracy"],
        "many_to_one6": six["many_to_one_accuracy"],
        "hungarian3": three["hungarian_accuracy"],
        "many_to_one3": three["many_to_one_accuracy"],
        "mapped_accuracy6": accuracy(conf, assignment),
        "labelled_pixels": six["pixels"],
        "clusters_used": clusters_used(written["clusters"]),
    }


def run_row(
    name: str, scene: Scene, method: str, out: Path, *, steps: dict[str, int]
) -> dict[str, Any]:
    """Train one method on one scene and measure it; returns the JSON-able result row.

    Args:
        name, scene: the scene (a key of :data:`SCENES` and its description).
        method: a key of :data:`METHODS`.
        out: working folder (inputs/, stores/, runs/).
        steps: training steps per method (k-means has none: it fits once on sampled pixels).
    """
    import torch

    from geoseg.checkpoint import load_checkpoint
    from geoseg.train.loop import train

    image, labels = prepare(name, scene, out)
    store = store_for(name, scene, image, out)
    run = out / "runs" / f"{name}__{method}"
    run.parent.mkdir(parents=True, exist_ok=True)
    overrides = (*COMMON, *METHODS[method], *schedule(method, steps.get(method, 0)))
    wall, cpu = time.perf_counter(), time.process_time()
    best = train(store, run, method=method, overrides=overrides, device="cpu", overwrite=True)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    ckpt = load_checkpoint(best)
    row: dict[str, Any] = {
        "scene": name,
        "method": method,
        "kind": scene.kind,
        "steps": int(ckpt["step"]),
        "train_wall_s": round(wall, 1),
        "train_cpu_s": round(cpu, 1),
        "torch_threads": torch.get_num_threads(),
        "clusters": int(ckpt["n_clusters"][0]),
        "seed": SEED,
        "overrides": list(overrides),
        "store_tiles": store.n_tiles,
    }
    metrics = footprint_metrics if scene.kind == "footprints" else dense_metrics
    t0 = time.perf_counter()
    row.update(metrics(name, scene, image, labels, best, run))
    row["eval_wall_s"] = round(time.perf_counter() - t0, 1)
    return row


def clusters_used(clusters_tif: Path) -> int:
    """Distinct cluster ids over valid pixels of predict's clusters COG."""
    import rasterio

    with rasterio.open(clusters_tif) as src:
        band = src.read(1)
        return int(np.unique(band[band != src.nodata]).size)


# --- cache and report -----------------------------------------------------------------------


def cached_rows(out: Path) -> list[dict[str, Any]]:
    """Every cached row, in SCENES × METHODS order (unknown leftovers are ignored)."""
    rows = {}
    for path in out.glob("*__*.json"):
        row = json.loads(path.read_text())
        rows[(row["scene"], row["method"])] = row
    return [rows[k] for k in ((s, m) for s in SCENES for m in METHODS) if k in rows]


def environment() -> dict[str, str]:
    """Where the numbers come from: commit, cores, load at start (the CPUs are shared)."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return {
        "commit": commit or "?",
        "machine": f"{os.cpu_count()} CPU cores, load average {load} at start of the row",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", default=",".join(SCENES))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "accuracy")
    parser.add_argument("--steps", type=int, default=300, help="IIC and AC training steps")
    parser.add_argument("--kanezaki-steps", type=int, default=100)
    parser.add_argument("--redo", action="store_true", help="recompute cached rows")
    parser.add_argument("--report-only", action="store_true", help="only rebuild the section")
    parser.add_argument("--results", type=Path, default=None, help="docs/results.md to update")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import torch

    torch.set_num_threads(args.threads)
    scenes, methods = args.scenes.split(","), args.methods.split(",")
    unknown = [s for s in scenes if s not in SCENES] + [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(
            f"unknown scene/method {unknown[0]!r}; choose from "
            f"{', '.join(SCENES)} / {', '.join(METHODS)}"
        )
    steps = {"iic": args.steps, "ac": args.steps, "kanezaki": args.kanezaki_steps}
    args.out.mkdir(parents=True, exist_ok=True)
    failed: list[str] = []
    for name in [] if args.report_only else scenes:
        for method in methods:
            cache = args.out / f"{name}__{method}.json"
            if cache.exists() and not args.redo:
                log.info("%s × %s: cached", name, method)
                continue
            env = environment()
            try:
                row = run_row(name, SCENES[name], method, args.out, steps=steps)
            except Exception:  # one broken row must not cost the others their CPU time
                log.exception("%s × %s failed; rerun it with --scenes/--methods", name, method)
                failed.append(f"{name}×{method}")
                continue
            row["env"] = env
            cache.write_text(json.dumps(row, indent=1))
            log.info("%s × %s: %s", name, method, json.dumps(row))
    rows = cached_rows(args.out)
    net, kan = _budget(rows, "iic") or _budget(rows, "ac"), _budget(rows, "kanezaki")
    command = (
        f"OMP_NUM_THREADS=1 python pipelines/benchmark_accuracy.py --steps {net} "
        f"--kanezaki-steps {kan} --results docs/results.md"
    )
    text = markdown(rows, command, SETTINGS)
    print(text)
    if args.results is not None:
        write_section(args.results, text)
    if failed:
        log.error("failed rows: %s", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
