"""The leave-scene-out building benchmark: truth readers, the tile draw, the forest's features,
and the JSON it writes from a real (tiny-budget) run.

pipelines/ is not a package, so the scripts are loaded from their files, as ``python`` runs them.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.features import shapes
from shapely.geometry import box, shape

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"
sys.path.insert(0, str(PIPELINES))


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, PIPELINES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bt():
    return _load("building_truth")


@pytest.fixture(scope="module")
def bench():
    return _load("benchmark_buildings")


@pytest.fixture(scope="module")
def polygons(fixtures, tmp_path_factory) -> Path:
    """The fixture's classes traced into polygons with a text column ``kind``, plus one building
    half outside the image (to be clipped) and one wholly outside (to be dropped)."""
    with rasterio.open(fixtures["rgbn"]) as src:
        bounds = src.bounds
    with rasterio.open(fixtures["labels"]) as src:
        lab, transform, crs = src.read(1), src.transform, src.crs
    names = {1: "Building", 2: "Road", 3: "Vegetation", 4: "Soil"}
    rows = [(names[int(v)], shape(g)) for g, v in shapes(lab, transform=transform)]
    x0, y1 = bounds.left, bounds.top
    rows.append(("Building", box(x0 - 2, y1 - 4, x0 + 2, y1)))  # half outside: clipped
    rows.append(("Building", box(x0 - 30, y1 + 10, x0 - 20, y1 + 20)))  # outside: dropped
    gdf = gpd.GeoDataFrame({"kind": [r[0] for r in rows]}, geometry=[r[1] for r in rows], crs=crs)
    path = tmp_path_factory.mktemp("truth") / "classes.gpkg"
    gdf.to_file(path)
    return path


def test_vector_truth_is_filtered_clipped_and_rasterised(bt, fixtures, polygons, tmp_path):
    with rasterio.open(fixtures["labels"]) as src:
        lab = src.read(1)
    scene = bt.stage(
        fixtures["rgbn"], polygons, tmp_path, bands=[1, 2, 3, 4], flt=("kind", "Building")
    )
    truth = gpd.read_file(scene.truth_path)
    with rasterio.open(fixtures["rgbn"]) as src:
        footprint = box(*src.bounds)
    assert truth.within(footprint.buffer(1e-6)).all()
    n_buildings = (gpd.read_file(polygons)["kind"] == "Building").sum()
    assert len(truth) == n_buildings - 1  # the one wholly outside is gone
    # the rasterised truth is the fixture's building class, plus the clipped corner building
    extra = scene.mask.astype(bool) & (lab != 1)
    corner = np.zeros_like(extra)
    corner[:8, :4] = True  # the inside half: 2 m × 4 m at 0.5 m pixels
    assert (scene.mask[lab == 1] == 1).all() and np.array_equal(extra, corner & (lab != 1))
    assert scene.georeferenced and scene.pixel_size == pytest.approx(0.5)
    assert scene.min_area == pytest.approx(20 * 0.25)


def test_vector_filter_mistakes_name_the_argument(bt, fixtures, polygons, tmp_path):
    with pytest.raises(bt.BadArgument, match="no column 'Niveau_2'") as err:
        bt.stage(fixtures["rgbn"], polygons, tmp_path, bands=[1], flt=("Niveau_2", "Building"))
    assert err.value.param == "--truth-filter"
    with pytest.raises(bt.BadArgument, match="values: Building, Road") as err:
        bt.stage(fixtures["rgbn"], polygons, tmp_path, bands=[1], flt=("kind", "Roof"))
    with pytest.raises(bt.BadArgument):
        bt.parse_filter("kind")


def test_mask_nodata_zero_keeps_the_background(bt, fixtures, tmp_path):
    """A {0, 1} mask that declares nodata=0 (the Quebec tiles): 0 is background, not a hole;
    a nodata other than 0 is unknown truth, never building."""
    with rasterio.open(fixtures["labels"]) as src:
        lab, profile = src.read(1), src.profile
    building = (lab == 1).astype(np.uint8)
    profile.update(count=1, dtype="uint8", nodata=0)
    path = tmp_path / "mask_nodata0.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(building, 1)
    scene = bt.stage(fixtures["rgbn"], path, tmp_path / "a", bands=[1, 2, 3, 4])
    assert np.array_equal(scene.mask, building)  # nothing unknown: 0 stayed background
    iou = bt.pixel_iou(np.zeros_like(building), scene)
    assert iou["pixels_true"] == building.sum() and iou["iou"] == 0.0

    marked = building.copy()
    marked[:, :10] = 255
    profile.update(nodata=255)
    path = tmp_path / "mask_nodata255.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(marked, 1)
    scene = bt.stage(fixtures["rgbn"], path, tmp_path / "b", bands=[1, 2, 3, 4])
    assert (scene.mask[:, :10] == bt.UNKNOWN).all()
    assert np.array_equal(scene.mask[:, 10:], building[:, 10:])


def test_png_pair_on_pixel_grid(bt, data_dir, tmp_path):
    """A non-georeferenced PNG with a class PNG: staged on the 1-unit-per-pixel grid,
    ``value=2`` keeps the building class, areas in px²."""
    image, labels = (
        data_dir / "isprs/potsdam_2_10_rgb_512.png",
        data_dir / "isprs/potsdam_2_10_label_512.png",
    )
    scene = bt.stage(image, labels, tmp_path, bands=[1, 2, 3], flt=("value", "2"))
    lab = np.asarray(Image.open(labels))
    assert np.array_equal(scene.mask, (lab == 2).astype(np.uint8))
    assert not scene.georeferenced and scene.pixel_size == 1.0 and scene.min_area == 20.0
    with rasterio.open(scene.image) as src:
        assert src.crs is not None and src.res == (1.0, 1.0) and src.count == 3
    truth = gpd.read_file(scene.truth_path)
    assert truth.area.sum() == pytest.approx((lab == 2).sum())
    # polygons in pixel coordinates (no CRS) land on the same pixels
    px = gpd.GeoDataFrame(
        geometry=[shape(g) for g, v in shapes((lab == 2).astype(np.uint8)) if v == 1]
    )
    vec = tmp_path / "px.geojson"
    px.to_file(vec)
    again = bt.stage(image, vec, tmp_path / "v", bands=[1, 2, 3])
    assert np.array_equal(again.mask, scene.mask)


def test_tile_draw(bt):
    mask = np.zeros((520, 700), np.uint8)  # 8 × 10 full tiles; the last partial ones excluded
    rng = np.random.default_rng(5)
    for r, c in rng.integers(0, 8, size=(40, 2)) * [64, 64] + [10, 20]:
        mask[r : r + 5, c : c + 5] = 1
    mask[515:, 690:] = 1  # only in partial tiles: never a candidate
    cands = bt.candidate_tiles(mask)
    assert len(cands) > 16
    assert all((mask[r : r + 64, c : c + 64] == 1).any() for r, c in cands)
    assert all(r + 64 <= 520 and c + 64 <= 700 and r % 64 == c % 64 == 0 for r, c in cands)
    draws = [bt.draw_tiles(mask, s) for s in (0, 1, 2)]
    assert all(len(d) == 16 and len(set(d)) == 16 and set(d) <= set(cands) for d in draws)
    assert draws[0] == bt.draw_tiles(mask, 0)  # seeded
    assert len({tuple(d) for d in draws}) == 3  # the three draws differ
    few = np.zeros((128, 128), np.uint8)
    few[5, 5] = 1
    assert bt.draw_tiles(few, 0) == [(0, 0)]  # fewer candidates than 16: all of them


def test_label_raster_codes(bt, fixtures, tmp_path):
    mask = np.zeros((96, 128), np.uint8)
    mask[10:20, 70:80] = 1
    mask[0, 64] = bt.UNKNOWN
    path = bt.label_raster(mask, [(0, 64)], fixtures["rgbn"], tmp_path / "labels.tif")
    with rasterio.open(path) as src:
        lab = src.read(1)
        with rasterio.open(fixtures["rgbn"]) as img:
            assert src.transform == img.transform and src.crs == img.crs
    assert (lab[:, :64] == 0).all() and (lab[64:] == 0).all()  # outside the tile: unlabelled
    assert (lab[10:20, 70:80] == 2).all() and lab[0, 64] == 0 and lab[30, 100] == 1


def test_forest_features_blockwise_equal_whole(data_dir):
    """Features of a window read with the halo equal the whole image's (no block seams)."""
    rf = _load("rf_peer")
    with rasterio.open(data_dir / "crops/vegas_mul8_uint8.tif") as src:
        stats = {"mean": [100.0] * 2, "std": [30.0] * 2, "p2": [0.0] * 2, "p98": [255.0] * 2}
        data = src.read([5, 3])
        whole = rf.features(rf.normalise(data, np.ones(data.shape[1:], bool), stats))
        part, valid = rf._window_features(src, [5, 3], stats, 30, 40, 20, 25)
    assert valid.all() and part.shape == (whole.shape[0], 20, 25)
    # reflect-mode filters see the image edge differently only within the halo of the edge
    np.testing.assert_allclose(part, whole[:, 30:50, 40:65], atol=1e-4)


