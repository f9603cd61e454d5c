"""Training results benchmark: IIC, AC, k-means and Kanezaki on two real scenes, on CPU.

For each scene the script tiles the image (with its labels) into a store, trains every method
for a fixed CPU budget (a fixed number of steps, stated in the table), runs the best checkpoint
over every tile, and scores the main head's clusters against the labels:

- clusters used: distinct argmax values over valid pixels;
- Hungarian (one-to-one) and many-to-one accuracy over *labelled pixels only*;
- building IoU: clusters mapped by majority to {building, not building} over all valid pixels.
  This treats unlabelled pixels as "not building", which is fair only because the building
  footprints of both scenes are (close to) complete; roads and trees on Vegas are not, so they
  only enter the accuracies, never as negatives.

Labels never enter training (the store's labels are read for monitoring only).

    python pipelines/benchmark_training.py --out /tmp/bench --results docs/results.md

writes a markdown table into the "## Training results" section of ``docs/results.md``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from geoseg.checkpoint import load_checkpoint, model_from_checkpoint
from geoseg.evaluate.pixels import confusion_matrix, pixel_metrics
from geoseg.io.bands import normalize
from geoseg.tiles.store import open_store
from geoseg.tiles.writer import tile
from geoseg.train.loop import train

ROOT = Path(__file__).resolve().parents[1]
SCENES = {
    "vegas": {
        "image": ROOT / "geoseg/data/vegas_img2144/MUL-PanSharpen_AOI_2_Vegas_img2144_uint8.tif",
        "labels": ROOT / "geoseg/data/vegas_img2144/labels.geojson",
        "bands": [5, 3, 2, 7],  # red, green, blue, NIR1 of the 8-band WorldView-3 MUL file
        "nodata": None,
        "names": {1: "building", 2: "road", 3: "tree"},
        "background": None,  # roads/trees incomplete: unlabelled pixels stay out of accuracies
    },
    "massachusetts": {
        "image": Path("/work/shared/data/massachusetts-22978945/22978945_15.tif"),
        "labels": Path("/work/shared/data/massachusetts-22978945/22978945_15.gpkg"),
        "bands": None,
        "nodata": "none",  # nodata=255 is declared on uint8 imagery, but white roofs are data
        "names": {1: "building", 2: "other"},
        "background": 2,  # OSM buildings are near complete: unlabelled = not building
    },
}

#: shared by IIC and AC so they differ only in the method
NET = (
    "n_clusters=6",
    "n_over_clusters=24",
    "data.crop_size=64",
    "data.batch_size=4",
    "loss.displacement=2",
    "optim.lr=0.001",
    "schedule.steps_per_epoch=100",
    "schedule.eval_every=50",
    "schedule.checkpoint_every=50",
    "schedule.eval_batches=2",
)
METHODS = {
    "kmeans": ("n_clusters=6", "baseline.samples=100000"),
    "kanezaki": ("n_clusters=6", "baseline.width=32", "data.crop_size=128", "data.batch_size=2"),
    "iic": (*NET, "model.width=0.125"),
    "ac": (*NET, "model.channels=16", "model.dilations=[1, 2, 4, 1]"),
}


def predict_store(ckpt_path: Path, store) -> np.ndarray:
    """Main-head clusters (N, T, T) of every tile of ``store``, as predict would compute them."""
    ckpt = load_checkpoint(ckpt_path)
    model = model_from_checkpoint(ckpt)
    m = model.size_multiple
    out = []
    with torch.no_grad():
        for i in range(store.n_tiles):
            d = store.read(i)
            x = torch.from_numpy(normalize(d["image"].astype(np.float32), ckpt["norm"]))[None]
            x = x * torch.from_numpy(d["valid"])
            h, w = x.shape[-2:]
            x = torch.nn.functional.pad(x, (0, (-w) % m, 0, (-h) % m))
            out.append(model(x)[ckpt["head"]][0, :, :h, :w].argmax(0).numpy())
    return np.stack(out)


def best_set_iou(building: np.ndarray, other: np.ndarray) -> float:
    """Building IoU of the best set of clusters called "building" (an oracle, like Hungarian).

    A majority vote never names a cluster "building" when buildings are a minority everywhere
    (Massachusetts: 5 % of pixels); this shows what the clusters *could* give. Clusters are added
    in order of building purity, and the best prefix is kept (optimal for IoU).
    """
    order = np.argsort(-(building / np.maximum(building + other, 1)))
    total = building.sum()
    tp = np.cumsum(building[order])
    fp = np.cumsum(other[order])
    iou = tp / np.maximum(total + fp, 1)
    return float(iou.max()) if iou.size else float("nan")


def score(pred: np.ndarray, store, scene: dict, n_clusters: int) -> dict:
    """Accuracies over labelled pixels and building IoU over all valid pixels."""
    valid = np.asarray(store.valid[:])
    labels = np.asarray(store.label[:]).copy()
    if scene["background"] is not None:
        labels[(labels == 0) & valid] = scene["background"]
    n_classes = max(scene["names"]) + 1
    conf = confusion_matrix(pred, labels, n_clusters=n_clusters, n_classes=n_classes, valid=valid)
    metrics = pixel_metrics(conf, method="hungarian", class_names=scene["names"])
    building = (np.asarray(store.label[:]) == 1).astype(np.uint8) + 1  # 1 other, 2 building
    conf_b = confusion_matrix(
        pred, building, n_clusters=n_clusters, n_classes=3, valid=valid, ignore_index=0
    )
    binary = pixel_metrics(conf_b, method="majority", class_names={1: "other", 2: "building"})
    return {
        "building_iou_best": best_set_iou(conf_b[:, 2], conf_b[:, 1]),
        "clusters_used": int(np.unique(pred[valid]).size),
        "hungarian_acc": metrics["hungarian_accuracy"],
        "many_to_one_acc": metrics["many_to_one_accuracy"],
        "building_iou": binary["building_iou"],
        "labelled_pixels": metrics["pixels"],
    }


def run_scene(
    name: str, scene: dict, out: Path, steps: int, previous: dict, methods: list[str]
) -> list[dict]:
    """Train every method on one scene and score it (``previous``: rows to rescore, no training)."""
    store_path = out / f"{name}.zarr"
    if not store_path.exists():
        tile(
            [scene["image"]],
            store_path,
            bands=scene["bands"],
            tile_size=128,
            overlap=0,
            labels=scene["labels"],
            nodata=scene["nodata"],
        )
    store = open_store(store_path)
    rows = []
    for method in methods:
        overrides = METHODS[method]
        network = method in ("iic", "ac")
        n_steps = steps if network else max(50, steps // 4)
        run = out / f"{name}_{method}"
        old = previous.get((name, method))
        if old is not None:
            best, seconds = run / "best.pt", old["seconds"]
            n_steps = yaml.safe_load((run / "config.yaml").read_text())["schedule"]["steps"]
        else:
            start = time.perf_counter()
            best = train(
                store,
                run,
                method=method,
                overwrite=True,
                device="cpu",
                overrides=(*overrides, f"schedule.steps={n_steps}"),
            )
            seconds = time.perf_counter() - start
        ckpt = load_checkpoint(best)
        pred = predict_store(best, store)
        row = {
            "scene": name,
            "method": method,
            "steps": n_steps if network else ckpt["step"],
            "best_step": ckpt["step"],
            "seconds": seconds,
        }
        row.update(score(pred, store, scene, ckpt["n_clusters"][ckpt["head"]]))
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def markdown(rows: list[dict], command: str) -> str:
    head = (
        "| scene | method | steps (best.pt at) | train s | clusters used | Hungarian acc "
        "| many-to-one acc | building IoU (majority) | building IoU (best cluster set) |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    body = "".join(
        f"| {r['scene']} | {r['method']} | {r['steps']} ({r['best_step']}) | {r['seconds']:.0f} | "
        f"{r['clusters_used']} | {r['hungarian_acc']:.3f} | {r['many_to_one_acc']:.3f} | "
        f"{r['building_iou']:.3f} | {r['building_iou_best']:.3f} |\n"
        for r in rows
    )
    return f"Command: `{command}`\n\n{head}{body}"


def write_section(path: Path, text: str) -> None:
    """Replace (or append) the "## Training results" section of ``path``."""
    old = path.read_text() if path.exists() else "# Results\n"
    section = f"## Training results\n\n{text.rstrip()}\n"
    pattern = re.compile(r"## Training results\n.*?(?=\n## |\Z)", re.S)
    new = (
        pattern.sub(lambda _: section, old)
        if pattern.search(old)
        else old.rstrip() + "\n\n" + section
    )
    path.write_text(new)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench_training"))
    parser.add_argument("--steps", type=int, default=400, help="IIC/AC steps (baselines: 1/4)")
    parser.add_argument("--scenes", default=",".join(SCENES))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--results", type=Path, default=None, help="docs/results.md to update")
    parser.add_argument(
        "--score-only", action="store_true", help="rescore the runs of OUT/results.json"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    previous = {}
    if args.score_only:
        old = json.loads((args.out / "results.json").read_text())
        previous = {(r["scene"], r["method"]): r for r in old}
    rows = []
    for name in args.scenes.split(","):
        rows += run_scene(
            name, SCENES[name], args.out, args.steps, previous, args.methods.split(",")
        )
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))
    table = markdown(rows, "python " + " ".join(["pipelines/benchmark_training.py", *sys.argv[1:]]))
    print(table)
    if args.results:
        write_section(args.results, table)


if __name__ == "__main__":
    main()
