"""The README's first command: ``geoseg demo`` runs the whole chain and prints a score."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import rasterio
import yaml

from geoseg.demo import BUILDINGS_CONFIG, SMOKE_CONFIG
from geoseg.heads.fit import MIN_BUILDING_M2

ROOT = Path(__file__).parents[1]


def test_demo_config_is_the_cpu_smoke_config():
    assert yaml.safe_load((ROOT / "configs" / "cpu_smoke.yaml").read_text()) == SMOKE_CONFIG


def test_demo_config_is_the_buildings_config():
    assert yaml.safe_load((ROOT / "configs" / "buildings.yaml").read_text()) == BUILDINGS_CONFIG


def test_demo_runs_end_to_end_and_prints_the_score(tmp_path):
    out = tmp_path / "demo"
    steps = ["--set", "schedule.steps=6", "--set", "schedule.eval_every=3"]
    run = subprocess.run(
        [sys.executable, "-m", "geoseg", "-q", "demo", "-o", str(out), *steps],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "precision" in run.stdout and "recall" in run.stdout and "F1" in run.stdout
    stem = "MUL-PanSharpen_AOI_2_Vegas_img2144_uint8"
    for name in (
        f"{stem}_clusters.tif",
        f"{stem}_clusters.qml",
        f"{stem}_buildings.gpkg",
        f"{stem}_buildings.qml",
        "quicklook.png",
        "score_layers.gpkg",
        "run/best.pt",
        "run/metrics.csv",
    ):
        assert (out / name).exists(), name
    # no speck polygons and no road-network "building": the largest true footprint of the
    # scene is ~1,100 m² (labels.geojson), the road network that once came out was 3,525 m²
    polys = gpd.read_file(out / f"{stem}_buildings.gpkg")
    assert len(polys) > 5
    assert polys["area_m2"].min() >= MIN_BUILDING_M2
    assert polys["area_m2"].max() < 2500
    with rasterio.open(out / f"{stem}_clusters.tif") as src:
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert (src.width, src.height) == (500, 650)

    again = subprocess.run(
        [sys.executable, "-m", "geoseg", "demo", "-o", str(out)], capture_output=True, text=True
    )
    assert again.returncode == 2 and "--overwrite" in again.stderr
