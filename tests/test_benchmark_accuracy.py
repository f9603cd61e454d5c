"""The accuracy benchmark's core on the generated fixture: a real chain with a 2-step budget.

pipelines/ is not a package, so the script is loaded from its file, as ``python`` would run it.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.features import shapes
from shapely.geometry import shape

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, PIPELINES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _load("benchmark_accuracy")


@pytest.fixture(scope="module")
def report():
    return _load("accuracy_report")


@pytest.fixture(scope="module")
def footprints(fixtures, tmp_path_factory) -> Path:
    """The fixture's building label (1) traced into polygons, as a SpaceNet-like GeoJSON."""
    with rasterio.open(fixtures["labels"]) as src:
        lab, transform, crs = src.read(1), src.transform, src.crs
    polys = [shape(g) for g, v in shapes(lab, mask=lab == 1, transform=transform) if v == 1]
    path = tmp_path_factory.mktemp("truth") / "buildings.geojson"
    gpd.GeoDataFrame(geometry=polys, crs=crs).to_file(path)
    return path


def test_footprint_row_kmeans_finds_buildings(bench, fixtures, footprints, tmp_path):
    scene = bench.Scene(fixtures["rgbn"], footprints, "footprints")
    row = bench.run_row("fixture", scene, "kmeans", tmp_path, steps={})
    n_truth = len(gpd.read_file(footprints))
    # the synthetic roofs have their own colour, so the few-tile mapping must name buildings
    assert row["building_clusters"]
    assert row["building_iou"] > 0.5
    assert row["tp"] + row["fn"] == n_truth
    assert row["map_tiles"] >= 1 and row["clusters_used"] <= 6
    assert row["train_cpu_s"] >= 0 and row["steps"] == 0
    json.dumps(row)  # the cache must be able to hold it


def test_dense_row_iic_two_steps(bench, fixtures, tmp_path):
    scene = bench.Scene(fixtures["rgbn"], fixtures["labels"], "dense")
    row = bench.run_row("fixture", scene, "iic", tmp_path, steps={"iic": 2})
    assert row["steps"] == 2
    for key in ("hungarian6", "many_to_one6", "hungarian3", "many_to_one3", "mapped_accuracy6"):
        assert 0.0 <= row[key] <= 1.0, key
    # many-to-one can never be below one-to-one on the same confusion matrix
    assert row["many_to_one6"] >= row["hungarian6"]
    with rasterio.open(fixtures["labels"]) as src:
        assert row["labelled_pixels"] == int(np.count_nonzero(src.read(1)))


def test_section_replaces_only_between_markers(report, tmp_path):
    path = tmp_path / "results.md"
    path.write_text("# Results\n\n## Training results\n\nkeep me\n")
    report.write_section(path, "first")
    report.write_section(path, "second")
    text = path.read_text()
    assert "keep me" in text and "second" in text and "first" not in text
    assert text.count(report.START) == 1 and text.count(report.END) == 1
    # the heading sits outside the markers, so a "## "-delimited section before it stays whole
    assert text.index(report.HEADING) < text.index(report.START)


def test_cache_merges_rows_in_table_order(bench, tmp_path):
    for scene, method in (("vegas", "iic"), ("vegas", "kmeans"), ("nowhere", "kmeans")):
        row = {"scene": scene, "method": method}
        (tmp_path / f"{scene}__{method}.json").write_text(json.dumps(row))
    rows = bench.cached_rows(tmp_path)
    assert [(r["scene"], r["method"]) for r in rows] == [("vegas", "kmeans"), ("vegas", "iic")]


def test_report_names_scenes_where_nothing_is_found(bench, report):
    env = {"commit": "abc1234", "machine": "2 CPU cores, load average 3.0, 2.0, 1.0 at start"}
    base = {
        "steps": 0,
        "train_wall_s": 2.0,
        "train_cpu_s": 1.0,
        "eval_wall_s": 1.0,
        "env": env,
        "clusters_used": 6,
        "overrides": ["schedule.steps=7"],
    }
    foot = {
        "kind": "footprints",
        "building_iou": 0.0,
        "best_cluster_iou": 0.1,
        "precision": 0.0,
        "recall": 0.0,
        "tp": 0,
        "fp": 0,
        "fn": 9,
    }
    dense = {
        "kind": "dense",
        "hungarian6": 0.5,
        "many_to_one6": 0.7,
        "hungarian3": 0.6,
        "many_to_one3": 0.8,
        "mapped_accuracy6": 0.65,
    }
    rows = [
        {**base, **foot, "scene": "atlanta", "method": "kmeans", "f1": 0.0},
        {**base, **foot, "scene": "atlanta", "method": "iic", "f1": 0.0},
        {**base, **dense, "scene": "potsdam", "method": "kmeans"},
        {**base, **dense, "scene": "potsdam", "method": "iic", "hungarian6": 0.6},
    ]
    text = report.markdown(rows, "python pipelines/benchmark_accuracy.py", bench.SETTINGS)
    assert "No method finds a building (F1 0) on atlanta" in text
    assert "IIC or AC beat the better baseline (k-means, Kanezaki) on 1 of 1 scenes" in text
    assert "IIC and AC 7 optimiser steps" in text
    assert text.count("| potsdam |") == 2 and text.count("| atlanta |") == 2
