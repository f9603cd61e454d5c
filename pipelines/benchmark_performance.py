"""Speed and memory of geoseg's steps against their floors and peers, in one run.

Every step runs beside its floor (the least work any implementation must do) or its peer (the
tool a GIS engineer would use instead), as separate processes taken in turn, A B A B ..., and
each ratio is the median of the per-pair ratios (pairing keeps a ratio meaningful while the
machine's speed drifts under other jobs). Scenes are built from the real NAIP RGBN sample
(``shared/data/naip-rgbn-5m``): mirrored mosaics, 4-band uint8, nodata 0 as the sample,
512² LZW blocks, every band grey/undefined (no alpha band: a scene marked RGBA would make
every read also read a mask, which users' 4-band scenes do not).

Keys written to ``--json`` (and rendered into docs/benchmarks.md by ``--markdown``):

- ``tile_vs_read``: ``geoseg tile`` / a bare windowed read of the same windows (one dataset,
  sequential), both timed inside their process after imports.
- ``tile_vs_gdal_zarr``: ``geoseg tile`` / ``gdal_translate -of Zarr`` of the scene, whole
  processes.
- ``predict_vs_forward``: ``geoseg predict`` (256 px tiles, overlap 32, a trained IIC net) /
  a bare loop that reads, normalises and runs the model on the same global tile windows and
  arg-maxes, both timed after imports.
- ``vectorize_vs_gdal_polygonize``: ``geoseg vectorize`` / ``gdal_polygonize.py`` on the same
  class rasters (one class of a smooth map, all classes of it, a speckled map), whole
  processes; the polygon counts of both are recorded and must agree.
- ``rss_<big>_vs_<small>``: peak RSS of ``geoseg predict`` (k-means model, where the
  pipeline's own memory shows) on the largest vs the smallest scene (``rss_16k_vs_2k`` in the
  full run).
- ``train_data_stall``: the fraction of ``geoseg train`` (configs/cpu_smoke.yaml) spent
  waiting for a batch in the training thread.

Run (full: about 40 minutes on 2 cores; ``--quick``: under 10 minutes, smaller scenes, same
meaning)::

    python pipelines/benchmark_performance.py --json docs/benchmarks_performance.json
    python pipelines/benchmark_performance.py --markdown docs/benchmarks_performance.json

The second command regenerates the "Floors and peers" section of docs/benchmarks.md from the
JSON alone. Commands are run through the ``geoseg`` CLI so the harness does not depend on
geoseg's internal module layout (the bare forward loads a checkpoint through whichever public
loader exists).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAIP = ROOT.parent / "shared/data/naip-rgbn-5m/m_4709963_se_14_1_20200831.tif"
SMOKE = ROOT / "configs/cpu_smoke.yaml"
DOC = ROOT / "docs/benchmarks.md"
SECTION = "## Floors and peers (benchmark_performance.py)"
GDAL_BIN = Path("/usr/bin")  # Debian's GDAL tools (gdal_translate, gdal_polygonize.py)
#: one GDAL block cache for every process, as the geoseg CLI sets for itself
ENV = {**os.environ, "GDAL_CACHEMAX": os.environ.get("GDAL_CACHEMAX", "16")}
#: compiled sources cached as on a user's machine: with PYTHONDONTWRITEBYTECODE (set in this
#: workplace) every run recompiled geoseg's sources, ~50 ms inside tile's timed section
ENV.pop("PYTHONDONTWRITEBYTECODE", None)
ENV["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "geoseg-bench-pycache")

FULL = {
    "tile": 8192,
    "predict": 2048,
    "rss": (2048, 16384),
    "vectorize": 8192,
    "train_steps": 200,
    "repeats": 3,
}
QUICK = {
    "tile": 4096,
    "predict": 1536,
    # both sizes run the same two block workers: 1024² is one block, so against it the
    # ratio measured the second worker, not the scene's size
    "rss": (2048, 8192),
    "vectorize": 2048,
    "train_steps": 20,
    "repeats": 3,
}
TILE, OVERLAP, BATCH, BLOCK = 256, 32, 8, 1024


# --- scenes ---------------------------------------------------------------------------------


def build_scene(sample: Path, out: Path, size: int) -> Path:
    """Mosaic ``sample`` (mirrored copies, so edges match) into a ``size``² tiled GeoTIFF.

    Written strip by strip (memory of one 512-row strip), every band ``gray``/``undefined``:
    the result is checked to have no alpha band and no per-dataset mask.
    """
    import numpy as np
    import rasterio
    from rasterio.enums import ColorInterp, MaskFlags
    from rasterio.windows import Window

    out = Path(out)
    if out.exists():
        return out
    with rasterio.open(sample) as src:
        data = src.read()
        crs, transform, nodata = src.crs, src.transform, src.nodata
    mirror = np.concatenate([data, data[:, ::-1]], axis=1)
    mirror = np.concatenate([mirror, mirror[:, :, ::-1]], axis=2)
    count, mh, mw = mirror.shape
    profile = dict(
        driver="GTiff",
        width=size,
        height=size,
        count=count,
        dtype=data.dtype.name,
        crs=crs,
        transform=transform,
        nodata=nodata,
        tiled=True,
        blockxsize=512,
        blockysize=512,
        compress="lzw",
        interleave="pixel",
        photometric="minisblack",
        alpha="no",
        bigtiff="if_safer",
    )
    tmp = out.with_name(out.name + ".tmp")
    with rasterio.open(tmp, "w", **profile) as dst:
        dst.colorinterp = [ColorInterp.gray] + [ColorInterp.undefined] * (count - 1)
        for row in range(0, size, 512):
            rows = (np.arange(row, min(row + 512, size)) % mh)[:, None]
            cols = np.arange(size) % mw
            dst.write(mirror[:, rows, cols], window=Window(0, row, size, rows.shape[0]))
    with rasterio.open(tmp) as check:
        if ColorInterp.alpha in check.colorinterp or any(
            MaskFlags.alpha in f or MaskFlags.per_dataset in f for f in check.mask_flag_enums
        ):
            raise SystemExit(f"{tmp} has an alpha band or mask: {check.colorinterp}")
    os.replace(tmp, out)
    return out


def class_rasters(scene: Path, work: Path, size: int) -> dict[str, Path]:
    """Class maps of the scene as predict would write them: uint8, nodata 255, 512² DEFLATE.

    ``speckled``: every pixel's nearest of 6 k-means centres (k-means on 100k pixels, seeded);
    ``smooth``: the same centres on the scene box-filtered over 9×9 pixels, the blobby maps
    a spatially regularised model gives. For one-class runs GDAL gets a 0/1 raster with
    nodata 0 (how gdal_polygonize selects values), geoseg the class map with ``--class``.
    """
    import numpy as np
    import rasterio
    from rasterio.windows import Window
    from scipy.ndimage import uniform_filter

    work = Path(work)
    out = {k: work / f"{k}{size}.tif" for k in ("smooth", "speckled", "onehot")}
    if all(p.exists() for p in out.values()):
        return out
    with rasterio.open(scene) as src:
        profile = dict(
            driver="GTiff",
            width=size,
            height=size,
            count=1,
            dtype="uint8",
            crs=src.crs,
            transform=src.transform,
            tiled=True,
            blockxsize=512,
            blockysize=512,
            compress="deflate",
        )
        rng = np.random.default_rng(0)
        sample = src.read(window=Window(0, 0, min(size, 2048), min(size, 2048)))
        pixels = sample.reshape(sample.shape[0], -1).T.astype(np.float32)
        pixels = pixels[rng.choice(len(pixels), 100_000, replace=False)]
        centres = pixels[rng.choice(len(pixels), 6, replace=False)]
        for _ in range(20):
            nearest = ((pixels[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
            centres = np.stack(
                [
                    pixels[nearest == k].mean(0) if (nearest == k).any() else centres[k]
                    for k in range(6)
                ]
            )
        smooth_class = None
        with (
            rasterio.open(out["smooth"], "w", nodata=255, **profile) as smooth,
            rasterio.open(out["speckled"], "w", nodata=255, **profile) as speckled,
            rasterio.open(out["onehot"], "w", nodata=0, **profile) as onehot,
        ):
            halo = 8
            for row in range(0, size, 512):
                r0, r1 = max(0, row - halo), min(size, row + 512 + halo)
                x = src.read(window=Window(0, r0, size, r1 - r0)).astype(np.float32)
                win = Window(0, row, size, min(512, size - row))
                inner = slice(row - r0, row - r0 + win.height)
                for dst, img in (
                    (speckled, x),
                    (smooth, uniform_filter(x, size=(1, 9, 9), mode="nearest")),
                ):
                    flat = img[:, inner].reshape(img.shape[0], -1).T
                    d = ((flat[:, None] - centres[None]) ** 2).sum(-1)
                    cls = d.argmin(1).astype(np.uint8).reshape(win.height, size)
                    dst.write(cls, 1, window=win)
                    if dst is smooth:
                        if smooth_class is None:
                            smooth_class = int(np.bincount(cls.ravel(), minlength=6)[1:].argmax())
                            smooth_class += 1
                        onehot.write((cls == smooth_class).astype(np.uint8), 1, window=win)
    (work / f"class{size}.json").write_text(json.dumps({"class": smooth_class}))
    return out


# --- one timed process ----------------------------------------------------------------------

#: what each kind of child imports before its timer starts: what the geoseg command imports
#: anyway, so a child's whole-process time is that of the plain command
PRELOAD = {
    # what each command imports itself, no more: a whole-process (wall) ratio would otherwise
    # pay for modules the command no longer needs (tile: dask; vectorize: geopandas, scipy)
    "tile": ("numpy", "rasterio", "zarr", "geoseg.cli"),
    "predict": ("numpy", "rasterio", "shapely", "torch", "geoseg.cli"),
    "vectorize": ("numpy", "rasterio", "shapely", "pyproj", "geoseg.cli"),
    "train": ("numpy", "zarr", "torch", "geoseg.cli"),
    "none": (),
}


def child(spec: dict) -> None:
    """Run one measured thing in this process; print its own figures as the last line."""
    import importlib

    for name in PRELOAD[spec.get("preload", "none")]:
        importlib.import_module(name)
    start = time.perf_counter()
    extra = {}
    if spec["kind"] == "cli":
        from geoseg.cli import main

        try:
            main(spec["argv"])
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise
    elif spec["kind"] == "call":  # set-up work (scenes, class maps), kept out of the parent
        extra = {"value": globals()[spec["fn"]](*spec.get("args", ()))}
    else:
        fn = {"read": bare_read, "forward": bare_forward, "train": timed_train}[spec["kind"]]
        extra = fn(**spec["args"])
        start = extra.pop("start", start)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, **extra}, default=str))


def grid(length: int, tile: int, overlap: int) -> list[int]:
    """Tile origins along one axis as geoseg's grid puts them (last tile snapped to the edge)."""
    if length <= tile:
        return [0]
    return [*range(0, length - tile, tile - overlap), length - tile]


