"""geoseg inside QGIS: the Processing provider runs the installed geoseg, headless.

A real QGIS 3.x (Debian ``python3-qgis``) loads ``geoseg/qgis`` as a plugin folder and runs
``processing.run("geoseg:predict" / "vectorize" / "score", ...)`` on a crop of the real Vegas
sample with a k-means checkpoint (and, marked slow, ``"geoseg:tile"`` and ``"train"`` first:
each is a separate geoseg process, which costs minutes on a loaded machine); the outputs must
be the store, run, rasters and polygons geoseg writes and the score the numbers geoseg's own
scorer gives. With ``GEOSEG_REQUIRE_QGIS=1`` (CI) a missing QGIS is a failure, not a skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "qgis" / "run_processing.py"
PLUGIN = Path(__file__).parents[1] / "geoseg" / "qgis"

pytestmark = pytest.mark.qgis


@pytest.fixture(scope="module")
def crop(tmp_path_factory):
    """A 128 x 128 crop of the real Vegas sample, and its building footprints."""
    import rasterio
    from rasterio.windows import Window

    from geoseg.demo import sample_paths

    root = tmp_path_factory.mktemp("processing")
    image, labels = sample_paths()
    crop = root / "crop.tif"
    with rasterio.open(image) as src:
        window = Window(150, 250, 128, 128)
        profile = src.profile | {
            "width": 128,
            "height": 128,
            "transform": src.window_transform(window),
        }
        with rasterio.open(crop, "w", **profile) as dst:
            dst.write(src.read(window=window))
    return root, crop, labels


def _run(qgis_python, root, crop, labels, *model) -> dict:
    env = dict(
        os.environ, QT_QPA_PLATFORM="offscreen", GEOSEG_COMMAND=f"{sys.executable} -m geoseg"
    )
    run = subprocess.run(
        [qgis_python, str(SCRIPT), str(PLUGIN), str(crop), str(root), str(labels), *model],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def _check_outputs(report: dict, root: Path, crop: Path, labels: Path) -> None:
    import geopandas as gpd
    import rasterio

    from geoseg.evaluate.spacenet import score

    names = ("map", "predict", "score", "tile", "train", "vectorize")
    assert report["algorithms"] == [f"geoseg:{n}" for n in names]

    clusters = Path(report["predict"]["CLUSTERS"])
    assert clusters.parent == root / "pred" and clusters.name == "crop_clusters.tif"
    with rasterio.open(crop) as src, rasterio.open(clusters) as out:
        assert (out.crs, out.transform, out.shape) == (src.crs, src.transform, src.shape)
        values = set(out.read(1).ravel().tolist())
    assert values <= set(range(5)) and len(values) > 1
    vector = Path(report["predict"]["BUILDING_VECTOR"])
    assert vector.exists() and vector.with_suffix(".qml").exists()

    two = gpd.read_file(report["vectorize"]["POLYGONS"])
    assert len(two) > 0 and set(two["cluster"]) == {2} and set(two["class"]) == {"two"}

    expected = score(vector, labels, truth_filter="label=1", min_area=1.0).total
    got = report["score"]
    assert [got[k.upper()] for k in ("tp", "fp", "fn")] == [expected[k] for k in ("tp", "fp", "fn")]
    assert got["F1"] == pytest.approx(expected["f1"])
    assert Path(got["LAYERS"]).exists()

    # a geoseg error reaches the Processing log as geoseg's own one line
    assert report["bad_model"] is not None and "-m/--model" in report["bad_model"]
    assert not (root / "bad" / "crop_clusters.tif").exists()


def test_processing_predict_vectorize_score_in_headless_qgis(qgis_python, crop):
    from geoseg.tiles.writer import tile
    from geoseg.train.loop import train

    root, image, labels = crop
    store = tile([image], root / "t.zarr", bands="red,green,blue,nir1", tile_size=64, overlap=0)
    ckpt = train(store, root / "km", method="kmeans", overrides=["n_clusters=5"], device="cpu")
    _check_outputs(_run(qgis_python, root, image, labels, str(ckpt)), root, image, labels)


@pytest.mark.slow
def test_processing_tile_and_train_in_headless_qgis(qgis_python, crop, tmp_path):
    root, image, labels = crop
    report = _run(qgis_python, tmp_path, image, labels)
    store = Path(report["tile"]["OUTPUT"])
    assert store.name == "tiles.zarr" and (store / "zarr.json").exists()
    assert Path(report["train"]["CHECKPOINT"]) == tmp_path / "run" / "best.pt"
    assert Path(report["train"]["CHECKPOINT"]).exists()
    _check_outputs(report, tmp_path, image, labels)