def _png_crop(data_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A real 256×256 crop of the Potsdam PNG pair (georeferenced nowhere), for fast runs."""
    img = np.asarray(Image.open(data_dir / "isprs/potsdam_2_10_rgb_512.png"))[:256, :256]
    lab = np.asarray(Image.open(data_dir / "isprs/potsdam_2_10_label_512.png"))[:256, :256]
    Image.fromarray(img).save(tmp_path / "crop.png")
    Image.fromarray(lab).save(tmp_path / "crop_label.png")
    return tmp_path / "crop.png", tmp_path / "crop_label.png"


def test_json_schema_kmeans_tiny_run(bench, data_dir, tmp_path, monkeypatch, capsys):
    image, labels = _png_crop(data_dir, tmp_path)
    # pyramid_metres: a PNG trains as geoseg tile on the PNG would (no CRS, pixel scales), not
    # on its stand-in 1 m grid, so the benchmark drops the option for it
    monkeypatch.setitem(
        bench.METHODS["kmeans"], "train", ("baseline.samples=4000", "baseline.pyramid_metres=true")
    )
    out, listing = tmp_path / "run", tmp_path / "all.json"
    code = bench.main(
        [
            str(image),
            str(labels),
            "--truth-filter",
            "value=2",
            "--methods",
            "kmeans",
            "--out",
            str(out),
            "--json",
            str(listing),
        ]
    )
    assert code == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    records = json.loads(listing.read_text())
    assert printed == records and len(records) == 1
    rec = records[0]
    assert rec["method"] == "kmeans" and rec["scene"] == "crop" and rec["units"] == "px"
    assert rec["pixel_size"] == 1.0 and rec["min_area"] == 20.0 and rec["error"] is None
    assert rec["commit"] and isinstance(rec["train_s"], float)
    assert "baseline.samples=4000" in rec["budget"]["overrides"]
    assert not any("pyramid_metres" in o for o in rec["budget"]["overrides"])
    assert [d["seed"] for d in rec["draws"]] == [0, 1, 2]
    for d in rec["draws"]:
        assert set(bench.METRICS) <= set(d)
        assert d["tp"] + d["fn"] == rec["truth_polygons_scored"]
        assert 0.0 <= d["iou"] <= 1.0 and 0.0 <= d["f1"] <= 1.0
    assert rec["mean"]["f1"] == pytest.approx(np.mean([d["f1"] for d in rec["draws"]]))
    assert json.loads((out / "kmeans.json").read_text()) == rec


def test_bad_input_is_one_line_exit_2(tmp_path):
    script = PIPELINES / "benchmark_buildings.py"
    missing = subprocess.run(
        [
            sys.executable,
            str(script),
            str(tmp_path / "nope.tif"),
            "t.gpkg",
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0 and "IMAGE" in missing.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_every_method_on_vegas_crop(data_dir, tmp_path):
    """All six methods end to end (real budgets) on the 96×80 Vegas crop, as a subprocess."""
    crop = data_dir / "crops/vegas_mul8_uint8.tif"
    with rasterio.open(crop) as src:
        t, crs = src.transform, src.crs
    # buildings: the brightest blobs of the crop stand in for footprints (scoring plumbing only)
    polys = [box(*(t * (c, r)), *(t * (c + 12, r + 12))) for r, c in ((5, 5), (40, 60))]
    truth = tmp_path / "t.geojson"
    gpd.GeoDataFrame(geometry=polys, crs=crs).to_file(truth)
    out = subprocess.run(
        [
            sys.executable,
            str(PIPELINES / "benchmark_buildings.py"),
            str(crop),
            str(truth),
            "--bands",
            "5,3,2,7",
            "--out",
            str(tmp_path / "o"),
            "--json",
            str(tmp_path / "a.json"),
        ],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    recs = json.loads((tmp_path / "a.json").read_text())
    assert [r["method"] for r in recs] == ["kmeans", "kanezaki", "iic", "ac", "rf", "default"]
    assert all(r["error"] is None for r in recs), [r["error"] for r in recs]


def _record(method: str, f1s: list[float], error: str | None = None) -> dict:
    draws = [
        {"seed": s, "f1": f, "precision": f, "recall": f, "iou": f, "tp": 1, "fp": 1, "fn": 1}
        for s, f in enumerate(f1s)
    ]
    mean = {
        k: (float(np.mean([d[k] for d in draws])) if draws else None)
        for k in ("f1", "precision", "recall", "iou", "tp", "fp", "fn")
    }
    return {
        "method": method,
        "draws": draws,
        "mean": mean,
        "error": error,
        "commit": "abc",
        "pixel_size": 0.5,
        "units": "m",
        "train_s": 1.0,
        "predict_s": 1.0,
        "wall_s": 3.0,
        "budget": {"train_method": method, "overrides": []},
        "load_avg": 1.0,
    }


def test_report_section_and_chart(tmp_path):
    """The table's mean-over-scenes row counts a failed method as 0, leaves the recall-only
    scene out; the section is replaced between its markers and the rest of the file is kept."""
    report = _load("benchmark_buildings_all")
    rows = {
        "a": {"kmeans": _record("kmeans", [0.1, 0.2, 0.3]), "rf": _record("rf", [0.5] * 3)},
        "b": {"kmeans": _record("kmeans", [], error="boom"), "rf": _record("rf", [0.3] * 3)},
        "rio": {"kmeans": _record("kmeans", [0.9] * 3)},
    }
    text = report.markdown(rows, ["kmeans", "rf"], "chart.png")
    f1_table = text.split("### SpaceNet F1")[1].split("###")[0]
    assert "| a | 0.20 (0.10–0.30) | 0.50 (0.50–0.50) |" in f1_table
    assert "| b | error | 0.30 (0.30–0.30) |" in f1_table
    assert "**0.100** (2) | **0.400** (2)" in f1_table  # kmeans: (0.2 + 0) / 2
    assert "| rio |" not in f1_table and "### Recall only" in text
    results = tmp_path / "results.md"
    results.write_text("# Results\n\n## Other\n\nkept\n")
    report.write_section(results, text)
    report.write_section(results, text.replace("0.20 (0.10–0.30)", "X"))
    body = results.read_text()
    assert body.count(report.START) == 1 and "kept" in body and "| a | X |" in body
    report.chart(rows, ["kmeans", "rf"], tmp_path / "f1.png")
    assert Image.open(tmp_path / "f1.png").size[0] >= 620


def test_mask_on_another_grid_is_resampled(bt, fixtures, tmp_path):
    """A mask at twice the pixel size (same CRS and origin) lands on the image grid, nearest."""
    coarse = np.zeros((48, 64), np.uint8)
    coarse[10:20, 30:40] = 1
    with rasterio.open(fixtures["rgbn"]) as src:
        crs, t = src.crs, src.transform
    path = tmp_path / "coarse.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=64,
        height=48,
        count=1,
        dtype="uint8",
        crs=crs,
        transform=t * t.scale(2, 2),
    ) as dst:
        dst.write(coarse, 1)
    scene = bt.stage(fixtures["rgbn"], path, tmp_path / "s", bands=[1, 2, 3, 4])
    assert np.array_equal(scene.mask, np.kron(coarse, np.ones((2, 2), np.uint8)))