def bare_read(scene: str, tile: int, overlap: int) -> dict:
    """Every tile window of the scene read once through one dataset, nothing else."""
    import rasterio
    from rasterio.windows import Window

    start = time.perf_counter()
    n = 0
    # a cache that holds a row of the scene's blocks, so each block is decoded once: the floor
    # is the fastest plain read (the CLI's 16 MiB decoded the 8192² scene's blocks ~2x)
    with rasterio.Env(GDAL_CACHEMAX=512 * 2**20), rasterio.open(scene) as src:
        for r in grid(src.height, tile, overlap):
            for c in grid(src.width, tile, overlap):
                src.read(window=Window(c, r, tile, tile))
                n += 1
    return {"start": start, "windows": n}


def load_model(path: str):
    """``(checkpoint dict, eval model)`` through geoseg's public loader, wherever it lives."""
    import importlib

    for module, loader, builder in (
        ("geoseg.checkpoint", "load_checkpoint", "model_from_checkpoint"),
        ("geoseg.models.checkpoint", "load_checkpoint", "model_from_checkpoint"),
    ):
        try:
            mod = importlib.import_module(module)
            ckpt = getattr(mod, loader)(path)
            return ckpt, getattr(mod, builder)(ckpt)
        except (ImportError, AttributeError):
            continue
    from geoseg import Checkpoint  # the restructure's checkpoint type

    ckpt = Checkpoint.load(path)
    return ckpt, ckpt.model()


