"""geoseg.styles: QML styles that QGIS 3.x loads, with the COG's colours."""

from __future__ import annotations

import json
import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from shapely.geometry import box

from geoseg.raster import colour_table
from geoseg.styles import OUTLINE_WIDTH_MM, write_raster_style, write_vector_style

SYSTEM_PYTHON = "/usr/bin/python3"

#: run by the system Python that has qgis.core: loads each layer with its style, reports what
#: QGIS sees
QGIS_PROBE = """
import json, os, sys
from qgis.core import QgsApplication, QgsRasterLayer, QgsVectorLayer
from qgis.PyQt.QtGui import QColor
app = QgsApplication([], False); app.initQgis()
raster = QgsRasterLayer(sys.argv[1], "r")
vector = QgsVectorLayer(sys.argv[2], "v", "ogr")
r_msg, r_ok = raster.loadNamedStyle(sys.argv[1][:-4] + ".qml")
v_msg, v_ok = vector.loadNamedStyle(sys.argv[2][:-5] + ".qml")
layer = vector.renderer().symbol().symbolLayer(0)
print(json.dumps({
    "raster": [r_ok, r_msg, raster.renderer().type(),
               {c.value: c.color.name(QColor.HexArgb) for c in raster.renderer().classes()}],
    "vector": [v_ok, v_msg, vector.renderer().type(), layer.strokeWidth(),
               layer.strokeColor().name(QColor.HexArgb), layer.brushStyle()],
}))
sys.stdout.flush()
os._exit(0)  # QGIS may crash tearing down layers after the app; the report is out
"""


def has_qgis() -> bool:
    if not Path(SYSTEM_PYTHON).exists():
        return False
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import qgis.core"], capture_output=True)
    return probe.returncode == 0


def cluster_cog(path: Path, n: int) -> Path:
    """A class raster with the shared palette embedded, as predict writes it."""
    data = (np.arange(64, dtype=np.uint8).reshape(8, 8) % n).astype(np.uint8)
    data[0, 0] = 255
    with rasterio.open(
        path, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint8", nodata=255,
        crs="EPSG:32611", transform=from_origin(500_000, 4_000_000, 0.5, 0.5),
    ) as dst:  # fmt: skip
        dst.write(data, 1)
        dst.write_colormap(1, colour_table(n))
    return path


def test_raster_style_matches_embedded_colour_table(tmp_path):
    tif = cluster_cog(tmp_path / "clusters.tif", 6)
    qml = write_raster_style(tif, 6, {1: "building"})
    assert qml == tmp_path / "clusters.qml"
    root = ET.parse(qml).getroot()
    assert root.tag == "qgis" and root.get("version", "").startswith("3.")
    renderer = root.find("pipe/rasterrenderer")
    assert renderer.get("type") == "paletted" and renderer.get("band") == "1"
    entries = renderer.findall("colorPalette/paletteEntry")
    with rasterio.open(tif) as src:
        cmap = src.colormap(1)
    assert [int(e.get("value")) for e in entries] == list(range(6))
    for e in entries:
        r, g, b, a = cmap[int(e.get("value"))]
        assert e.get("color") == f"#{r:02x}{g:02x}{b:02x}" and int(e.get("alpha")) == a
    assert entries[1].get("label") == "building" and entries[2].get("label") == "2"
    nodata = renderer.find("rasterTransparency/singleValuePixelList/pixelListEntry")
    assert nodata.get("min") == nodata.get("max") == "255"
    assert nodata.get("percentTransparent") == "100"


def test_raster_style_explicit_values_skip_nodata(tmp_path):
    qml = write_raster_style(tmp_path / "not_yet.tif", [3, 7, 7, 0], nodata=7)
    root = ET.parse(qml).getroot()
    values = [e.get("value") for e in root.iter("paletteEntry")]
    assert values == ["0", "3"]
    assert next(root.iter("paletteEntry")).get("color") == "#{:02x}{:02x}{:02x}".format(
        *colour_table(1)[0][:3]
    )


@pytest.mark.parametrize("outline_only", [True, False])
def test_vector_style_outlines(tmp_path, outline_only):
    qml = write_vector_style(tmp_path / "buildings.gpkg", outline_only=outline_only)
    assert qml == tmp_path / "buildings.qml"
    root = ET.parse(qml).getroot()
    renderer = root.find("renderer-v2")
    assert renderer.get("type") == "singleSymbol"
    layer = renderer.find("symbols/symbol/layer")
    assert layer.get("class") == "SimpleFill"
    props = {o.get("name"): o.get("value") for o in layer.findall("Option/Option")}
    assert float(props["outline_width"]) == OUTLINE_WIDTH_MM
    assert props["outline_width_unit"] == "MM"
    assert props["style"] == ("no" if outline_only else "solid")
    assert props == {p.get("k"): p.get("v") for p in layer.findall("prop")}


def test_styles_load_in_qgis(tmp_path):
    if not has_qgis():
        pytest.skip("no qgis.core in /usr/bin/python3 (tests/test_qgis.py covers QGIS fully)")
    import geopandas as gpd

    tif = cluster_cog(tmp_path / "clusters.tif", 4)
    write_raster_style(tif, 4)
    gpkg = tmp_path / "buildings.gpkg"
    gpd.GeoDataFrame({"cluster": [1]}, geometry=[box(500_000, 3_999_998, 500_002, 4_000_000)],
                     crs="EPSG:32611").to_file(gpkg)  # fmt: skip
    write_vector_style(gpkg)
    env = os.environ | {"QT_QPA_PLATFORM": "offscreen"}
    res = subprocess.run(
        [SYSTEM_PYTHON, "-c", QGIS_PROBE, str(tif), str(gpkg)],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout.strip().splitlines()[-1])
    ok, message, kind, colours = report["raster"]
    assert ok, message
    assert kind == "paletted"
    expected = {str(v): f"#{a:02x}{r:02x}{g:02x}{b:02x}"
                for v, (r, g, b, a) in colour_table(4).items()}  # fmt: skip
    assert {str(int(float(k))): v for k, v in colours.items()} == expected
    ok, message, kind, width, stroke, brush = report["vector"]
    assert ok, message
    assert kind == "singleSymbol" and width == pytest.approx(OUTLINE_WIDTH_MM)
    assert brush == 0  # Qt.NoBrush: outlines only
    assert stroke.lower() == "#ffff00aa"
