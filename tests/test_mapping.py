"""Cluster→class mapping (`geoseg map`): the math on arrays, then on a real k-means checkpoint."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner
from make_fixtures import _COLOURS, BUILDING, ROAD, SOIL, VEGETATION
from rasterio.features import shapes
from shapely.geometry import shape

from geoseg.checkpoint import Checkpoint, build_from_spec
from geoseg.cli import group
from geoseg.errors import BadInput, GeoSegError
from geoseg.evaluate import evaluate, fit_mapping, mapping_from_confusion
from geoseg.evaluate.mapping import NoClassFound, choose, mapping_record
from geoseg.io.bands import BandSpec
from geoseg.predict.raster import predict

#: k-means centroids (raw uint8 colours, identity normalisation): a permutation of the
#: fixture's classes, a second brighter "building" cluster, and one colour nothing has
CENTROIDS = [
    _COLOURS[ROAD],
    _COLOURS[BUILDING],
    _COLOURS[SOIL],
    _COLOURS[VEGETATION],
    tuple(c + 12 for c in _COLOURS[BUILDING]),
    (0, 0, 255, 0),
]


def exit_code(result) -> int:
    if isinstance(result.exception, GeoSegError):
        return result.exception.exit_code
    return result.exit_code


def kmeans_checkpoint(path, *, tile=32, mapping=None, centroids=CENTROIDS):
    spec = {"method": "kmeans", "model_cfg": {}, "in_channels": 4, "n_clusters": [len(centroids)]}
    net = build_from_spec(spec)
    net.centroids.copy_(torch.tensor(centroids, dtype=torch.float32))
    norm = {"mean": [0.0] * 4, "std": [1.0] * 4, "p2": [0.0] * 4, "p98": [255.0] * 4}
    bands = BandSpec.of([1, 2, 3, 4], ["red", "green", "blue", "nir"], norm)
    ckpt = Checkpoint.new(
        net, method="kmeans", spec=spec, bands=bands, crop_size=tile, mapping=mapping
    )
    return ckpt.save(path)


@pytest.fixture
def building_labels(fixtures, tmp_path):
    """The fixture's buildings as polygons (complete footprints), in EPSG:4326."""
    with rasterio.open(fixtures["labels"]) as src:
        lab, transform, crs = src.read(1), src.transform, src.crs
    geoms = [shape(g) for g, _ in shapes(lab, mask=lab == BUILDING, transform=transform)]
    path = tmp_path / "buildings.geojson"
    gpd.GeoDataFrame(geometry=geoms, crs=crs).to_crs("EPSG:4326").to_file(path)
    return path


# --- the math --------------------------------------------------------------------------------


def test_mapping_from_confusion_majority_and_hungarian():
    # clusters × label values (0 unlabelled): clusters 0 and 3 are both mostly class 2
    conf = np.array([[0, 1, 9, 0], [0, 7, 0, 1], [0, 0, 1, 6], [0, 2, 5, 0], [0, 0, 0, 0]])
    assert mapping_from_confusion(conf, "majority").tolist() == [2, 1, 3, 2, -1]
    hung = mapping_from_confusion(conf, "hungarian")
    assert hung.tolist() == [2, 1, 3, -1, -1]
    record = mapping_record(hung, {1: "road", 2: "building"}, head=0, method="hungarian")
    assert record == {
        "head": 0,
        "method": "hungarian",
        "classes": {"road": [1], "building": [0], "class_3": [2]},
        "class_ids": {"road": 1, "building": 2, "class_3": 3},
    }
    record = mapping_record(
        mapping_from_confusion(conf, "majority"), {}, head=1, method="majority", skip=(3,)
    )
    assert record["classes"] == {"class_1": [1], "class_2": [0, 3]}


def test_choose_is_seeded_and_bounded():
    items = list(range(100))
    a, b = choose(items, 10, seed=1), choose(items, 10, seed=1)
    assert a == b and len(a) == 10 and a == sorted(a)
    assert choose(items, 10, seed=2) != a
    assert choose(items[:5], 10, seed=0) == items[:5]


# --- fit_mapping on a real checkpoint ---------------------------------------------------------


