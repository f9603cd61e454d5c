"""Building quality (issue 8): IoU-optimal naming, the few-label head, superpixel refinement.

Naming is tested on hand-made cluster maps whose best answer is known; the head on a real
k-means checkpoint of the fixture scene, through a weights_only checkpoint and predict.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from test_mapping import CENTROIDS, building_labels, kmeans_checkpoint  # noqa: F401

from geoseg.checkpoint import Checkpoint
from geoseg.errors import BadInput
from geoseg.evaluate import fit_mapping
from geoseg.evaluate.naming import iou_optimal_set, name_by_iou
from geoseg.evaluate.pixels import confusion_matrix, mapping_from_confusion
from geoseg.models.pyramid import n_features, pyramid
from geoseg.predict.raster import predict
from geoseg.refine.superpixels import refine, region_mean

# --- naming on hand-made cluster maps ------------------------------------------------------


def _scene():
    """A 60×60 scene: 8 % buildings. Cluster 1 is pure roof, cluster 2 half roof / half road
    (light concrete), cluster 0 everything else. Labels: 1 background, 2 building."""
    label = np.ones((60, 60), np.uint8)
    clusters = np.zeros((60, 60), np.int64)
    label[5:15, 5:25] = 2  # 200 px building, all in cluster 1
    clusters[5:15, 5:25] = 1
    label[40:45, 40:48] = 2  # 40 px building in the mixed cluster 2 ...
    clusters[40:45, 40:48] = 2
    clusters[45:50, 40:48] = 2  # ... with 40 px of road
    return clusters, label


def test_majority_names_no_minority_cluster_but_iou_does():
    clusters, label = _scene()
    conf = confusion_matrix(clusters, label, n_clusters=3, n_classes=3)
    majority = mapping_from_confusion(conf, "majority")
    assert 2 not in majority[[0]]  # the big cluster is background
    assignment, iou = name_by_iou(conf, [2], background=[1])
    # the pure cluster alone: IoU 200 / 240; adding the mixed one: 240 / 280 (better)
    assert list(np.flatnonzero(assignment == 2)) == [1, 2]
    assert iou[2] == pytest.approx(240 / 280)


def test_iou_optimal_set_is_the_best_of_all_subsets():
    rng = np.random.default_rng(3)
    for _ in range(20):
        conf = rng.integers(0, 50, size=(7, 3))
        conf[:, 0] = 0
        clusters, best = iou_optimal_set(conf, 2, others=[1])
        brute = 0.0
        for mask in range(1, 2**7):
            chosen = [k for k in range(7) if mask >> k & 1]
            tp = conf[chosen, 2].sum()
            fp = conf[chosen, 1].sum()
            brute = max(brute, tp / (conf[:, 2].sum() + fp))
        assert best == pytest.approx(brute)
        tp = conf[clusters, 2].sum()
        assert tp / (conf[:, 2].sum() + conf[clusters, 1].sum()) == pytest.approx(best)


def test_iou_naming_never_fails_when_no_cluster_is_mostly_building():
    # one cluster for everything (buildings are 6 % of it): majority names nothing
    label = np.ones((40, 40), np.uint8)
    label[:10, :10] = 2
    conf = confusion_matrix(np.zeros((40, 40), np.int64), label, n_clusters=1, n_classes=3)
    assignment, iou = name_by_iou(conf, [2], background=[1])
    assert list(assignment) == [2] and iou[2] == pytest.approx(100 / 1600)


def test_fit_mapping_iou_names_a_minority_cluster_and_warns(fixtures, building_labels, tmp_path):  # noqa: F811
    from make_fixtures import _COLOURS, SOIL

    ckpt_path = kmeans_checkpoint(tmp_path / "one.pt", tile=32, centroids=[_COLOURS[SOIL]])
    result = fit_mapping(ckpt_path, labels=building_labels, image=fixtures["rgbn"], tile_size=32)
    assert result["mapping"]["classes"] == {"building": [0]}
    assert result["estimated_iou"]["building"] < 0.3
    assert "estimated IoU" in result["warning"]


def test_fit_mapping_tries_every_head_and_reports_the_estimate(fixtures, building_labels, tmp_path):  # noqa: F811
    ckpt_path = kmeans_checkpoint(tmp_path / "best.pt", tile=32)
    result = fit_mapping(ckpt_path, labels=building_labels, image=fixtures["rgbn"], tile_size=32)
    assert result["mapping"]["method"] == "iou"
    assert result["mapping"]["classes"] == {"building": [1, 4]}
    assert result["estimated_iou"]["building"] > 0.9 and result["warning"] is None


def test_map_refuses_a_trivially_perfect_mapping(fixtures, building_labels, tmp_path):  # noqa: F811
    # building polygons with --fill 0: only building pixels are labelled
    ckpt_path = kmeans_checkpoint(tmp_path / "best.pt", tile=32)
    with pytest.raises(BadInput, match="only building pixels") as info:
        fit_mapping(ckpt_path, labels=building_labels, image=fixtures["rgbn"], fill=0, tile_size=32)
    assert info.value.param == "--labels"


# --- the few-label head ----------------------------------------------------------------------


def test_pyramid_shapes_and_scale():
    x = torch.randn(2, 4, 48, 40)
    f = pyramid(x)
    assert f.shape == (2, n_features(4), 48, 40)
    assert torch.isfinite(f).all()
    assert pyramid(torch.randn(1, 1, 20, 20)).shape[1] == n_features(1)


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_head_round_trips_and_predict_uses_it(fixtures, building_labels, tmp_path, kind):  # noqa: F811
    ckpt_path = kmeans_checkpoint(tmp_path / "best.pt", tile=32)
    out = tmp_path / "head.pt"
    result = fit_mapping(
        ckpt_path,
        labels=building_labels,
        image=fixtures["rgbn"],
        head=kind,
        tile_size=32,
        output=out,
    )
    assert result["mapping"]["method"] == kind
    raw = torch.load(out, map_location="cpu", weights_only=True)  # no pickled code
    assert raw["fewshot"]["kind"] == kind and raw["n_clusters"] == [len(CENTROIDS), 2]
    assert raw["mapping"]["head"] == 1 and raw["mapping"]["classes"] == {"building": [1]}
    written = predict(fixtures["rgbn"], out, tmp_path / "pred", scheduler="sync")
    with rasterio.open(written["building"]) as src:
        building = src.read(1)
    with rasterio.open(fixtures["labels"]) as src:
        truth = src.read(1) == 1  # make_fixtures.BUILDING
    inter = (building == 1) & truth
    assert inter.sum() / ((building == 1) | truth).sum() > 0.8
    # re-mapping replaces the head instead of stacking a second one
    again = fit_mapping(
        out,
        labels=building_labels,
        image=fixtures["rgbn"],
        tile_size=32,
        overwrite=True,
        method="majority",
    )
    assert Checkpoint.load(out)["n_clusters"] == [len(CENTROIDS)]
    assert "fewshot" not in Checkpoint.load(out) and again["mapping"]["head"] == 0


def test_head_refinement_keeps_georeferencing_and_nodata(fixtures, building_labels, tmp_path):  # noqa: F811
    ckpt_path = kmeans_checkpoint(tmp_path / "best.pt", tile=32)
    fit_mapping(ckpt_path, labels=building_labels, image=fixtures["rgbn"], head="mlp", tile_size=32)
    written = predict(fixtures["rgbn_nodata"], ckpt_path, tmp_path / "pred", scheduler="sync")
    with rasterio.open(fixtures["rgbn_nodata"]) as src:
        transform, crs = src.transform, src.crs
    with rasterio.open(written["building"]) as src:
        assert src.transform == transform and src.crs == crs
        building = src.read(1)
        assert src.nodata is not None
        assert (building[:, :20] == src.nodata).all()  # the nodata strip stays nodata
        assert (building[:, 20:] != src.nodata).all()


# --- superpixels -----------------------------------------------------------------------------


def test_region_mean_gives_each_region_its_mean():
    labels = np.array([[0, 0, 1], [0, 1, 1]])
    values = np.array([[1.0, 0.0, 0.5], [0.5, 0.5, 1.0]], np.float32)
    out = region_mean(values, labels)
    assert np.allclose(out[labels == 0], 0.5) and np.allclose(out[labels == 1], 2 / 3)


def test_refine_makes_a_roof_uniform_and_keeps_its_edge():
    img = np.zeros((3, 40, 40), np.float32)
    img[:, 10:30, 10:30] = 2.0  # a bright roof
    prob = np.full((40, 40), 0.2, np.float32)
    prob[10:30, 10:30] = 0.8
    prob[15, 15] = 0.1  # a dark speck on the roof (roof furniture)
    prob[2, 2] = 0.9  # a false speck on the ground
    out = refine(prob, img)
    assert out[15, 15] > 0.7 and out[2, 2] < 0.3
    assert (out[10:30, 10:30] > 0.5).all() and (out[:9] < 0.5).all()


def test_cli_map_head_mlp_prints_the_estimate(fixtures, building_labels, tmp_path):  # noqa: F811
    from click.testing import CliRunner

    from geoseg.cli import group

    ckpt_path = kmeans_checkpoint(tmp_path / "best.pt", tile=32)
    args = [
        "map",
        str(ckpt_path),
        "--labels",
        str(building_labels),
        "--image",
        str(fixtures["rgbn"]),
        "--head",
        "mlp",
        "--tile-size",
        "32",
    ]
    res = CliRunner().invoke(group, args)
    assert res.exit_code == 0, res.output
    assert "mlp mapping of head 1" in res.output and "estimated IoU" in res.output
    bad = CliRunner().invoke(group, [*args[:-4], "--head", "deep"])
    assert bad.exit_code == 2 and "--head" in bad.output


def test_fold_calibrated_threshold_is_recorded_and_predicts_as_well(
    fixtures,
    building_labels,  # noqa: F811
    tmp_path,
):
    """calibration="folds": the threshold is chosen on tiles each scored by a head fitted
    without them; the record says so, its IoU estimate is out-of-sample (never above the
    in-sample one on the same tiles by more than noise), and predict still finds the roofs.
    With fewer labelled tiles than folds it falls back to in-sample, and says so."""
    from geoseg.heads.fit import FOLDS

    ckpt_path = kmeans_checkpoint(tmp_path / "best.pt", tile=32)
    common = dict(labels=building_labels, image=fixtures["rgbn"], head="mlp", tile_size=32)
    fit_mapping(ckpt_path, output=tmp_path / "in.pt", **common)
    fit_mapping(
        ckpt_path, output=tmp_path / "cv.pt", head_options={"calibration": "folds"}, **common
    )
    inside = Checkpoint.load(tmp_path / "in.pt")["fewshot"]
    folds = Checkpoint.load(tmp_path / "cv.pt")["fewshot"]
    assert inside["calibration"] == "in-sample" and folds["calibration"] == "folds"
    assert folds["pixels"] == inside["pixels"]  # every labelled pixel scored out of fold
    assert folds["estimated_iou"] <= inside["estimated_iou"] + 0.02
    written = predict(fixtures["rgbn"], tmp_path / "cv.pt", tmp_path / "pred", scheduler="sync")
    with rasterio.open(written["building"]) as src:
        building = src.read(1) == 1
    with rasterio.open(fixtures["labels"]) as src:
        truth = src.read(1) == 1
    assert (building & truth).sum() / (building | truth).sum() > 0.8
    few = fit_mapping(
        ckpt_path,
        output=tmp_path / "few.pt",
        max_tiles=FOLDS - 1,
        head_options={"calibration": "folds"},
        **common,
    )
    assert few["tiles"] == FOLDS - 1
    assert Checkpoint.load(tmp_path / "few.pt")["fewshot"]["calibration"] == "in-sample"
