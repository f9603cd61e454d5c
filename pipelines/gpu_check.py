"""The whole GPU check in one command: throughput of the GPU training recipe, and its accuracy.

    python pipelines/gpu_check.py [--budget-min 5] [--out DIR] [--json FILE]
        [--device auto|cuda|cpu] [--scenes vegas,massachusetts,atlanta]
    python pipelines/gpu_check.py --prepare        # here, before a GPU session (needs PyPI)

What it does, in order (sized for ≤ 8 minutes of wall time with ``--budget-min 5`` on one
H100/H200; not yet run on a GPU):

1. **Imports**: where rasterio, zarr, geopandas... are missing (the GPU machine has torch but
   not the geospatial stack), installs the wheels carried in ``.whl/`` with
   ``pip install --no-index --no-deps --target`` and puts them on ``sys.path``. geoseg itself
   is imported from this checkout (no install needed).
2. **Scenes**: the labelled scenes of ``--data``, else ``shared/data``, ``../shared/data`` or
   ``.whl/data`` (what ``--prepare`` copies there), staged
   exactly as the building benchmark stages them (``pipelines/benchmark_buildings.py``:
   truth clipped to the image, three draws of 16 labelled 64×64 tiles, 128 px tile store).
3. **Train** the GPU recipe (:data:`GPU_RECIPE`: IIC, the IIC paper's full-width VGG trunk,
   128 px crops, batch 32, bf16 autocast + channels_last on CUDA, crops cut by data-loader
   workers) on each scene without labels, for ``--budget-min`` minutes in all (split evenly
   over the scenes; evaluation and checkpoints not counted). Reports steps/s, crops/s, the
   data-stall fraction (time waiting for a batch / step time) and peak GPU memory
   (``torch.cuda.max_memory_allocated``; on CPU the process's peak RSS).
4. **Score** with the benchmark's own leave-scene-out protocol (``run_geoseg``: name the
   clusters from each draw's 16 labelled tiles, predict the whole scene, SpaceNet F1 and pixel
   IoU), and write ``DIR/<scene>.pt`` (the checkpoint) and the JSON report
   (``DIR/gpu_check.json``, and ``--json FILE``).

``--prepare`` (run here, where PyPI is reachable) stages what the GPU machine lacks, in
``.whl/`` (ignored by git): the geospatial wheels for CPython 3.12 / manylinux x86-64 at the
versions installed here, and the scenes' files (``.whl/data``). The device tool carries at
most 64 MiB per call (working tree included) and the wheels alone are ~90 MiB (rasterio and
pyogrio each bundle GDAL), so they are split in two groups, installed by two calls on the same
warm machine (the install lands in ``/tmp/geoseg-site``, which outlives a call):

    run 1, carry [".whl/geo1"]:              python3 pipelines/gpu_check.py --install-only
    run 2, carry [".whl/geo2", ".whl/data"]: python3 pipelines/gpu_check.py --budget-min 5 \
        --data .whl/data --out $OUT/gc --json $OUT/gpu_check.json

(run 2 must follow within the machine's warm window, ~30 s; if the machine went back in
between, run 2 exits 2 naming the missing modules: repeat both.)

Bad input exits 2 with one line naming the argument; nothing is written before the checks.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PIPELINES = ROOT / "pipelines"
WHEELS = ROOT / ".whl"
SITE = Path(os.environ.get("GEOSEG_SITE", "/tmp/geoseg-site"))

log = logging.getLogger("gpu_check")

#: modules geoseg and the benchmark import that a bare torch image may lack
NEEDED = (
    "rasterio",
    "zarr",
    "numcodecs",
    "geopandas",
    "pyogrio",
    "shapely",
    "pyproj",
    "dask",
    "affine",
    "skimage",
    "sklearn",
    "scipy",
    "yaml",
    "click",
    "tqdm",
    "PIL",
)
#: the wheels ``--prepare`` stages, in two carry groups of < 50 MiB (distribution names;
#: versions are the ones installed here)
WHEEL_GROUPS = {
    "geo1": (
        "rasterio",
        "affine",
        "click-plugins",
        "cligj",
        "zarr",
        "numcodecs",
        "donfig",
        "google-crc32c",
        "dask",
        "partd",
        "locket",
        "importlib-metadata",
    ),
    "geo2": ("shapely", "pyogrio", "geopandas", "pyproj"),
}
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)

#: scenes of benchmark_buildings_all.SCENES trained and scored by default: three sensors
#: (WorldView-3 RGB+NIR, 1 m aerial RGB, panchromatic uint16), georeferenced, vector truth
DEFAULT_SCENES = ("vegas", "massachusetts", "atlanta")

#: the GPU recipe, on top of the benchmark's COMMON overrides (6 clusters, seed 0): the IIC
#: paper's segmentation setup at full width (VGG 64…512 channels), whole 128 px store tiles as
#: crops, batch 32, 24 over-clusters, displacement window T=5, Adam 1e-4
GPU_RECIPE = (
    "n_over_clusters=24",
    "model.trunk=vgg",
    "model.width=1.0",
    "model.n_sub_heads=1",
    "data.crop_size=128",
    "data.batch_size=32",
    "loss.displacement=5",
    "optim.lr=0.0001",
    "schedule.steps=1000000",  # the time budget stops the run
    "schedule.steps_per_epoch=2000",
    "schedule.eval_every=1000",
    "schedule.checkpoint_every=1000",
    "schedule.eval_batches=4",
    "schedule.log_every=50",
)


class BadArgument(Exception):
    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


# --- 1. imports ---------------------------------------------------------------------------------


def missing_modules() -> list[str]:
    return [m for m in NEEDED if importlib.util.find_spec(m) is None]


def ensure_imports(strict: bool = True) -> dict[str, Any]:
    """Install the carried wheels where the geospatial stack is missing; geoseg from ROOT.
    ``strict=False`` (``--install-only``, one wheel group per call) allows modules to stay
    missing."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(PIPELINES))
    missing = missing_modules()
    if not missing:
        return {"installed": [], "seconds": 0.0}
    t0 = time.perf_counter()
    if SITE.is_dir():
        sys.path.insert(0, str(SITE))
        importlib.invalidate_caches()
        missing = missing_modules()
    if missing:
        wheels = sorted([*WHEELS.glob("*.whl"), *WHEELS.glob("*/*.whl")])
        if not wheels:
            raise BadArgument(
                f"modules {', '.join(missing)} are missing and {WHEELS} holds no wheels; run "
                "`python pipelines/gpu_check.py --prepare` where PyPI is reachable, and carry .whl",
                "imports",
            )
        SITE.mkdir(parents=True, exist_ok=True)
        # --upgrade: a second group installed into the same target keeps the first
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-index",
            "--no-deps",
            "--no-compile",
            "--no-cache-dir",
            "--upgrade",
            "--target",
            str(SITE),
            *map(str, wheels),
        ]
        subprocess.run(cmd, check=True)
        sys.path.insert(0, str(SITE))
        importlib.invalidate_caches()
    still = missing_modules()
    if still and strict:
        raise BadArgument(
            f"still missing after installing the wheels: {', '.join(still)}", "imports"
        )
    return {
        "installed": sorted(set(missing) - set(still)),
        "missing": still,
        "seconds": round(time.perf_counter() - t0, 1),
    }


