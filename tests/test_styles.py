"""geoseg.vector.styles: QML styles that QGIS 3.x loads, with the COG's colours."""

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

from geoseg.io.palette import colour_table
from geoseg.vector.styles import (
    OUTLINE_RGBA,
    OUTLINE_WIDTH_MM,
    write_raster_style,
    write_vector_style,
)

SYSTEM_PYTHON = "/usr/bin/python3"

#: run by the system Python that has qgis.core: loads each layer with its style, reports what
#: QGIS sees
QGIS_PROBE = """
import json, os, sys
from qgis.core import QgsApplication, QgsRasterLayer, QgsVectorLayer
from qgis.PyQt.QtGui import QColor
app = QgsApplication([], False); app.initQgis()


def symbols(renderer):
    if renderer.type() == "categorizedSymbol":
        cats = renderer.categories()  # kept alive: symbols of a temporary list dangle
        items = [(str(c.value()), c.label(), c.symbol()) for c in cats]
    else:
        items = [(None, None, renderer.symbol())]
    layers = [(v, label, s.symbolLayer(0)) for v, label, s in items]
    argb = QColor.HexArgb
    return [[v, label, sl.strokeWidth(), sl.strokeColor().name(argb), int(sl.brushStyle())]
            for v, label, sl in layers]


report = {}
raster = QgsRasterLayer(sys.argv[1], "r")
msg, ok = raster.loadNamedStyle(sys.argv[1][:-4] + ".qml")
transparent = raster.renderer().rasterTransparency().transparentSingleValuePixelList()
report["raster"] = [ok, msg, raster.renderer().type(),
                    {c.value: c.color.name(QColor.HexArgb) for c in raster.renderer().classes()},
                    [[p.min, p.max, p.percentTransparent] for p in transparent]]
for path in sys.argv[2:]:
    vector = QgsVectorLayer(path, "v", "ogr")
    msg, ok = vector.loadNamedStyle(path.rsplit(".", 1)[0] + ".qml")
    report[path] = [ok, msg, vector.renderer().type(), symbols(vector.renderer())]
print(json.dumps(report))
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
        path,
        "w",
        driver="GTiff",
        width=8,
        height=8,
        count=1,
        dtype="uint8",
        nodata=255,
        crs="EPSG:32611",
        transform=from_origin(500_000, 4_000_000, 0.5, 0.5),
    ) as dst:
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


def test_vector_style_categories_use_raster_palette(tmp_path):
    qml = write_vector_style(tmp_path / "all.gpkg", classes={3: "3", 1: "building"})
    renderer = ET.parse(qml).getroot().find("renderer-v2")
    assert renderer.get("type") == "categorizedSymbol" and renderer.get("attr") == "cluster"
    cats = renderer.findall("categories/category")
    assert [(c.get("value"), c.get("label")) for c in cats] == [("1", "building"), ("3", "3")]
    symbols = {s.get("name"): s for s in renderer.findall("symbols/symbol")}
    for cat, value in zip(cats, (1, 3), strict=True):
        layer = symbols[cat.get("symbol")].find("layer")
        stroke = {o.get("name"): o.get("value") for o in layer.findall("Option/Option")}
        assert stroke["outline_color"] == ",".join(map(str, colour_table(4)[value]))


def argb(rgba) -> str:
    r, g, b, a = rgba
    return f"#{a:02x}{r:02x}{g:02x}{b:02x}"


def test_styles_load_in_qgis(tmp_path):
    """Styles as vectorize and predict write them load in QGIS 3.22 and show what we wrote."""
    if not has_qgis():
        pytest.skip("no qgis.core in /usr/bin/python3 (tests/test_qgis.py covers QGIS fully)")
    from geoseg.vector.vectorize import vectorize

    tif = cluster_cog(tmp_path / "clusters.tif", 4)
    write_raster_style(tif, 4)
    single, several = tmp_path / "buildings.gpkg", tmp_path / "all.fgb"
    vectorize(tif, single, classes={"building": 1})
    vectorize(tif, several, class_names={1: "building"})
    env = os.environ | {"QT_QPA_PLATFORM": "offscreen"}
    res = subprocess.run(
        [SYSTEM_PYTHON, "-c", QGIS_PROBE, str(tif), str(single), str(several)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout.strip().splitlines()[-1])
    ok, message, kind, colours, transparent = report["raster"]
    assert ok and kind == "paletted", message
    assert transparent == [[255, 255, 100]]  # nodata
    assert {int(float(k)): v for k, v in colours.items()} == {
        v: argb(rgba) for v, rgba in colour_table(4).items()
    }
    ok, message, kind, symbols = report[str(single)]
    assert ok and kind == "singleSymbol", message
    assert symbols == [[None, None, pytest.approx(OUTLINE_WIDTH_MM), argb(OUTLINE_RGBA), 0]]
    ok, message, kind, symbols = report[str(several)]
    assert ok and kind == "categorizedSymbol", message
    palette = colour_table(4)
    names = {0: "0", 1: "building", 2: "2", 3: "3"}
    assert symbols == [
        [str(v), names[v], pytest.approx(OUTLINE_WIDTH_MM), argb(palette[v]), 0] for v in range(4)
    ]
