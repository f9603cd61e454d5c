"""What a GIS analyst sees: styled outputs and the one-click QGIS project, in a real QGIS.

A crop of the real Vegas sample goes through tile → k-means → ``geoseg predict --class
building=0,1 --qgis-project`` → ``geoseg score --layers``. Checked without QGIS: the polygons'
``cluster`` is the model's cluster, class names reach the raster's GDAL categories and
attribute table, the score GeoPackage is 1.3 with 2D layers. Checked in headless QGIS 3.x:
the project opens with every layer valid and styled in the intended order, and the building
raster drawn over the image leaves the image visible wherever there is no building.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from geoseg.cli import main

SCRIPT = Path(__file__).parent / "qgis" / "open_project.py"
BUILDING = [0, 1]  # the k-means clusters called building (dark roofs and shadows here)


def geoseg(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        main(["-q", *map(str, args)])
    out = capsys.readouterr()
    return exit_.value.code, out.out, out.err


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """predict --qgis-project and score --layers on a 160 x 128 crop of the Vegas sample."""
    import rasterio
    from rasterio.windows import Window

    from geoseg.demo import sample_paths
    from geoseg.tiles.writer import tile
    from geoseg.train.loop import train
    from geoseg.vector.project import write_prediction_project

    root = tmp_path_factory.mktemp("project")
    image, labels = sample_paths()
    crop = root / "crop.tif"
    with rasterio.open(image) as src:
        window = Window(100, 200, 128, 160)
        profile = src.profile | {
            "width": 128,
            "height": 160,
            "transform": src.window_transform(window),
        }
        with rasterio.open(crop, "w", **profile) as dst:
            dst.write(src.read(window=window))
    store = tile([crop], root / "tiles.zarr", bands="red,green,blue,nir1", tile_size=64, overlap=0)
    ckpt = train(store, root / "run", method="kmeans", overrides=["n_clusters=5"], device="cpu")
    out = root / "out"
    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "-q",
                "predict",
                str(crop),
                "-m",
                str(ckpt),
                "-o",
                str(out),
                "--device",
                "cpu",
                "--class",
                "building=0,1",
                "--qgis-project",
            ]
        )
    assert exit_.value.code == 0
    written = {
        "clusters": out / "crop_clusters.tif",
        "building": out / "crop_building.tif",
        "building:vector": out / "crop_buildings.gpkg",
    }
    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "-q",
                "score",
                str(written["building:vector"]),
                str(labels),
                "--min-area",
                "1",
                "--truth-filter",
                "label=1",
                "--layers",
                str(out / "score_layers.gpkg"),
            ]
        )
    assert exit_.value.code == 0
    # the demo's project: the same, plus the score layers
    write_prediction_project(written, crop, score_layers=out / "score_layers.gpkg", overwrite=True)
    return root, crop, written


def test_polygons_carry_the_models_cluster(outputs):
    import geopandas as gpd
    import rasterio

    _, _, written = outputs
    polygons = gpd.read_file(written["building:vector"])
    assert len(polygons) > 0
    assert set(polygons["cluster"]) <= set(BUILDING) and polygons["cluster"].nunique() == 2
    points = polygons.geometry.representative_point()
    with rasterio.open(written["clusters"]) as src:
        under = [v[0] for v in src.sample(zip(points.x, points.y, strict=True))]
    assert (np.array(under) == polygons["cluster"].to_numpy()).mean() > 0.95


def test_class_names_reach_the_cluster_raster(outputs):
    _, _, written = outputs
    aux = Path(f"{written['clusters']}.aux.xml").read_text()
    categories = re.findall(r"<Category>([^<]*)</Category>", aux)
    assert categories[:5] == ["0 building", "1 building", "2", "3", "4"]
    assert "GDALRasterAttributeTable" in aux
    legend = re.findall(
        r'value="(\d+)"[^>]*label="([^"]*)"', written["clusters"].with_suffix(".qml").read_text()
    )
    assert ("0", "0 building") in legend and ("2", "2") in legend


def test_score_layers_are_2d_styled_and_geopackage_1_3(outputs):
    root, _, _ = outputs
    path = root / "out" / "score_layers.gpkg"
    with sqlite3.connect(path) as db:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        columns = dict(db.execute("SELECT table_name, z FROM gpkg_geometry_columns").fetchall())
        styles = dict(db.execute("SELECT f_table_name, styleQML FROM layer_styles").fetchall())
    assert version == 10300
    assert columns == {"tp": 0, "fp": 0, "fn": 0}  # the truth file is 3D; the layers are not
    strokes = {
        name: re.search(r'name="outline_color" value="([^"]+)"', qml).group(1)
        for name, qml in styles.items()
    }
    assert len(set(strokes.values())) == 3


def test_project_paths_are_relative(outputs):
    root, _, _ = outputs
    project = root / "out" / "crop.qgz"
    with zipfile.ZipFile(project) as archive:
        xml = archive.read("crop.qgs").decode()
    sources = re.findall(r"<datasource>([^<]+)</datasource>", xml)
    assert len(sources) == 7
    assert all(s.startswith(("./", "../")) for s in sources), sources


@pytest.mark.qgis
def test_qgis_opens_the_project_styled_and_the_buildings_leave_the_image_visible(
    qgis_python, outputs, tmp_path
):
    import rasterio
    from PIL import Image

    root, crop, written = outputs
    run = subprocess.run(
        [qgis_python, str(SCRIPT), str(root / "out" / "crop.qgz"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, QT_QPA_PLATFORM="offscreen"),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["read"] and all(report["rendered"])
    layers = {layer["name"]: layer for layer in report["layers"]}
    assert [layer["name"] for layer in report["layers"]] == [
        "score tp",
        "score fp",
        "score fn",
        "building polygons",
        "building",
        "clusters",
        "image",
    ]
    assert all(layer["valid"] for layer in report["layers"])
    strokes = [layers[f"score {n}"]["stroke"] for n in ("tp", "fp", "fn")]
    assert len(set(strokes)) == 3
    assert layers["score fn"]["wkb"] == "MultiPolygon"  # 2D
    assert layers["building polygons"]["renderer"] == "categorizedSymbol"  # by cluster 0, 1
    assert layers["clusters"]["renderer"] == "paletted" and not layers["clusters"]["visible"]
    assert layers["clusters"]["classes"]["0"][0] == "0 building"
    assert layers["building"]["classes"]["0"][1].startswith("#00"), layers["building"]  # clear
    assert layers["image"]["renderer"] == "multibandcolor"
    assert layers["image"]["bands"] == [5, 3, 2]  # WorldView-3 red, green, blue

    with rasterio.open(written["building"]) as src:
        building = src.read(1) == 1
    image = np.asarray(Image.open(tmp_path / "image.png").convert("RGB")).astype(int)
    over = np.asarray(Image.open(tmp_path / "image_building.png").convert("RGB")).astype(int)
    changed = np.abs(over - image).max(axis=-1) > 8
    assert building.shape == changed.shape
    assert changed[~building].mean() < 0.02, "the building raster hides the image off buildings"
    assert changed[building].mean() > 0.9, "buildings are not drawn"
    assert (image < 250).any(axis=-1).mean() > 0.9  # the image itself rendered


def test_report_of_an_output_folder_finds_the_image_through_its_project(outputs, capsys):
    root, _, _ = outputs
    code, out, err = geoseg(capsys, "report", root / "out", "-o", root / "r.html")
    assert code == 0, err
    html = (root / "r.html").read_text()
    assert "Image (red, green, blue)" in html and "crop.tif" in html  # from crop.qgz
    assert "Error map" in html and "0 building" in html  # score layers; named clusters
