"""Helpers of the reliability suite (tests/test_reliability_*.py): run the real CLI, write
tiny real rasters, build small models through the CLI itself.

The suite drives ``geoseg`` through :func:`geoseg.cli.main` (the console entry point, so the
exit-code convention is what is tested), in-process where a signal is not needed: importing
torch once per test module keeps each test at seconds on the 2-core machine.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import ColorInterp
from rasterio.transform import from_origin

REPO = Path(__file__).resolve().parents[1]
CROPS = Path(__file__).parent / "data" / "crops"


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        """Non-empty stderr lines (the one-line convention: exactly one on a refusal)."""
        return [line for line in self.err.splitlines() if line.strip()]


def geoseg(*args, quiet: bool = True) -> Result:
    """Run ``geoseg ARGS`` in this process through the console entry point."""
    from geoseg.cli import main

    out, err = io.StringIO(), io.StringIO()
    code: int = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main((["-q"] if quiet else []) + [str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return Result(code, out.getvalue(), err.getvalue())


def assert_refused(result: Result, *needles: str, code: int = 2) -> None:
    """Exit ``code`` with one ``Error:`` line that contains every needle (case-insensitive)."""
    assert result.code == code, (result.code, result.err, result.out)
    assert len(result.lines) == 1, result.err
    line = result.lines[0]
    assert line.startswith("Error: "), line
    assert "Traceback" not in result.err
    for needle in needles:
        assert needle.lower() in line.lower(), (needle, line)


def _default_sigint() -> None:
    # A test run started in the background by a shell without job control inherits SIGINT as
    # ignored, and Python then installs no KeyboardInterrupt handler: give the child the
    # default disposition a user's terminal gives it, so Ctrl-C tests test geoseg, not the shell.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def spawn(*args, env: dict | None = None, **kw) -> subprocess.Popen:
    """Start ``python -m geoseg ARGS`` as a real process (for signals and concurrency)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "geoseg", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
        preexec_fn=_default_sigint,
        **kw,
    )


def wait_for(predicate, timeout: float = 60.0, every: float = 0.02) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds passed."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(every)
    return False


def write_raster(
    path: Path,
    data: np.ndarray,
    *,
    crs: str | None = "EPSG:32611",
    transform=None,
    nodata=None,
    descriptions=None,
    colorinterp=None,
    **profile,
) -> Path:
    """A real GeoTIFF of ``data`` (C, H, W), with optional descriptions / colour interpretation."""
    count, height, width = data.shape
    opts = dict(
        driver="GTiff",
        width=width,
        height=height,
        count=count,
        dtype=data.dtype.name,
        crs=crs,
        transform=transform or from_origin(500000.0, 4000000.0, 0.5, 0.5),
        nodata=nodata,
    )
    opts.update(profile)
    with rasterio.open(path, "w", **opts) as dst:
        dst.write(data)
        if descriptions:
            for i, d in enumerate(descriptions, start=1):
                dst.set_band_description(i, d)
        if colorinterp:
            dst.colorinterp = [getattr(ColorInterp, c) for c in colorinterp]
    return Path(path)


def read(path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def train_kmeans(inputs, workdir: Path, *tile_args, k: int = 4, tile_size: int = 64) -> Path:
    """Tile ``inputs`` and fit k-means on them through the CLI; the run's best.pt."""
    workdir.mkdir(parents=True, exist_ok=True)
    store = workdir / "store.zarr"
    r = geoseg("tile", *inputs, "-o", store, "--tile-size", tile_size, "--overlap", 16, *tile_args)
    assert r.code == 0, r.err
    r = geoseg(
        "train", store, "-o", workdir / "run", "--method", "kmeans", "--set", f"n_clusters={k}"
    )
    assert r.code == 0, r.err
    return workdir / "run" / "best.pt"


def tiny_training(**changes) -> tuple[str, ...]:
    """``key=value`` overrides for the smallest IIC run that still passes every stage of the
    loop (evaluation, checkpoints, quicklooks); ``changes`` replace or add keys (dots as
    double underscores: ``data__crop_size=48``)."""
    base = {
        "n_clusters": 4,
        "n_over_clusters": 0,
        "data.crop_size": 32,
        "data.batch_size": 2,
        "data.quicklook_tiles": 1,
        "model.width": 0.125,
        "loss.displacement": 1,
        "schedule.eval_batches": 1,
        "schedule.log_every": 1,
        "schedule.steps_per_epoch": 100,
    }
    base.update({k.replace("__", "."): v for k, v in changes.items()})
    return tuple(f"{k}={v}" for k, v in base.items())