def test_majority_mapping_from_building_polygons(fixtures, building_labels, tmp_path):
    ckpt_path = kmeans_checkpoint(tmp_path / "best.pt")
    out = tmp_path / "mapped.pt"
    result = fit_mapping(
        ckpt_path,
        labels=building_labels,
        image=fixtures["rgbn"],
        output=out,
        method="majority",
        tile_size=32,
    )
    mapping = Checkpoint.load(out)["mapping"]
    assert mapping == result["mapping"]
    # both building-coloured clusters, nothing else; background is not stored
    assert mapping["classes"] == {"building": [1, 4]}
    assert mapping["class_ids"] == {"building": 1} and mapping["method"] == "majority"
    assert result["accuracy"] > 0.95
    assert Checkpoint.load(ckpt_path)["mapping"] is None  # -o leaves the input alone


def test_hungarian_keeps_one_cluster_per_class(fixtures, building_labels, tmp_path):
    ckpt_path = kmeans_checkpoint(tmp_path / "best.pt")
    result = fit_mapping(
        ckpt_path, labels=building_labels, image=fixtures["rgbn"], method="hungarian"
    )
    assert result["mapping"]["classes"] == {"building": [1]}
    assert Checkpoint.load(ckpt_path)["mapping"]["method"] == "hungarian"  # in place


def test_label_budget_limits_tiles(fixtures, tmp_path):
    with rasterio.open(fixtures["labels"]) as src:
        lab = src.read(1)
    ckpt_path = kmeans_checkpoint(tmp_path / "best.pt", tile=32)
    # 96×128 px scene, 32 px tiles: 12 tiles, all labelled (a full class raster)
    full = fit_mapping(
        ckpt_path,
        labels=fixtures["labels"],
        image=fixtures["rgbn"],
        names={1: "building", 2: "road", 3: "vegetation", 4: "soil"},
        output=tmp_path / "a.pt",
        method="majority",
        tile_size=32,
    )
    assert full["tiles"] == 12 and full["pixels"] == lab.size
    assert full["mapping"]["classes"] == {
        "building": [1, 4],
        "road": [0],
        "vegetation": [3],
        "soil": [2],
    }
    few = fit_mapping(
        ckpt_path,
        labels=fixtures["labels"],
        image=fixtures["rgbn"],
        max_tiles=3,
        output=tmp_path / "b.pt",
        tile_size=32,
    )
    assert few["tiles"] == 3 and few["pixels"] == 3 * 32 * 32


def test_mapping_from_a_tile_store(fixtures, tmp_path):
    from geoseg.tiles.writer import tile

    store = tmp_path / "tiles.zarr"
    tile(
        fixtures["rgbn"],
        store,
        tile_size=32,
        overlap=0,
        labels=fixtures["labels"],
        scheduler="sync",
    )
    ckpt_path = kmeans_checkpoint(tmp_path / "best.pt")
    result = fit_mapping(
        ckpt_path, store=store, max_tiles=50, output=tmp_path / "m.pt", method="majority"
    )
    assert result["tiles"] == 12
    assert sorted(result["mapping"]["classes"].values()) == [[0], [1, 4], [2], [3]]


def test_store_of_footprints_treats_unlabelled_as_background(fixtures, building_labels, tmp_path):
    from geoseg.tiles.writer import tile

    store = tmp_path / "tiles.zarr"
    tile(fixtures["rgbn"], store, tile_size=32, overlap=0, labels=building_labels, scheduler="sync")
    ckpt_path = kmeans_checkpoint(tmp_path / "best.pt")
    result = fit_mapping(ckpt_path, store=store, output=tmp_path / "m.pt", method="majority")
    assert list(result["mapping"]["classes"].values()) == [[1, 4]]
    assert result["pixels"] == result["tiles"] * 32 * 32  # every valid pixel of the tiles
    # fill=0: only the roofs count, so every roof cluster would be "building" with a perfect
    # score: refused (issue 13) instead of a trivially perfect mapping
    with pytest.raises(BadInput, match="only building pixels"):
        fit_mapping(ckpt_path, store=store, fill=0, output=tmp_path / "n.pt", method="majority")
    assert not (tmp_path / "n.pt").exists()


