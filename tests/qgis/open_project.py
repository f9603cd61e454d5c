"""Open a geoseg QGIS project headless, report every layer, and render it to PNGs.

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 open_project.py PROJECT.qgz OUT_DIR

Prints one JSON object: per layer (top first) its name, validity, source, renderer type,
visibility, WKB type, stroke colour of a single-symbol renderer and paletted classes. Writes
``all.png`` (the project as it opens), ``image.png`` (the image alone) and ``image_building.png``
(the image under the building raster), each at the image's own pixel grid.
"""

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qgis.core import (  # noqa: E402
    QgsApplication,
    QgsMapRendererSequentialJob,
    QgsMapSettings,
    QgsProject,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QSize  # noqa: E402
from qgis.PyQt.QtGui import QColor  # noqa: E402


def describe(node):
    layer = node.layer()
    renderer = layer.renderer()
    info = {
        "name": layer.name(),
        "valid": layer.isValid(),
        "source": layer.source(),
        "renderer": renderer.type() if renderer else None,
        "visible": node.isVisible(),
    }
    if hasattr(layer, "wkbType"):
        info["wkb"] = QgsWkbTypes.displayString(layer.wkbType())
        if info["renderer"] == "singleSymbol":
            info["stroke"] = renderer.symbol().symbolLayer(0).strokeColor().name()
    if info["renderer"] == "paletted":
        info["classes"] = {
            str(int(c.value)): [c.label, c.color.name(QColor.HexArgb)] for c in renderer.classes()
        }
    if info["renderer"] == "multibandcolor":
        info["bands"] = [renderer.redBand(), renderer.greenBand(), renderer.blueBand()]
    return info


def render(layers, extent, crs, size, path):
    settings = QgsMapSettings()
    settings.setLayers(layers)
    settings.setDestinationCrs(crs)
    settings.setExtent(extent)
    settings.setOutputSize(size)
    settings.setBackgroundColor(QColor(255, 255, 255))
    job = QgsMapRendererSequentialJob(settings)
    job.start()
    job.waitForFinished()
    return job.renderedImage().save(str(path), "PNG")


def main(project_path, out_dir):
    app = QgsApplication([], False)
    app.initQgis()
    project = QgsProject.instance()
    report = {"read": project.read(project_path)}
    nodes = project.layerTreeRoot().findLayers()
    report["layers"] = [describe(node) for node in nodes]
    by_name = {node.layer().name(): node.layer() for node in nodes}
    image = by_name["image"]
    visible = [n.layer() for n in nodes if n.isVisible()]
    size = QSize(image.width(), image.height())
    out = Path(out_dir)
    report["rendered"] = [
        render(visible, image.extent(), image.crs(), size, out / "all.png"),
        render([image], image.extent(), image.crs(), size, out / "image.png"),
        render(
            [by_name["building"], image],
            image.extent(),
            image.crs(),
            size,
            out / "image_building.png",
        ),
    ]
    print(json.dumps(report), flush=True)
    os._exit(0)  # QGIS 3.22 may crash tearing down layers after the report is out


if __name__ == "__main__":
    main(*sys.argv[1:3])