def bare_forward(scene: str, model: str, tile: int, overlap: int, batch: int) -> dict:
    """Read, normalise (clip p2–p98, standardise) and run the model on every global tile
    window, softmax and arg-max per tile: the floor of tiled inference (no blending, no
    writing). Tiles are read in batches but go through the model one at a time, as predict
    runs them on a CPU: measured faster there than batches of 8 (IIC 1.9 s vs 2.8 s for a
    1024² block), so the floor is the faster loop, not a slower one predict could beat."""
    import numpy as np
    import rasterio
    import torch
    from rasterio.windows import Window

    ckpt, net = load_model(model)
    norm = ckpt["norm"] if isinstance(ckpt, dict) else ckpt.norm
    norm = {k: np.asarray(v, np.float32)[:, None, None] for k, v in dict(norm).items()}
    head = int(ckpt.get("head", 0)) if isinstance(ckpt, dict) else 0
    net.eval()
    start = time.perf_counter()
    n = 0
    with rasterio.open(scene) as src, torch.inference_mode():
        wins = [
            Window(c, r, tile, tile)
            for r in grid(src.height, tile, overlap)
            for c in grid(src.width, tile, overlap)
        ]
        for i in range(0, len(wins), batch):
            x = np.stack([src.read(window=w).astype(np.float32) for w in wins[i : i + batch]])
            x = (np.clip(x, norm["p2"], norm["p98"]) - norm["mean"]) / norm["std"]
            x = x.astype(np.float32)
            for j in range(len(x)):  # one tile per forward pass, the fastest on a CPU
                out = net(torch.from_numpy(x[j : j + 1]))
                out = out[head] if isinstance(out, (list, tuple)) else out
                torch.softmax(out, 1).argmax(1).to(torch.uint8).numpy()
            n += len(x)
    return {"start": start, "tiles": n}