# --- --prepare (here) -----------------------------------------------------------------------


def prepare(scenes: list[str], data: Path) -> int:
    """Stage the wheels (``.whl/geo1``, ``.whl/geo2``) and the scenes (``.whl/data``)."""
    from importlib.metadata import version

    import benchmark_buildings_all as bba

    platforms = [a for p in PLATFORMS for a in ("--platform", p)]
    for group, dists in WHEEL_GROUPS.items():
        folder = WHEELS / group
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        pins = [f"{d}=={version(d)}" for d in dists]
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            "3.12",
            "--implementation",
            "cp",
            *platforms,
            "-d",
            str(folder),
            *pins,
        ]
        print(f"{group}: {' '.join(pins)}", file=sys.stderr)
        subprocess.run(cmd, check=True)
        size = sum(w.stat().st_size for w in folder.glob("*.whl"))
        print(f"{group}: {size / 2**20:.1f} MiB in {folder}", file=sys.stderr)
    target = WHEELS / "data"
    shutil.rmtree(target, ignore_errors=True)
    copied = 0
    for name in scenes:
        files = [r for r in bba.SCENES[name][:2] if not r.startswith("staged:")]
        files += [bba.CLASS_PNGS[name]] if name in bba.CLASS_PNGS else []  # its mask's source
        for rel in files:
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(data / rel, target / rel)
            copied += (target / rel).stat().st_size
    print(f"data: {copied / 2**20:.1f} MiB in {target} ({', '.join(scenes)})", file=sys.stderr)
    return 0


# --- 2.-4. the check ----------------------------------------------------------------------------


def find_data(arg: Path | None) -> Path:
    """``--data``, else ``shared/data`` in the checkout (what travels), else ``../shared/data``."""
    candidates = (
        [arg]
        if arg
        else [ROOT / "shared" / "data", ROOT.parent / "shared" / "data", WHEELS / "data"]
    )
    for c in candidates:
        if c is not None and c.is_dir():
            return c
    raise BadArgument(
        f"no scene data at {' or '.join(map(str, candidates))}; pass --data DIR, or run "
        "--prepare to copy the scenes into .whl/data",
        "--data",
    )


