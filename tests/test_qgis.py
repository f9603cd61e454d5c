"""A real client: Debian's QGIS opens what geoseg writes from a real sample, as a user would.

The bundled SpaceNet Vegas scene goes through tile → k-means → predict (with a building class)
→ GeoPackage; QGIS 3.x (``python3-qgis``, headless) then loads the COG and the GeoPackage with
their ``.qml`` styles and renders them. In CI (``GEOSEG_REQUIRE_QGIS=1``, set by .ci/run) a
missing QGIS is a failure, not a skip.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

PROBE = Path(__file__).parent / "qgis" / "open_in_qgis.py"

pytestmark = pytest.mark.qgis


@pytest.fixture(scope="module")
def products(tmp_path_factory):
    """COG + GeoPackage predicted from the real bundled SpaceNet Vegas sample."""
    from geoseg.demo import sample_paths
    from geoseg.predict.raster import predict
    from geoseg.tiles.writer import tile
    from geoseg.train.loop import train

    out = tmp_path_factory.mktemp("qgis")
    image, _ = sample_paths()
    store = tile([image], out / "tiles.zarr", bands="red,green,blue,nir1", tile_size=128, overlap=0)
    ckpt = train(store, out / "run", method="kmeans", overrides=["n_clusters=5"], device="cpu")
    written = predict(image, ckpt, out / "pred", classes={"building": [0, 1]}, device="cpu")
    return image, written


def test_qgis_opens_styles_and_renders_geoseg_outputs(qgis_python, products, tmp_path):
    import geopandas as gpd
    import rasterio
    from PIL import Image
    from pyproj import CRS

    image, written = products
    cog, gpkg = written["clusters"], written["building:vector"]
    png = tmp_path / "render.png"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    run = subprocess.run(
        [qgis_python, str(PROBE), str(cog), str(gpkg), str(png)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    raster, vector = report["raster"], report["vector"]

    with rasterio.open(image) as src:
        input_crs, input_bounds = CRS.from_wkt(src.crs.to_wkt()), src.bounds
        width, height = src.width, src.height
    polygons = gpd.read_file(gpkg)

    assert raster["valid"] and vector["valid"]
    assert CRS.from_wkt(raster["crs_wkt"]) == input_crs
    assert CRS.from_wkt(vector["crs_wkt"]) == input_crs
    assert (raster["width"], raster["height"], raster["bands"]) == (width, height, 1)
    np.testing.assert_allclose(raster["extent"], list(input_bounds), rtol=0, atol=1e-9)
    assert vector["features"] == len(polygons) > 0
    np.testing.assert_allclose(vector["extent"], polygons.total_bounds, rtol=0, atol=1e-9)
    assert {"class", "cluster", "area_m2", "score"} <= set(vector["fields"])
    assert raster["style"]["ok"], raster["style"]
    assert vector["style"]["ok"], vector["style"]
    assert raster["renderer"] == "paletted"

    assert report["render"]["saved"]
    pixels = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3)
    colours, counts = np.unique(pixels, axis=0, return_counts=True)
    not_white = 1 - counts[(colours == 255).all(axis=1)].sum() / len(pixels)
    assert len(colours) >= 4, "the styled render is (nearly) one colour"
    assert not_white > 0.5, f"only {not_white:.0%} of the render is drawn"