def timed_train(argv: list[str]) -> dict:
    """``geoseg train`` with the time the training thread waits for batches.

    Uses the loop's own figure when it reports one (a ``data_stall`` column in metrics.csv);
    otherwise wraps the crop sampler's ``batch`` and sums its time on the training thread.
    """
    import importlib
    import threading

    from geoseg.cli import main

    waited = [0.0, 0]
    main_thread = threading.get_ident()
    sampler_cls = None
    for module in ("geoseg.train_data", "geoseg.train.data"):
        try:
            sampler_cls = importlib.import_module(module).CropSampler
            break
        except (ImportError, AttributeError):
            continue
    if sampler_cls is not None:
        original = sampler_cls.batch

        def batch(self, *args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(self, *args, **kwargs)
            finally:
                if threading.get_ident() == main_thread:
                    waited[0] += time.perf_counter() - t0
                    waited[1] += 1

        sampler_cls.batch = batch
    start = time.perf_counter()
    try:
        main(argv)
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    total = time.perf_counter() - start
    out = Path(argv[argv.index("-o") + 1])
    reported = None
    metrics = out / "metrics.csv"
    if metrics.exists():
        import csv

        rows = list(csv.DictReader(metrics.open()))
        stalls = [float(r["data_stall"]) for r in rows if r.get("data_stall") not in (None, "")]
        reported = stalls[-1] if stalls else None
    return {
        "train_seconds": total,
        "batch_wait_seconds": waited[0],
        "batches": waited[1],
        "stall_reported": reported,
        "stall": reported if reported is not None else waited[0] / total,
    }


def run(cmd: list[str] | dict, log: Path | None = None) -> dict:
    """One process: wall seconds, CPU seconds and peak RSS (the kernel's rusage of the child;
    this parent stays small, since a child's peak counts the parent it was forked from), plus
    a child's own figures."""
    argv = [sys.executable, __file__, "--child", json.dumps(cmd)] if isinstance(cmd, dict) else cmd
    start = time.perf_counter()
    with open(log or os.devnull, "a") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, env=ENV, text=True)
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{' '.join(map(str, argv))[:300]} failed ({code}); see {log}")
    result = {
        "wall": wall,
        "rss_mib": usage.ru_maxrss / 1024,
        "cpu": usage.ru_utime + usage.ru_stime,
    }
    if isinstance(cmd, dict):
        result.update(json.loads(out.strip().splitlines()[-1]))
    return result


def call(fn: str, *args, log: Path | None = None):
    """``fn(*args)`` of this module in a child process (keeps numpy/GDAL out of the parent)."""
    return run(
        {"kind": "call", "fn": fn, "args": [str(a) if isinstance(a, Path) else a for a in args]},
        log,
    )["value"]


