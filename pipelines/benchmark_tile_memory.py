"""Peak memory and wall time of ``geoseg tile`` on an 8192×8192 4-band scene.

Builds the scene by mosaicking the real NAIP RGBN sample (mirrored copies, so edges match)
into a temporary GeoTIFF under /tmp (not committed), then runs, as separate processes:

1. a bare windowed rasterio read of every 256×256 window (the floor any tiler pays), and
2. ``geoseg -q tile scene.tif -o store.zarr`` (scan + write passes, dask threads),

recording each process's peak RSS from the kernel (``os.wait4`` rusage, ``ru_maxrss``) and
wall time. DESIGN.md requires memory bounded by the block, never the scene: the scene is
256 MiB of pixels, the budget is 1 GB. Run: ``python pipelines/benchmark_tile_memory.py``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

NAIP = (
    Path(__file__).resolve().parents[1].parent
    / "shared/data/naip-rgbn-5m/m_4709963_se_14_1_20200831.tif"
)

BARE_READ = """
import sys, rasterio
from rasterio.windows import Window
with rasterio.open(sys.argv[1]) as src:
    for row in range(0, src.height, 224):
        for col in range(0, src.width, 224):
            src.read(window=Window(col, row, 256, 256), boundless=False)
"""


def build_scene(sample: Path, out: Path, size: int) -> Path:
    """Mosaic ``sample`` (mirrored tiles) into a ``size``×``size`` tiled GeoTIFF, strip by strip."""
    with rasterio.open(sample) as src:
        data = src.read()
        profile = src.profile.copy()
    mirror = np.concatenate([data, data[:, ::-1]], axis=1)
    mirror = np.concatenate([mirror, mirror[:, :, ::-1]], axis=2)
    _, mh, mw = mirror.shape
    profile.update(
        width=size,
        height=size,
        tiled=True,
        blockxsize=512,
        blockysize=512,
        compress="lzw",
        nodata=None,
    )
    with rasterio.open(out, "w", **profile) as dst:
        for row in range(0, size, 512):
            rows = (np.arange(row, min(row + 512, size)) % mh)[:, None]
            cols = np.arange(size) % mw
            dst.write(mirror[:, rows, cols], window=Window(0, row, size, rows.shape[0]))
    return out


def measure(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of a child process, from the kernel's rusage."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {proc.returncode}")
    return wall, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--sample", type=Path, default=NAIP)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="geoseg-bench-", dir="/tmp"))
    try:
        scene = build_scene(args.sample, work / "scene.tif", args.size)
        mib = args.size * args.size * 4 / 2**20
        print(f"scene: {scene} {args.size}x{args.size}x4 uint8 ({mib:.0f} MiB of pixels)")
        rows = [
            ("bare windowed rasterio read", measure([sys.executable, "-c", BARE_READ, str(scene)])),
            (
                "geoseg tile (256 px, overlap 32)",
                measure(["geoseg", "-q", "tile", str(scene), "-o", str(work / "s.zarr")]),
            ),
        ]
        print("\n| step | wall s | peak RSS MiB |\n|---|---|---|")
        for name, (wall, rss) in rows:
            print(f"| {name} | {wall:.1f} | {rss:.0f} |")
        peak = rows[1][1][1]
        verdict = "within" if peak < 1024 else "OVER"
        print(f"\ngeoseg tile peak RSS {peak:.0f} MiB: {verdict} the 1 GB budget")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