def test_no_cluster_mostly_building_is_a_runtime_error_not_bad_input(
    fixtures, building_labels, tmp_path
):
    # one cluster for everything: buildings are a minority of it, so it maps to background
    ckpt_path = kmeans_checkpoint(tmp_path / "one.pt", centroids=[_COLOURS[SOIL]])
    with pytest.raises(NoClassFound, match="mostly a named class") as info:
        fit_mapping(ckpt_path, labels=building_labels, image=fixtures["rgbn"], method="majority")
    assert info.value.exit_code == 1
    assert Checkpoint.load(ckpt_path)["mapping"] is None  # nothing written


def test_existing_mapping_needs_overwrite(fixtures, building_labels, tmp_path):
    ckpt_path = kmeans_checkpoint(tmp_path / "best.pt")
    fit_mapping(ckpt_path, labels=building_labels, image=fixtures["rgbn"])
    with pytest.raises(BadInput, match="already holds a mapping"):
        fit_mapping(ckpt_path, labels=building_labels, image=fixtures["rgbn"])
    fit_mapping(
        ckpt_path,
        labels=building_labels,
        image=fixtures["rgbn"],
        overwrite=True,
        method="hungarian",
    )
    assert Checkpoint.load(ckpt_path)["mapping"]["method"] == "hungarian"


@pytest.mark.parametrize(
    "kwargs, param",
    [
        ({"store": None, "labels": None}, "--labels"),
        ({"image": None}, "--image"),
        ({"head": 3}, "--head"),
        ({"max_tiles": 0}, "--max-tiles"),
        ({"method": "greedy"}, "--method"),
    ],
)
def test_bad_arguments(fixtures, building_labels, tmp_path, kwargs, param):
    ckpt_path = kmeans_checkpoint(tmp_path / "best.pt")
    args = {"labels": building_labels, "image": fixtures["rgbn"], **kwargs}
    with pytest.raises(BadInput, match=param):
        fit_mapping(ckpt_path, **args)


def test_cli_map_then_predict_uses_the_mapping(fixtures, building_labels, tmp_path):
    ckpt_path = kmeans_checkpoint(tmp_path / "best.pt")
    res = CliRunner().invoke(
        group,
        [
            "map",
            str(ckpt_path),
            "--labels",
            str(building_labels),
            "--image",
            str(fixtures["rgbn"]),
            "--max-tiles",
            "50",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "building (value 1): clusters 1, 4" in res.output
    # predict now writes a building raster, which matches the footprints
    outputs = predict(fixtures["rgbn"], ckpt_path, tmp_path / "out", scheduler="sync")
    metrics = evaluate(outputs["building"], building_labels, fill=2, names={2: "other"})
    assert metrics["building_iou"] > 0.9
    res = CliRunner().invoke(
        group,
        ["map", str(ckpt_path), "--labels", str(building_labels), "--image", str(fixtures["rgbn"])],
    )
    assert exit_code(res) == 2
    res = CliRunner().invoke(group, ["map", str(tmp_path / "nope.pt"), "--store", "x.zarr"])
    assert exit_code(res) == 2


def test_class_names_from_a_text_column(fixtures, tmp_path):
    with rasterio.open(fixtures["labels"]) as src:
        lab, transform, crs = src.read(1), src.transform, src.crs
    names = {BUILDING: "building", VEGETATION: "tree"}
    rows = [
        (shape(g), names[int(v)]) for g, v in shapes(lab, transform=transform) if int(v) in names
    ]
    path = tmp_path / "labels.gpkg"
    gpd.GeoDataFrame(
        {"kind": [n for _, n in rows]}, geometry=[g for g, _ in rows], crs=crs
    ).to_file(path)
    ckpt_path = kmeans_checkpoint(tmp_path / "best.pt")
    result = fit_mapping(ckpt_path, labels=path, image=fixtures["rgbn"], column="kind")
    assert result["mapping"]["classes"] == {"building": [1, 4], "tree": [3]}
    assert result["mapping"]["class_ids"] == {"building": 1, "tree": 2}
