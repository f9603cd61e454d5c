"""Pixel metrics (`geoseg evaluate`): hand-checked confusion matrices, rasters, PNGs, vectors."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image
from shapely.geometry import shape

from geoseg.cli import group
from geoseg.errors import BadInput, GeoSegError
from geoseg.evaluate import evaluate
from geoseg.evaluate.pixels import (
    MERGES,
    accuracy,
    confusion_matrix,
    hungarian_accuracy,
    many_to_one_accuracy,
    mapping_from_confusion,
    merge_labels,
    per_class_iou,
    pixel_metrics,
)
from geoseg.io.labels import ISPRS_COLOURS, decode_colours, parse_names

#: 3 clusters × label values 0..2 (column 0 = unlabelled, empty): an overclustering case
OVER = np.array([[0, 6, 1], [0, 4, 0], [0, 1, 5]])


def exit_code(result) -> int:
    if isinstance(result.exception, GeoSegError):
        return result.exception.exit_code
    return result.exit_code


def test_confusion_matrix_counts_and_ignores():
    pred = np.array([[0, 1, 2], [1, 1, 0]])
    target = np.array([[1, 0, 2], [2, 2, 1]])
    valid = np.array([[True, True, True], [True, False, True]])
    conf = confusion_matrix(pred, target, valid=valid, n_clusters=3, n_classes=3)
    # kept pixels (pred, label): (0,1) (2,2) (1,2) (0,1); (1,0) is unlabelled, (1,2) invalid
    expected = np.zeros((3, 3), int)
    expected[0, 1], expected[2, 2], expected[1, 2] = 2, 1, 1
    np.testing.assert_array_equal(conf, expected)
    with pytest.raises(ValueError, match="prediction values"):
        confusion_matrix(pred, target, n_clusters=2)


def test_hungarian_vs_many_to_one_on_overclustering():
    # one-to-one: clusters 0→1 (6) and 2→2 (5) beat any other pairing; cluster 1 is left out
    assert mapping_from_confusion(OVER, "hungarian").tolist() == [1, -1, 2]
    assert hungarian_accuracy(OVER) == pytest.approx(11 / 17)
    # many-to-one: clusters 0 and 1 both go to class 1
    assert mapping_from_confusion(OVER, "majority").tolist() == [1, 1, 2]
    assert many_to_one_accuracy(OVER) == pytest.approx(15 / 17)


def test_hungarian_prefers_global_optimum_over_greedy():
    # greedy would give cluster 0 its max (class 1, 10) and leave cluster 1 with class 2 (1):
    # 11 pixels; the optimal one-to-one is 0→2 (9) + 1→1 (8) = 17
    conf = np.array([[0, 10, 9], [0, 8, 1]])
    assert mapping_from_confusion(conf, "hungarian").tolist() == [2, 1]
    assert hungarian_accuracy(conf) == pytest.approx(17 / 28)


def test_per_class_iou_hand_checked():
    iou = per_class_iou(OVER, mapping_from_confusion(OVER, "hungarian"))
    # class 1: predicted = cluster 0 (7 px), labelled 11, overlap 6 → 6 / 12
    # class 2: predicted = cluster 2 (6 px), labelled 6, overlap 5 → 5 / 7
    assert np.isnan(iou[0])
    assert iou[1:] == pytest.approx([6 / 12, 5 / 7])
    iou = per_class_iou(OVER, mapping_from_confusion(OVER, "majority"))
    assert iou[1:] == pytest.approx([10 / 12, 5 / 7])


def test_pixel_metrics_names_and_building():
    m = pixel_metrics(OVER, class_names={1: "building", 2: "road"})
    assert m["per_class_iou"] == pytest.approx({"building": 0.5, "road": 5 / 7})
    assert m["miou"] == pytest.approx((0.5 + 5 / 7) / 2)
    assert m["building_iou"] == pytest.approx(0.5)
    assert m["mapping"] == {0: "building", 2: "road"}
    assert m["pixels"] == 17
    json.dumps(m)  # plain types only


def test_identity_mapping_for_class_rasters():
    conf = np.array([[0, 0, 0], [0, 5, 1], [0, 2, 4]])
    assert accuracy(conf, mapping_from_confusion(conf, "identity")) == pytest.approx(9 / 12)


def test_isprs_colours_and_potsdam3_merge(data_dir):
    labels = np.array(Image.open(data_dir / "isprs/potsdam_2_10_label_512.png"))
    merged = merge_labels(labels, MERGES["potsdam3"][0])
    assert (merged == 2).sum() == ((labels == 2) | (labels == 6)).sum()
    assert (merged == 1).sum() == ((labels == 1) | (labels == 5)).sum()
    assert (merged == 3).sum() == ((labels == 3) | (labels == 4)).sum()
    assert ((merged == 0) == (labels == 0)).all()
    palette = {v: k for k, v in ISPRS_COLOURS.items()}
    rgb = np.zeros((3, *labels.shape), np.uint8)
    for value, colour in palette.items():
        rgb[:, labels == value] = np.array(colour)[:, None]
    np.testing.assert_array_equal(decode_colours(rgb, ISPRS_COLOURS), labels)


def test_evaluate_png_pair_with_permuted_clusters(data_dir, tmp_path):
    labels = data_dir / "isprs/vaihingen_area1_label_512.png"
    lab = np.array(Image.open(labels))
    perm = np.array([3, 0, 5, 1, 2, 4, 6], np.uint8)
    Image.fromarray(perm[lab]).save(tmp_path / "pred.png")
    r = evaluate(tmp_path / "pred.png", labels, names=parse_names("isprs"))
    assert r["hungarian_accuracy"] == 1.0 and r["miou"] == 1.0
    assert r["pixels"] == int((lab > 0).sum())
    r = evaluate(tmp_path / "pred.png", labels, merge="potsdam3", method="majority")
    assert r["many_to_one_accuracy"] == 1.0
    assert set(r["per_class_iou"]) <= {"impervious_car", "building_clutter", "vegetation"}
    assert r["hungarian_accuracy"] < 1.0  # 6 clusters cannot map one-to-one onto 3 classes


def test_evaluate_colour_coded_label_tif(fixtures, make_raster):
    import rasterio

    with rasterio.open(fixtures["labels"]) as src:
        lab = src.read(1)
    colours = {v: k for k, v in ISPRS_COLOURS.items()}
    rgb = np.zeros((3, *lab.shape), np.uint8)
    for value in np.unique(lab):
        rgb[:, lab == value] = np.array(colours[int(value)])[:, None]
    label_tif = make_raster("labels_rgb.tif", rgb)
    r = evaluate(fixtures["labels"], label_tif, method="identity")
    assert r["hungarian_accuracy"] == 1.0
    assert r["building_iou"] == 1.0  # ISPRS value 2 is building


def test_evaluate_reprojects_labels_and_skips_nodata(fixtures, make_raster):
    import rasterio

    with rasterio.open(fixtures["labels"]) as src:
        lab = src.read(1)
    pred = lab.copy()[None]
    pred[:, :, :16] = 255  # nodata strip: must not count
    pred_tif = make_raster("pred.tif", pred, nodata=255)
    # the same labels on a coarser grid in another CRS: nearest resampling back is not exact,
    # but nearly everything must agree, and nodata pixels must be left out
    label_4326 = make_raster("lab.tif", lab[None], nodata=0)
    r_same = evaluate(pred_tif, label_4326, method="identity")
    assert r_same["pixels"] == int(pred[0, :, 16:].size)
    assert r_same["hungarian_accuracy"] == 1.0
    from rasterio.warp import calculate_default_transform, reproject

    with rasterio.open(label_4326) as src:
        transform, w, h = calculate_default_transform(
            src.crs, "EPSG:4326", src.width, src.height, *src.bounds
        )
        out = np.zeros((h, w), np.uint8)
        reproject(
            lab,
            out,
            src_transform=src.transform,
            src_crs=src.crs,
            dst_transform=transform,
            dst_crs="EPSG:4326",
            resampling=0,
        )
    warped = label_4326.with_name("lab_4326.tif")
    with rasterio.open(
        warped,
        "w",
        driver="GTiff",
        width=w,
        height=h,
        count=1,
        dtype="uint8",
        crs="EPSG:4326",
        transform=transform,
        nodata=0,
    ) as dst:
        dst.write(out, 1)
    r = evaluate(pred_tif, warped, method="identity")
    assert r["hungarian_accuracy"] > 0.9
    assert r["pixels"] <= r_same["pixels"]


def test_evaluate_vector_labels(fixtures, tmp_path):
    import rasterio
    from rasterio.features import shapes

    with rasterio.open(fixtures["labels"]) as src:
        lab, transform, crs = src.read(1), src.transform, src.crs
    buildings = [shape(g) for g, _ in shapes(lab, mask=lab == 1, transform=transform)]
    path = tmp_path / "buildings.geojson"
    gpd.GeoDataFrame(geometry=buildings, crs=crs).to_crs("EPSG:4326").to_file(path)
    pred = np.where(lab == 1, 1, 2).astype(np.uint8)  # 1 building, 2 anything else
    pred_tif = tmp_path / "pred.tif"
    with rasterio.open(
        pred_tif,
        "w",
        driver="GTiff",
        width=lab.shape[1],
        height=lab.shape[0],
        count=1,
        dtype="uint8",
        crs=crs,
        transform=transform,
    ) as dst:
        dst.write(pred, 1)
    r = evaluate(pred_tif, path, method="identity", fill=2, names={2: "other"})
    assert r["building_iou"] > 0.95  # reprojection to 4326 and back moves a few edge vertices
    assert r["pixels"] == lab.size
    only_buildings = evaluate(pred_tif, path, method="identity")  # fill 0: outside not scored
    assert only_buildings["pixels"] == pytest.approx((lab == 1).sum(), rel=0.05)
    with pytest.raises(BadInput, match="no column"):
        evaluate(pred_tif, path, column="nope")


def test_cli_evaluate_outputs_and_errors(data_dir, tmp_path):
    labels = data_dir / "isprs/potsdam_2_10_label_512.png"
    lab = np.array(Image.open(labels))
    Image.fromarray(lab).save(tmp_path / "pred.png")
    args = [
        "evaluate",
        str(tmp_path / "pred.png"),
        str(labels),
        "--names",
        "isprs",
        "--confusion",
        str(tmp_path / "c.csv"),
        "--json",
        str(tmp_path / "m.json"),
    ]
    res = CliRunner().invoke(group, args)
    assert res.exit_code == 0, res.output
    assert "Hungarian accuracy     1.0000" in res.output and "building" in res.output
    conf = pd.read_csv(tmp_path / "c.csv", index_col=0)
    assert conf.to_numpy().sum() == int((lab > 0).sum())
    assert json.loads((tmp_path / "m.json").read_text())["miou"] == 1.0
    assert exit_code(CliRunner().invoke(group, args)) == 2  # outputs exist, no --overwrite
    small = tmp_path / "small.png"
    Image.fromarray(lab[:100, :100]).save(small)
    res = CliRunner().invoke(group, ["evaluate", str(small), str(labels)])
    assert exit_code(res) == 2 and "must match" in str(res.exception)
    res = CliRunner().invoke(group, ["evaluate", str(small), str(labels), "--names", "1:x"])
    assert exit_code(res) == 2 and "--names" in str(res.exception)
