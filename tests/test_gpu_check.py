"""pipelines/gpu_check.py end to end on CPU: a few seconds of the GPU recipe (narrowed) on a real
256² crop of the ISPRS Potsdam sample, scored with the building benchmark's protocol."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "pipelines" / "gpu_check.py"


def _write(path: Path, data: np.ndarray, **extra) -> Path:
    count = 1 if data.ndim == 2 else data.shape[0]
    profile = dict(
        driver="GTiff",
        width=data.shape[-1],
        height=data.shape[-2],
        count=count,
        dtype=data.dtype.name,
        **extra,
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data if data.ndim == 3 else data[None])
    return path


@pytest.fixture(scope="module")
def scene(data_dir, tmp_path_factory):
    """Potsdam's top-left 256²: RGB image and a building mask (class 2 → 1, ignore 0 → nodata),
    as benchmark_buildings_all.py stages the Potsdam crop."""
    folder = tmp_path_factory.mktemp("gpu_check_scene")
    rgb = np.asarray(Image.open(data_dir / "isprs" / "potsdam_2_10_rgb_512.png"))[:256, :256]
    lab = np.asarray(Image.open(data_dir / "isprs" / "potsdam_2_10_label_512.png"))[:256, :256]
    mask = np.where(lab == 0, 255, lab == 2).astype(np.uint8)
    assert (mask == 1).any()
    image = _write(folder / "potsdam256.tif", np.ascontiguousarray(rgb.transpose(2, 0, 1)))
    truth = _write(folder / "potsdam256_mask.tif", mask, nodata=255)
    return image, truth


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600, cwd=ROOT
    )


def test_gpu_check_runs_end_to_end_on_cpu(scene, tmp_path):
    image, truth = scene
    out, report_path = tmp_path / "out", tmp_path / "report.json"
    done = _run(
        "--budget-min",
        "0.05",
        "--device",
        "cpu",
        "--image",
        str(image),
        "--truth",
        str(truth),
        "--width",
        "0.125",
        "--crop",
        "64",
        "--batch",
        "4",
        "--draws",
        "1",
        "--out",
        str(out),
        "--json",
        str(report_path),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert json.loads((out / "gpu_check.json").read_text()) == report
    for key in (
        "device",
        "card",
        "torch",
        "budget_min",
        "recipe",
        "install",
        "steps",
        "steps_per_s",
        "crops_per_s",
        "data_stall",
        "peak_gpu_memory_bytes",
        "peak_rss_bytes",
        "f1",
        "iou",
        "scenes",
        "commit",
        "wall_s",
    ):
        assert key in report, key
    assert report["device"] == "cpu" and report["peak_gpu_memory_bytes"] is None
    assert "model.width=1.0" in report["recipe"]  # the GPU recipe, narrowed by --width here
    assert report["recipe"][-3:] == ["model.width=0.125", "data.crop_size=64", "data.batch_size=4"]
    (rec,) = report["scenes"]
    train = rec["train"]
    # 3 s of budget: at least one step, stopped by the clock, 4 crops a step
    assert report["steps"] == train["steps"] >= 1 and train["stopped"] == "time"
    assert train["crops"] == 4 * train["steps"]
    assert report["steps_per_s"] > 0 and report["crops_per_s"] == pytest.approx(
        4 * report["steps_per_s"], rel=0.01
    )
    assert 0 <= report["data_stall"] < 1 and train["wait_seconds"] <= train["step_seconds"]
    assert 200 * 2**20 < report["peak_rss_bytes"] < 8 * 2**30  # torch is loaded; nothing leaks
    # the benchmark's protocol scored one draw of labelled tiles (all 5 that hold a building
    # in this crop; 16 in a larger scene)
    (draw,) = rec["draws"]
    assert draw["seed"] == 0 and draw["tiles"] == 5
    assert 0 <= report["f1"] <= 1 and 0 <= report["iou"] <= 1
    assert report["iou"] == pytest.approx(draw["iou"], abs=1e-4)
    assert Path(rec["checkpoint"]).is_file() and rec["checkpoint"].endswith("potsdam256.pt")
    import torch

    ckpt = torch.load(rec["checkpoint"], weights_only=True)
    assert ckpt["method"] == "iic" and ckpt["step"] == train["steps"]


def test_gpu_check_bad_input_exits_2_with_one_line(tmp_path):
    for args, needle in (
        (["--budget-min", "0"], "--budget-min"),
        (["--scenes", "atlantis"], "--scenes"),
        (["--draws", "5"], "--draws"),
        (["--image", str(tmp_path / "none.tif")], "--image"),
    ):
        done = _run(*args, "--out", str(tmp_path / "o"), "--data", str(tmp_path))
        assert done.returncode == 2, (args, done.stderr)
        assert needle in done.stderr and done.stderr.strip().count("\n") == 0, done.stderr
    assert not (tmp_path / "o").exists()