def compare(a, bs: dict, repeats: int, *, before=None, after=None, log=None) -> dict:
    """A then each B in turn, ``repeats`` rounds; per B the median/min/max of A/B per round.

    ``bs`` maps a name to ``(command, metric)``; the metric is ``seconds`` (timed inside the
    process after imports: for floors) or ``wall`` (the whole process: for peer tools, which
    pay their own start-up too). ``before`` runs ahead of every command (removes outputs).
    """
    runs: dict[str, list[dict]] = {"a": [], **{k: [] for k in bs}}
    for _ in range(repeats):
        for name, cmd in (("a", a), *((k, c) for k, (c, _) in bs.items())):
            if before:
                before()
            runs[name].append(run(cmd, log))
            if after:
                after(name)

    def summary(rs, metric):
        vals = [r[metric] for r in rs]
        return {
            "median": statistics.median(vals),
            "min": min(vals),
            "max": max(vals),
            "wall_median": statistics.median(r["wall"] for r in rs),
            "rss_mib_median": statistics.median(r["rss_mib"] for r in rs),
            "cpu_median": statistics.median(r["cpu"] for r in rs),
        }

    out = {"a_runs": runs["a"]}
    for name, (_, metric) in bs.items():
        ratios = [x[metric] / y[metric] for x, y in zip(runs["a"], runs[name], strict=True)]
        out[name] = {
            "metric": metric,
            "a": summary(runs["a"], metric),
            "b": summary(runs[name], metric),
            "ratio": statistics.median(ratios),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
            "b_runs": runs[name],
        }
    return out


# --- the benchmark --------------------------------------------------------------------------


def rm(*paths: Path):
    def clear():
        for p in paths:
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()

    return clear


def polygon_count(path: str) -> int:
    import pyogrio

    return int(pyogrio.read_info(path)["features"])


def scene(work: Path, size: int, log: Path) -> Path:
    return Path(call("build_scene", NAIP, work / f"scene{size}.tif", size, log=log))


def bench_tile(work: Path, size: int, repeats: int, log: Path) -> dict:
    src = scene(work, size, log)
    store, gz = work / "tile.zarr", work / "gdal.zarr"
    geoseg = {
        "kind": "cli",
        "preload": "tile",
        "argv": ["-q", "tile", str(src), "-o", str(store), "--overwrite"],
    }
    read = {
        "kind": "read",
        "preload": "tile",
        "args": {"scene": str(src), "tile": TILE, "overlap": OVERLAP},
    }
    gdal = [str(GDAL_BIN / "gdal_translate"), "-q", "-of", "Zarr", str(src), str(gz)]
    res = compare(
        geoseg,
        {"read": (read, "seconds"), "gdal_zarr": (gdal, "wall")},
        repeats,
        before=rm(store, gz),
        log=log,
    )
    rm(store, gz)()
    return {"scene": f"{size}x{size}x4 uint8", **res}


def make_models(work: Path, log: Path, steps: int) -> dict:
    """A store of the 1024² scene, an IIC net trained by configs/cpu_smoke.yaml (the training
    run is also the stall measurement) and a k-means model, all through the CLI."""
    src = scene(work, 1024, log)
    store = work / "train.zarr"
    if not store.exists():
        run(
            {"kind": "cli", "preload": "tile", "argv": ["-q", "tile", str(src), "-o", str(store)]},
            log,
        )
    iic = work / "iic"
    rm(iic)()
    argv = [
        "-q",
        "train",
        str(store),
        "-o",
        str(iic),
        "-c",
        str(SMOKE),
        "--device",
        "cpu",
        "--set",
        f"schedule.steps={steps}",
    ]
    train = run({"kind": "train", "preload": "train", "args": {"argv": argv}}, log)
    km = work / "kmeans"
    if not (km / "best.pt").exists():
        run(
            {
                "kind": "cli",
                "preload": "train",
                "argv": [
                    "-q",
                    "train",
                    str(store),
                    "-o",
                    str(km),
                    "--method",
                    "kmeans",
                    "--set",
                    "n_clusters=6",
                    "--device",
                    "cpu",
                    "--overwrite",
                ],
            },
            log,
        )
    return {"iic": iic / "best.pt", "kmeans": km / "best.pt", "train": train}