def card(device) -> str:
    import platform

    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def train_scene(
    bb, name: str, scene, store: Path, out: Path, device, seconds: float, extra: tuple[str, ...]
) -> tuple[Path, dict[str, Any], tuple]:
    """Train the GPU recipe on one scene's store for ``seconds``; its summary.json figures."""
    import torch

    from geoseg.train.loop import train

    overrides = (*bb.COMMON, *GPU_RECIPE, *extra)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    (out / "runs" / "iic-gpu").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    best = train(
        store,
        out / "runs" / "iic-gpu" / "train",
        method="iic",
        overrides=overrides,
        device=str(device),
        overwrite=True,
        max_seconds=seconds,
    )
    wall = time.perf_counter() - t0
    summary = json.loads((best.parent / "summary.json").read_text())
    summary["train_wall_s"] = round(wall, 1)
    return best, summary, ("iic", overrides)


def check_scene(bb, bba, name: str, args, device, seconds: float, extra) -> dict[str, Any]:
    """Stage, train and score one scene with the benchmark's protocol (its own functions)."""
    if args.image is not None:
        image, truth, opts = args.image, args.truth, list(args.scene_opts)
    else:
        image, truth = bba.stage(name, args.out / "staged")
        opts = list(bba.SCENES[name][2])
    folder = args.out / name
    bargs = bb.parse([str(image), str(truth), *opts, "--methods", "iic", "--out", str(folder)])
    _, bands, flt = bb.check_args(bargs)
    scene, draws = bb.stage_all(bargs, bands, flt)
    draws = {s: draws[s] for s in list(draws)[: args.draws]}
    bb.tile_store(scene, bands, folder)
    store = folder / "store.zarr"
    n_truth = bb.truth_count(scene)
    best, summary, key = train_scene(bb, name, scene, store, folder, device, seconds, extra)
    spec = {"method": "iic", "train": (*GPU_RECIPE, *extra), "map": {}, "predict": {}}
    trained = {key: (best, summary["train_wall_s"], "gpu_check")}
    rec = bb.run_geoseg("iic-gpu", spec, scene, store, draws, folder, n_truth, trained)
    ckpt = args.out / f"{name}.pt"
    shutil.copy2(best, ckpt)
    return {
        "scene": name,
        "image": str(image),
        "size": list(scene.mask.shape),
        "bands": bands,
        "train": summary,
        "mean": bb.summary(rec["draws"]),
        "draws": rec["draws"],
        "map_s": rec.get("map_s"),
        "predict_s": rec.get("predict_s"),
        "checkpoint": str(ckpt),
        "checkpoint_mb": round(ckpt.stat().st_size / 2**20, 2),
    }


def _commit(bb) -> str:
    """The checkout's commit; "?" where the device copy has no git (or no .git)."""
    try:
        return bb.commit()
    except OSError:
        return "?"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gpu_check.py", description=__doc__.splitlines()[0])
    p.exit_on_error = False
    p.add_argument("--budget-min", type=float, default=5.0, help="training minutes in all")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "gpu_check", help="work folder")
    p.add_argument("--json", type=Path, default=None, help="also write the report here")
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    p.add_argument("--data", type=Path, default=None, help="the shared data folder")
    p.add_argument(
        "--scenes",
        default=",".join(DEFAULT_SCENES),
        help="scenes of pipelines/benchmark_buildings_all.py",
    )
    p.add_argument("--image", type=Path, default=None, help="one scene by hand (with --truth)")
    p.add_argument("--truth", type=Path, default=None, help="its building truth")
    p.add_argument(
        "--scene-opt",
        dest="scene_opts",
        action="append",
        default=[],
        help="benchmark option for --image, e.g. --bands=1,2,3",
    )
    p.add_argument("--draws", type=int, default=3, help="labelled-tile draws scored (1-3)")
    p.add_argument("--width", type=float, default=None, help="VGG width (recipe: 1.0)")
    p.add_argument("--crop", type=int, default=None, help="crop edge (recipe: 128)")
    p.add_argument("--batch", type=int, default=None, help="crops per step (recipe: 32)")
    p.add_argument("--workers", type=int, default=None, help="loader workers (recipe: choose)")
    p.add_argument("--compile", action="store_true", help="torch.compile the training forward")
    p.add_argument("--prepare", action="store_true", help="stage wheels and scenes (here)")
    p.add_argument("--install-only", action="store_true", help="install the carried wheels")
    return p.parse_args(argv)


