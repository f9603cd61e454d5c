"""Peak memory and throughput of ``geoseg predict`` on an 8192² vs a 2048² 4-band scene.

DESIGN.md: predict's memory is bounded by the block, never by the scene. This script builds
both scenes from the real NAIP RGBN sample (mirrored mosaics, as benchmark_tile_memory.py does)
under /tmp, saves a tiny untrained checkpoint (IIC VGG trunk of width 1/16, or ``--method
kmeans`` whose forward is nearly free, exposing the pipeline's own cost), then runs as
separate processes with the same settings:

1. ``geoseg -q predict`` on each scene — peak RSS of the process tree by psutil polling;
2. a bare loop over the SAME global tile windows of the small scene: read, normalise, forward,
   nothing else — the floor any tiled predictor pays, so predict's overhead (overlap blending,
   the tiles recomputed at block borders, writing the COG) shows as a ratio.

Pass criterion: peak RSS(8192²) / peak RSS(2048²) <= 1.2.
Run: ``python pipelines/benchmark_predict_memory.py`` (a few minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import rasterio
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_tile_memory import NAIP, build_scene  # noqa: E402

BARE_FORWARD = """
import sys, time, numpy as np, rasterio, torch
from rasterio.windows import Window
from geoseg.tiles.grid import tile_origins
from geoseg.checkpoint import load_checkpoint, model_from_checkpoint
from geoseg.io.bands import normalize
scene, ckpt_path, tile, overlap, batch = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
ckpt = load_checkpoint(ckpt_path)
model = model_from_checkpoint(ckpt)
start = time.perf_counter()
with rasterio.open(scene) as src, torch.inference_mode():
    windows = [Window(c, r, tile, tile) for r in tile_origins(src.height, tile, overlap)
               for c in tile_origins(src.width, tile, overlap)]
    for i in range(0, len(windows), batch):
        x = np.stack([normalize(src.read(window=w), ckpt["norm"]) for w in windows[i:i + batch]])
        torch.softmax(model(torch.from_numpy(x))[0], 1).argmax(1)
print(len(windows), time.perf_counter() - start)
"""


def make_checkpoint(sample: Path, path: Path, *, method: str, tile: int, width: float) -> Path:
    """A seeded, untrained model with the sample's normalisation statistics.

    ``iic``: VGG trunk of ``width``; ``kmeans``: centroids = 6 random normalised sample pixels
    (so nearly all the time is the pipeline itself, not the network).
    """
    from geoseg.checkpoint import Checkpoint, build_from_spec
    from geoseg.io.bands import BandSpec, normalize

    with rasterio.open(sample) as src:
        data = src.read().reshape(src.count, -1).astype(np.float64)
    torch.manual_seed(0)
    cfg = {"trunk": "vgg", "width": width} if method == "iic" else {"texture": False}
    spec = {"method": method, "model_cfg": cfg, "in_channels": 4, "n_clusters": [6]}
    net = build_from_spec(spec)
    norm = {
        "mean": data.mean(1).tolist(),
        "std": data.std(1).tolist(),
        "p2": np.percentile(data, 2, axis=1).tolist(),
        "p98": np.percentile(data, 98, axis=1).tolist(),
    }
    if method == "kmeans":
        pick = np.random.default_rng(0).choice(data.shape[1], 6, replace=False)
        centroids = normalize(data[:, pick].T[:, :, None, None], norm)[:, :, 0, 0]
        net.centroids.copy_(torch.from_numpy(np.asarray(centroids, np.float32)))
    bands = BandSpec.of([1, 2, 3, 4], ["red", "green", "blue", "nir"], norm)
    return Checkpoint.new(net, method=method, spec=spec, bands=bands, crop_size=tile).save(path)


def peak_rss(cmd: list[str], interval: float = 0.05) -> tuple[float, float, str]:
    """(wall s, peak RSS MiB of the process tree, stdout + stderr) of ``cmd``, by psutil polling."""
    start = time.perf_counter()
    proc = psutil.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0
    while proc.poll() is None:
        try:
            tree = [proc, *proc.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree))
        except psutil.NoSuchProcess:
            pass
        time.sleep(interval)
    out = proc.stdout.read()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {proc.returncode}")
    return time.perf_counter() - start, peak / 2**20, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=(2048, 8192))
    parser.add_argument("--tile-size", type=int, default=256)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--block-size", type=int, default=1024)
    parser.add_argument("--method", choices=("iic", "kmeans"), default="iic")
    parser.add_argument("--width", type=float, default=0.0625, help="IIC VGG width multiplier")
    parser.add_argument("--sample", type=Path, default=NAIP)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="geoseg-bench-predict-", dir="/tmp"))
    settings = [
        "--tile-size",
        str(args.tile_size),
        "--overlap",
        str(args.overlap),
        "--batch-size",
        str(args.batch_size),
        "--block-size",
        str(args.block_size),
        "--device",
        "cpu",
    ]
    try:
        ckpt = make_checkpoint(
            args.sample, work / "m.pt", method=args.method, tile=args.tile_size, width=args.width
        )
        rows = []
        for size in args.sizes:
            scene = build_scene(args.sample, work / f"scene{size}.tif", size)
            cmd = [
                "geoseg",
                "predict",
                str(scene),
                "-m",
                str(ckpt),
                "-o",
                str(work / f"out{size}"),
                *settings,
            ]
            wall, rss, out = peak_rss(cmd)
            # predict's own timing (after imports and model load), from its INFO log line
            seconds = float(re.search(r"Mpx in ([\d.]+) s", out).group(1))
            rows.append((f"geoseg predict {size}²", size, wall, seconds, rss))
        small = work / f"scene{args.sizes[0]}.tif"
        bare = [
            sys.executable,
            "-c",
            BARE_FORWARD,
            str(small),
            str(ckpt),
            str(args.tile_size),
            str(args.overlap),
            str(args.batch_size),
        ]
        wall, rss, out = peak_rss(bare)
        n_tiles, loop = out.split()[-2:]
        name = f"bare forward {args.sizes[0]}² ({n_tiles} tiles)"
        rows.append((name, args.sizes[0], wall, float(loop), rss))

        model = f"IIC VGG width {args.width}" if args.method == "iic" else "k-means"
        print(
            f"settings: {' '.join(settings)}, untrained {model}, 6 clusters, "
            f"{psutil.cpu_count()} cores"
        )
        print("\n| run | process wall s | compute s | Mpx/s (compute) | peak RSS MiB |")
        print("|---|---|---|---|---|")
        for name, size, wall_s, secs, rss_mib in rows:
            mpx = size * size / secs / 1e6
            print(f"| {name} | {wall_s:.1f} | {secs:.1f} | {mpx:.2f} | {rss_mib:.0f} |")
        ratio = rows[1][4] / rows[0][4]
        verdict = "PASS" if ratio <= 1.2 else "FAIL"
        print(f"\npeak RSS {args.sizes[1]}² / {args.sizes[0]}² = {ratio:.2f} (<= 1.2: {verdict})")
        slower = rows[0][3] / rows[2][3]
        print(f"predict / bare forward compute time on {args.sizes[0]}²: {slower:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