def bench_predict(work: Path, size: int, model: Path, repeats: int, log: Path) -> dict:
    src = scene(work, size, log)
    out = work / "pred"
    settings = [
        "--tile-size",
        str(TILE),
        "--overlap",
        str(OVERLAP),
        "--batch-size",
        str(BATCH),
        "--block-size",
        str(BLOCK),
        "--device",
        "cpu",
    ]
    geoseg = {
        "kind": "cli",
        "preload": "predict",
        "argv": [
            "-q",
            "predict",
            str(src),
            "-m",
            str(model),
            "-o",
            str(out),
            *settings,
            "--overwrite",
        ],
    }
    fwd = {
        "kind": "forward",
        "preload": "predict",
        "args": {
            "scene": str(src),
            "model": str(model),
            "tile": TILE,
            "overlap": OVERLAP,
            "batch": BATCH,
        },
    }
    res = compare(geoseg, {"forward": (fwd, "seconds")}, repeats, before=rm(out), log=log)
    rm(out)()
    return {"scene": f"{size}x{size}x4 uint8", "model": "IIC cpu_smoke", **res}


def bench_rss(work: Path, sizes: tuple[int, int], model: Path, log: Path) -> dict:
    rows = {}
    for size in sizes:
        src = scene(work, size, log)
        out = work / f"rss{size}"
        rm(out)()
        argv = [
            "-q",
            "predict",
            str(src),
            "-m",
            str(model),
            "-o",
            str(out),
            "--tile-size",
            str(TILE),
            "--overlap",
            str(OVERLAP),
            "--block-size",
            str(BLOCK),
            "--device",
            "cpu",
        ]
        rows[size] = run({"kind": "cli", "preload": "predict", "argv": argv}, log)
        rm(out)()
    small, big = rows[sizes[0]], rows[sizes[1]]
    return {
        "sizes": list(sizes),
        "model": "k-means (6 clusters)",
        "rss_mib": {str(s): r["rss_mib"] for s, r in rows.items()},
        "seconds": {str(s): r["seconds"] for s, r in rows.items()},
        "ratio": big["rss_mib"] / small["rss_mib"],
    }


def bench_vectorize(work: Path, size: int, repeats: int, log: Path) -> dict:
    src = scene(work, size, log)
    maps = {k: Path(v) for k, v in call("class_rasters", src, work, size, log=log).items()}
    value = json.loads((work / f"class{size}.json").read_text())["class"]
    ours, theirs = work / "v.gpkg", work / "g.gpkg"
    cases = {
        "smooth, one class": (maps["smooth"], [f"--class=c={value}"], maps["onehot"]),
        "smooth, all classes": (maps["smooth"], [], maps["smooth"]),
        "speckled, all classes": (maps["speckled"], [], maps["speckled"]),
    }
    out = {}
    for name, (raster, extra, gdal_in) in cases.items():
        geoseg = {
            "kind": "cli",
            "preload": "vectorize",
            "argv": ["-q", "vectorize", str(raster), "-o", str(ours), *extra, "--overwrite"],
        }
        gdal = [str(GDAL_BIN / "gdal_polygonize.py"), "-q", str(gdal_in), "-f", "GPKG", str(theirs)]
        counts = {}

        def count(who, counts=counts):  # each tool's output, read before the next run
            path = ours if who == "a" else theirs
            counts["geoseg" if who == "a" else "gdal"] = call("polygon_count", path, log=log)

        res = compare(
            geoseg, {"gdal": (gdal, "wall")}, repeats, before=rm(ours, theirs), after=count, log=log
        )["gdal"]
        res["polygons"] = counts
        out[name] = res
        rm(ours, theirs, ours.with_suffix(".qml"))()
    return {
        "raster": f"{size}x{size} uint8",
        "cases": out,
        "ratio": max(c["ratio"] for c in out.values()),
    }


