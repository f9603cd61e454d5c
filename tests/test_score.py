"""SpaceNet building F1 (`geoseg score`): reference files, hand-made edge cases, CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely
from click.testing import CliRunner
from shapely.geometry import box

from geoseg.cli import group
from geoseg.errors import BadInput, GeoSegError
from geoseg.evaluate import score
from geoseg.evaluate.polygons import aoi_name
from geoseg.evaluate.spacenet import match_greedy, prf

SQUARE = box(0, 0, 10, 10)


def exit_code(result) -> int:
    """The exit code ``geoseg`` would give: CliRunner leaves GeoSegErrors to ``cli.main``."""
    if isinstance(result.exception, GeoSegError):
        return result.exception.exit_code
    return result.exit_code


def write_csv(path, rows, *, confidence=True):
    """rows: (image_id, wkt[, confidence]) → a SpaceNet CSV."""
    records = []
    for i, row in enumerate(rows):
        rec = {"ImageId": row[0], "BuildingId": i, "PolygonWKT_Pix": row[1]}
        if confidence:
            rec["Confidence"] = row[2] if len(row) > 2 else 1.0
        records.append(rec)
    pd.DataFrame(records).to_csv(path, index=False)
    return path


# --- reference data ----------------------------------------------------------------------------


def test_solaris_geojson_pair(data_dir):
    r = score(data_dir / "scoring/pred.geojson", data_dir / "scoring/gt.geojson", min_area=0)
    assert (r.total["tp"], r.total["fp"], r.total["fn"]) == (8, 20, 20)
    assert r.total["f1"] == 0.2857142857142857
    assert r.total["precision"] == r.total["recall"] == r.total["f1"]


def test_competition_csv_pair_matches_expected(data_dir):
    d = data_dir / "scoring"
    expected = pd.read_csv(d / "competition_expected_results.csv").iloc[0]
    r = score(d / "sample_preds_competition.csv", d / "sample_truth_competition.csv")
    assert r.total["tp"] == expected["TruePos"] == 2319
    assert r.total["fp"] == expected["FalsePos"]
    assert r.total["fn"] == expected["FalseNeg"]
    assert r.total["f1"] == expected["F1Score"]
    # per image: every truth building of the image found, nothing else
    truth = pd.read_csv(d / "sample_truth_competition.csv")
    areas = shapely.area(shapely.from_wkt(truth["PolygonWKT_Pix"]))
    kept = truth[areas >= 20].groupby("ImageId").size()
    per_image = r.per_image.set_index("image_id")
    assert (per_image.loc[kept.index, "tp"] == kept).all()
    assert (per_image[["fp", "fn"]] == 0).all().all()
    assert set(r.per_aoi["aoi"]) == {"Atlanta_nadir8_catid_10300100023BC100"}


def test_min_area_drops_small_truth_and_proposals(tmp_path):
    small = box(0, 0, 4, 5)  # 20 px²: truth kept (>=), proposal dropped (>)
    truth = write_csv(tmp_path / "t.csv", [("img", small.wkt)], confidence=False)
    pred = write_csv(tmp_path / "p.csv", [("img", small.wkt)])
    r = score(pred, truth, min_area=20)
    assert (r.total["tp"], r.total["fp"], r.total["fn"]) == (0, 0, 1)
    r = score(pred, truth, min_area=19.9)
    assert (r.total["tp"], r.total["fp"], r.total["fn"]) == (1, 0, 0)


# --- hand-made cases ---------------------------------------------------------------------------


def test_iou_exactly_half_is_false_positive(tmp_path):
    truth = write_csv(tmp_path / "t.csv", [("img", SQUARE.wkt)], confidence=False)
    pred = write_csv(tmp_path / "p.csv", [("img", box(0, 0, 10, 5).wkt)])
    r = score(pred, truth, min_area=0)
    assert (r.total["tp"], r.total["fp"], r.total["fn"]) == (0, 1, 1)
    assert r.proposals["iou"].iloc[0] == 0.5
    assert score(pred, truth, min_area=0, iou_threshold=0.49).total["tp"] == 1


def test_higher_confidence_proposal_wins_even_with_lower_iou(tmp_path):
    truth = write_csv(tmp_path / "t.csv", [("img", SQUARE.wkt)], confidence=False)
    close = box(0, 0, 10, 9)  # IoU 0.9, less confident
    loose = box(0, 0, 10, 7)  # IoU 0.7, more confident: visited first, takes the building
    pred = write_csv(tmp_path / "p.csv", [("img", close.wkt, 0.4), ("img", loose.wkt, 0.8)])
    r = score(pred, truth, min_area=0)
    assert (r.total["tp"], r.total["fp"], r.total["fn"]) == (1, 1, 0)
    status = dict(zip(r.proposals["confidence"], r.proposals["status"], strict=True))
    assert status == {0.8: "tp", 0.4: "fp"}
    winner = r.proposals[r.proposals["status"] == "tp"]
    assert winner["truth_id"].tolist() == r.truth["truth_id"].tolist() == [0]
    assert r.truth["status"].tolist() == ["tp"]


def test_proposal_takes_best_unmatched_truth():
    truth = [box(0, 0, 10, 10), box(9, 0, 19, 10)]
    props = [box(1, 0, 11, 10), box(0, 0, 10, 10)]
    # the confident proposal overlaps both and takes the first (IoU 0.82 vs 0.11); the second
    # then finds its best truth taken and the remaining one below the threshold (IoU 0.05)
    matched, best = match_greedy(np.array(props), np.array([0.9, 0.5]), np.array(truth))
    assert matched.tolist() == [0, -1]
    assert best[0] == pytest.approx(90 / 110)
    # with no threshold the leftover pair counts, and its exact IoU is reported
    matched, best = match_greedy(
        np.array(props), np.array([0.9, 0.5]), np.array(truth), iou_threshold=0.0
    )
    assert matched.tolist() == [0, 1]
    assert best[1] == pytest.approx(10 / 190)


def test_bow_tie_proposal_is_repaired_and_scored(tmp_path):
    bow_tie = shapely.from_wkt("POLYGON ((0 0, 10 10, 10 0, 0 10, 0 0))")
    assert not bow_tie.is_valid
    repaired = shapely.buffer(bow_tie, 0)
    truth = write_csv(tmp_path / "t.csv", [("img", repaired.wkt)], confidence=False)
    pred = write_csv(tmp_path / "p.csv", [("img", bow_tie.wkt)])
    r = score(pred, truth, min_area=0)
    assert (r.total["tp"], r.total["fp"], r.total["fn"]) == (1, 0, 0)
    assert r.proposals.geometry.iloc[0].is_valid


def test_empty_image_scores_zero_counts_and_f1_one(tmp_path):
    truth = write_csv(
        tmp_path / "t.csv",
        [("AOI_2_Vegas_img1", SQUARE.wkt), ("AOI_2_Vegas_img2", "POLYGON EMPTY")],
        confidence=False,
    )
    pred = write_csv(tmp_path / "p.csv", [("AOI_2_Vegas_img1", SQUARE.wkt)])
    r = score(pred, truth, min_area=0)
    empty = r.per_image.set_index("image_id").loc["AOI_2_Vegas_img2"]
    assert (empty.tp, empty.fp, empty.fn) == (0, 0, 0)
    assert empty.f1 == empty.precision == empty.recall == 1.0
    assert r.total["images"] == 2
    assert r.per_aoi["aoi"].tolist() == ["AOI_2_Vegas"]


def test_proposals_on_image_without_buildings_are_false_positives(tmp_path):
    truth = write_csv(tmp_path / "t.csv", [("a_1_2", "POLYGON EMPTY")], confidence=False)
    pred = write_csv(tmp_path / "p.csv", [("a_1_2", SQUARE.wkt)])
    r = score(pred, truth, min_area=0)
    assert (r.total["tp"], r.total["fp"], r.total["fn"], r.total["f1"]) == (0, 1, 0, 0.0)


def test_different_crs_scores_as_if_reprojected(tmp_path):
    origin = (500000.0, 4000000.0)
    truth = gpd.GeoDataFrame(
        geometry=[
            box(origin[0] + 20 * i, origin[1], origin[0] + 20 * i + 10, origin[1] + 10)
            for i in range(4)
        ],
        crs="EPSG:32611",
    )
    # shifted 2, 4, 6 and 0 m: IoU 0.67, 0.43, 0.25, 1.0
    shifts = [2, 4, 6, 0]
    pred = gpd.GeoDataFrame(
        {"conf": [1.0] * 4},
        geometry=[
            shapely.affinity.translate(g, s) for g, s in zip(truth.geometry, shifts, strict=True)
        ],
        crs="EPSG:32611",
    )
    truth.to_file(tmp_path / "truth.gpkg")
    pred.to_file(tmp_path / "pred_utm.geojson")
    pred.to_crs("EPSG:4326").to_file(tmp_path / "pred_wgs84.geojson")
    same = score(tmp_path / "pred_utm.geojson", tmp_path / "truth.gpkg", min_area=0)
    other = score(tmp_path / "pred_wgs84.geojson", tmp_path / "truth.gpkg", min_area=0)
    assert (other.total["tp"], other.total["fp"], other.total["fn"]) == (2, 2, 2)
    assert other.total == same.total
    assert other.proposals["iou"].to_numpy() == pytest.approx(same.proposals["iou"], abs=1e-6)
    assert other.proposals.crs == truth.crs  # outputs come back in the truth's CRS


def test_filters_select_buildings(data_dir):
    labels = data_dir.parent.parent / "geoseg/data/vegas_img2144/labels.geojson"
    frame = gpd.read_file(labels)
    r = score(labels, labels, min_area=0, pred_filter="label=1", truth_filter="label=1")
    n_buildings = int((frame["label"] == 1).sum())
    assert (r.total["tp"], r.total["fp"], r.total["fn"]) == (n_buildings, 0, 0)
    with pytest.raises(BadInput, match="no column"):
        score(labels, labels, truth_filter="nope=1")


def test_aoi_names():
    assert aoi_name("AOI_2_Vegas_img2144") == "AOI_2_Vegas"
    assert aoi_name("Atlanta_nadir8_catid_10300100023BC100_743501_3728739") == (
        "Atlanta_nadir8_catid_10300100023BC100"
    )
    assert aoi_name("scene") == "scene"


def test_prf_definitions():
    assert prf(0, 0, 0) == (1.0, 1.0, 1.0)
    assert prf(0, 3, 0) == (0.0, 0.0, 0.0)
    assert prf(2, 1, 1)[2] == 2 * 2 / (2 * 2 + 1 + 1)


# --- CLI ---------------------------------------------------------------------------------------


def test_cli_table_json_csv_layers(data_dir, tmp_path):
    d = data_dir / "scoring"
    out = tmp_path / "errors.gpkg"
    args = [
        "score",
        str(d / "pred.geojson"),
        str(d / "gt.geojson"),
        "--min-area",
        "0",
        "--json",
        str(tmp_path / "s.json"),
        "--csv",
        str(tmp_path / "s.csv"),
        "--layers",
        str(out),
    ]
    res = CliRunner().invoke(group, args)
    assert res.exit_code == 0, res.output
    assert "TOTAL" in res.output and "0.2857142857142857" in res.output
    assert json.loads((tmp_path / "s.json").read_text())["total"]["tp"] == 8
    assert pd.read_csv(tmp_path / "s.csv")["fn"].sum() == 20
    layers = dict(pyogrio.list_layers(out))
    # the QGIS styles of the three layers live in the GeoPackage's layer_styles table
    assert set(layers) == {"tp", "fp", "fn", "layer_styles"}
    counts = {name: len(gpd.read_file(out, layer=name)) for name in ("tp", "fp", "fn")}
    assert counts == {"tp": 8, "fp": 20, "fn": 20}
    assert gpd.read_file(out, layer="fn").crs.to_epsg() == 32616
    # outputs exist now: refused without --overwrite, replaced with it
    res = CliRunner().invoke(group, args)
    assert exit_code(res) == 2 and "--overwrite" in str(res.exception)
    assert CliRunner().invoke(group, [*args, "--overwrite"]).exit_code == 0


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--iou", "1.5"], "--iou"),
        (["--min-area", "-1"], "--min-area"),
        (["--truth-filter", "label"], "--truth-filter"),
    ],
)
def test_cli_bad_options_exit_2(data_dir, extra, message):
    d = data_dir / "scoring"
    res = CliRunner().invoke(
        group, ["score", str(d / "pred.geojson"), str(d / "gt.geojson"), *extra]
    )
    assert exit_code(res) == 2
    assert message in str(res.exception)


def test_cli_refuses_pixel_csv_against_geojson(data_dir):
    d = data_dir / "scoring"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "geoseg",
            "score",
            str(d / "sample_preds_competition.csv"),
            str(d / "gt.geojson"),
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1 and "pixel" in res.stderr


@pytest.mark.parametrize("stdout", [["--json"], ["--json", "-"]])
def test_cli_json_to_stdout(data_dir, stdout):
    d = data_dir / "scoring"
    res = subprocess.run(
        [
            "geoseg",
            "-q",
            "score",
            str(d / "sample_preds_competition.csv"),
            str(d / "sample_truth_competition.csv"),
            *stdout,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(res.stdout)["total"]["tp"] == 2319


@pytest.mark.parametrize("suffix", [".gpkg", ".fgb", ".parquet", ".geojson"])
def test_vector_formats_read_alike(data_dir, tmp_path, suffix):
    pred = gpd.read_file(data_dir / "scoring/pred.geojson")
    path = tmp_path / f"pred{suffix}"
    if suffix == ".parquet":
        pred.to_parquet(path)
    else:
        pred.to_file(path)
    r = score(path, data_dir / "scoring/gt.geojson", min_area=0)
    assert (r.total["tp"], r.total["fp"], r.total["fn"]) == (8, 20, 20)


def test_no_proposals_gives_all_false_negatives(data_dir, tmp_path):
    truth = gpd.read_file(data_dir / "scoring/gt.geojson")
    truth.iloc[:0].to_file(tmp_path / "empty.gpkg")
    r = score(tmp_path / "empty.gpkg", data_dir / "scoring/gt.geojson", min_area=0)
    assert (r.total["tp"], r.total["fp"], r.total["fn"]) == (0, 0, len(truth))
    assert r.total["f1"] == 0.0


def test_pixel_csv_layers_have_image_ids(data_dir, tmp_path):
    d = data_dir / "scoring"
    r = score(d / "sample_preds_competition.csv", d / "sample_truth_competition.csv")
    r.write_layers(tmp_path / "layers.gpkg")
    tp = gpd.read_file(tmp_path / "layers.gpkg", layer="tp")
    assert len(tp) == 2319 and tp.crs is None
    assert set(tp["image_id"]) == set(r.per_image["image_id"])