def check_args(args: argparse.Namespace) -> tuple[list[str], tuple[str, ...]]:
    if not args.budget_min > 0:
        raise BadArgument(f"{args.budget_min} is not a positive number of minutes", "--budget-min")
    if not 1 <= args.draws <= 3:
        raise BadArgument(f"{args.draws} draws; the protocol has 1 to 3", "--draws")
    if (args.image is None) != (args.truth is None):
        raise BadArgument("--image and --truth go together", "--image")
    if args.json is not None and not args.json.parent.is_dir():
        raise BadArgument(f"the folder of {args.json} does not exist", "--json")
    import benchmark_buildings_all as bba

    if args.image is not None:
        if not args.image.is_file():
            raise BadArgument(f"{args.image} does not exist", "--image")
        scenes = [args.image.stem]
    else:
        scenes = [s.strip() for s in args.scenes.split(",") if s.strip()]
        unknown = [s for s in scenes if s not in bba.SCENES]
        if unknown or not scenes:
            raise BadArgument(
                f"unknown scene {unknown[0] if unknown else '(none)'!r}; choose from "
                f"{','.join(bba.SCENES)}",
                "--scenes",
            )
    extra = []
    for flag, key in (
        ("width", "model.width"),
        ("crop", "data.crop_size"),
        ("batch", "data.batch_size"),
        ("workers", "data.workers"),
    ):
        if getattr(args, flag) is not None:
            extra.append(f"{key}={getattr(args, flag)}")
    if args.compile:
        extra.append("compile=true")
    return scenes, tuple(extra)


def main(argv: list[str] | None = None) -> int:
    start = time.perf_counter()
    try:
        args = parse(argv)
    except argparse.ArgumentError as exc:
        print(f"error: {exc}; see --help", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    for noisy in ("rasterio", "fiona", "pyogrio", "distributed", "numba"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        install = ensure_imports(strict=not args.install_only)
        if args.install_only:
            print(json.dumps(install))
            return 0
        if args.prepare:
            scenes = [s.strip() for s in args.scenes.split(",") if s.strip()]
            os.environ["GEOSEG_DATA"] = str(args.data or ROOT.parent / "shared" / "data")
            return prepare(scenes, Path(os.environ["GEOSEG_DATA"]))
        data = find_data(args.data) if args.image is None else None
        if data is not None:
            os.environ["GEOSEG_DATA"] = str(data)
        scenes, extra = check_args(args)
        import benchmark_buildings as bb
        import benchmark_buildings_all as bba
        import torch

        from geoseg.models.device import resolve_device
        from geoseg.progress import set_enabled

        try:
            device = resolve_device(args.device)
        except Exception as exc:
            raise BadArgument(str(exc), "--device") from exc
    except BadArgument as exc:
        print(f"error: {exc.param}: {exc}", file=sys.stderr)
        return 2
    set_enabled(False)
    args.out.mkdir(parents=True, exist_ok=True)
    seconds = args.budget_min * 60 / len(scenes)
    results = []
    for name in scenes:
        log.info("%s: staging, %.0f s of training on %s, scoring", name, seconds, device)
        try:
            results.append(check_scene(bb, bba, name, args, device, seconds, extra))
        except bb.bt.BadArgument as exc:
            print(f"error: {exc.param}: {exc}", file=sys.stderr)
            return 2
    trains = [r["train"] for r in results]
    stepped = sum(t["step_seconds"] for t in trains)
    peaks = [t["peak_gpu_memory_bytes"] for t in trains if t["peak_gpu_memory_bytes"]]
    means = [r["mean"] for r in results if r["mean"].get("f1") is not None]
    report = {
        "device": str(device),
        "card": card(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "budget_min": args.budget_min,
        "recipe": list((*bb.COMMON, *GPU_RECIPE, *extra)),
        "install": install,
        "steps": sum(t["steps"] for t in trains),
        "steps_per_s": round(sum(t["steps"] for t in trains) / stepped, 3) if stepped else None,
        "crops_per_s": round(sum(t["crops"] for t in trains) / stepped, 2) if stepped else None,
        "data_stall": round(sum(t["wait_seconds"] for t in trains) / stepped, 5)
        if stepped
        else None,
        "peak_gpu_memory_bytes": max(peaks) if peaks else None,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "f1": round(sum(m["f1"] for m in means) / len(means), 4) if means else None,
        "iou": round(sum(m["iou"] for m in means) / len(means), 4) if means else None,
        "scenes": results,
        "commit": _commit(bb),
        "wall_s": round(time.perf_counter() - start, 1),
    }
    for path in [args.out / "gpu_check.json", *([args.json] if args.json else [])]:
        bb.write_json(path, report)
    short = {
        k: report[k]
        for k in (
            "card",
            "steps_per_s",
            "crops_per_s",
            "data_stall",
            "peak_gpu_memory_bytes",
            "f1",
            "iou",
            "wall_s",
        )
    }
    print(json.dumps(short))
    return 0


if __name__ == "__main__":
    sys.exit(main())