def machine() -> dict:
    import rasterio
    import torch
    import zarr

    return {
        "cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "rasterio": rasterio.__version__,
        "gdal_rasterio": rasterio.__gdal_version__,
        "gdal_cli": subprocess.run(
            [str(GDAL_BIN / "gdalinfo"), "--version"], text=True, capture_output=True
        ).stdout.strip(),
        "zarr": zarr.__version__,
        "load_average_start": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller scenes, under 10 minutes")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--markdown",
        type=Path,
        metavar="JSON",
        help="only rewrite docs/benchmarks.md's section from this JSON",
    )
    parser.add_argument("--baseline", type=Path, help="with --markdown: an older run's JSON")
    parser.add_argument(
        "--only", nargs="*", default=None, choices=("tile", "train", "predict", "rss", "vectorize")
    )
    parser.add_argument("--repeats", type=int, default=None, help="pairs per ratio (>= 3)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (kept)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    if args.markdown:
        base = json.loads(args.baseline.read_text()) if args.baseline else None
        write_markdown(json.loads(args.markdown.read_text()), DOC, base)
        return
    cfg = dict(QUICK if args.quick else FULL)
    if args.repeats:
        cfg["repeats"] = args.repeats
    only = set(args.only or ("tile", "train", "predict", "rss", "vectorize"))
    work = args.work or Path(tempfile.mkdtemp(prefix="geoseg-perf-", dir="/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    log = work / "stderr.log"
    results: dict = {
        "mode": "quick" if args.quick else "full",
        "config": cfg,
        "machine": call("machine"),
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], text=True, capture_output=True
        ).stdout.strip()
        results["commit"] = commit
    except OSError:
        pass
    ratios: dict = {}
    t0 = time.perf_counter()

    def step(name, fn, *a):
        t = time.perf_counter()
        print(f"[{time.perf_counter() - t0:6.0f} s] {name} ...", file=sys.stderr, flush=True)
        results[name] = fn(*a)
        results[name]["bench_seconds"] = time.perf_counter() - t
        if args.json:
            args.json.write_text(json.dumps({**results, "ratios": ratios}, indent=1, default=str))

    if "tile" in only:
        step("tile", bench_tile, work, cfg["tile"], cfg["repeats"], log)
        ratios["tile_vs_read"] = results["tile"]["read"]["ratio"]
        ratios["tile_vs_gdal_zarr"] = results["tile"]["gdal_zarr"]["ratio"]
    if only & {"train", "predict", "rss"}:
        step("models", make_models, work, log, cfg["train_steps"])
        models = results["models"]
        results["models"] = {k: str(v) if isinstance(v, Path) else v for k, v in models.items()}
        ratios["train_data_stall"] = models["train"]["stall"]
        if "predict" in only:
            step("predict", bench_predict, work, cfg["predict"], models["iic"], cfg["repeats"], log)
            ratios["predict_vs_forward"] = results["predict"]["forward"]["ratio"]
        if "rss" in only:
            step("rss", bench_rss, work, tuple(cfg["rss"]), models["kmeans"], log)
            small, big = cfg["rss"]
            ratios[f"rss_{big // 1024}k_vs_{small // 1024}k"] = results["rss"]["ratio"]
    if "vectorize" in only:
        step("vectorize", bench_vectorize, work, cfg["vectorize"], cfg["repeats"], log)
        ratios["vectorize_vs_gdal_polygonize"] = results["vectorize"]["ratio"]
    results["ratios"] = ratios
    results["total_seconds"] = time.perf_counter() - t0
    results["machine"]["load_average_end"] = os.getloadavg()
    text = json.dumps(results, indent=1, default=str)
    if args.json:
        args.json.write_text(text)
    print(json.dumps(ratios, indent=1))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


# --- docs/benchmarks.md ---------------------------------------------------------------------

TARGETS = {
    "tile_vs_read": ("<=", 1.2),
    "tile_vs_gdal_zarr": ("<", 1.0),
    "predict_vs_forward": ("<=", 1.10),
    "vectorize_vs_gdal_polygonize": ("<", 1.0),
    "rss": ("<=", 1.1),
    "train_data_stall": ("<", 0.05),
}


def _verdict(key: str, value: float) -> str:
    op, limit = TARGETS["rss" if key.startswith("rss_") else key]
    ok = value <= limit if op == "<=" else value < limit
    return f"{op} {limit:g}: {'met' if ok else 'NOT met'}"


def render(res: dict, base: dict | None = None) -> str:
    """The markdown section for one results JSON, beside a baseline run's when given (nothing
    in it is typed by hand)."""
    m = res["machine"]
    quick = "--quick " if res["mode"] == "quick" else ""
    lines = [
        SECTION,
        "",
        f"Regenerate: `python pipelines/benchmark_performance.py {quick}--json FILE` then "
        "`python pipelines/benchmark_performance.py --markdown FILE [--baseline OLD.json]`.",
        "",
        f"{res['mode']} run, commit {res.get('commit', '?')}, {res['started']}: "
        f"{m['cores']} cores (load average {m['load_average_start'][0]:.1f} at the start, "
        f"{m.get('load_average_end', [float('nan')])[0]:.1f} at the end), Python "
        f"{m['python']}, torch {m['torch']}, rasterio {m['rasterio']} / GDAL "
        f"{m['gdal_rasterio']}, zarr {m['zarr']}; peers: {m['gdal_cli']}. Each ratio is the "
        f"median over {res['config']['repeats']} rounds run in turn (A, then each B; min–max "
        "in brackets); 'in-process' = timed after imports inside the process, 'process' = "
        "the whole process.",
        "",
    ]
    header = "| key | ratio | target |"
    if base:
        header = f"| key | ratio | before (commit {base.get('commit', '?')}) | target |"
    lines += [header, "|---|---|---|---|" if base else "|---|---|---|"]
    for key, value in res["ratios"].items():
        before = ""
        if base:
            old = base["ratios"].get(key)
            before = f" {old:.3f} |" if old is not None else " – |"
        lines.append(f"| `{key}` | {value:.3f} |{before} {_verdict(key, value)} |")
    lines += [
        "",
        "| step | A median s | B median s | A/B median [min–max] | timed | peak RSS A / B MiB |",
        "|---|---|---|---|---|---|",
    ]

    def row(name, r):
        kind = "in-process" if r["metric"] == "seconds" else "process"
        lines.append(
            f"| {name} | {r['a']['median']:.2f} | {r['b']['median']:.2f} | {r['ratio']:.2f} "
            f"[{r['ratio_min']:.2f}–{r['ratio_max']:.2f}] | {kind} | "
            f"{r['a']['rss_mib_median']:.0f} / {r['b']['rss_mib_median']:.0f} |"
        )

    if "tile" in res:
        t = res["tile"]
        row(f"`geoseg tile` vs bare read of the same windows ({t['scene']})", t["read"])
        row(f"`geoseg tile` vs `gdal_translate -of Zarr` ({t['scene']})", t["gdal_zarr"])
    if "predict" in res:
        p = res["predict"]
        row(f"`geoseg predict` vs bare forward ({p['scene']}, {p['model']})", p["forward"])
    if "vectorize" in res:
        v = res["vectorize"]
        for name, c in v["cases"].items():
            n = c["polygons"]
            count = f"{n.get('geoseg', 0):,} / {n.get('gdal', 0):,} polygons"
            row(f"`geoseg vectorize` vs `gdal_polygonize.py`, {name} ({v['raster']}; {count})", c)
    if "rss" in res:
        r = res["rss"]
        s, b = (str(x) for x in r["sizes"])
        lines += [
            "",
            f"Peak RSS of `geoseg predict` ({r['model']}): {s}² {r['rss_mib'][s]:.0f} MiB, "
            f"{b}² {r['rss_mib'][b]:.0f} MiB (in-process {r['seconds'][s]:.1f} s and "
            f"{r['seconds'][b]:.1f} s).",
        ]
    if "models" in res:
        t = res["models"]["train"]
        src = (
            "the loop's own figure"
            if t.get("stall_reported") is not None
            else ("time in the crop sampler on the training thread")
        )
        lines += [
            "",
            f"Training stall (`geoseg train -c configs/cpu_smoke.yaml`, "
            f"{res['config']['train_steps']} steps, 1024² store): {t['stall']:.1%} of "
            f"{t['train_seconds']:.1f} s ({src}).",
        ]
    return "\n".join(lines) + "\n"


def write_markdown(res: dict, doc: Path, base: dict | None = None) -> None:
    """Replace (or append) the section of ``doc`` this script owns."""
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    section = render(res, base)
    if SECTION in text:
        head, rest = text.split(SECTION, 1)
        nxt = rest.find("\n## ")
        tail = rest[nxt + 1 :] if nxt >= 0 else ""
        text = head + section + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    doc.write_text(text)


if __name__ == "__main__":
    main()
