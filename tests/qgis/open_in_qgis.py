"""Open geoseg outputs in a real QGIS, the way a user would, and report what QGIS sees.

Run with Debian's interpreter (``/usr/bin/python3``, which has ``python3-qgis``), headless::

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 open_in_qgis.py RASTER VECTOR OUT.png

Loads the raster and the vector layer with their ``.qml`` styles, renders both to a PNG and
prints one JSON object on stdout (validity, CRS WKT, extents, band/feature counts, style load
results). The pytest side (tests/test_qgis.py) compares it with what geoseg wrote.
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
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QSize  # noqa: E402
from qgis.PyQt.QtGui import QColor  # noqa: E402


def extent(layer):
    e = layer.extent()
    return [e.xMinimum(), e.yMinimum(), e.xMaximum(), e.yMaximum()]


def load_style(layer, path):
    qml = Path(path).with_suffix(".qml")
    if not qml.exists():
        return {"qml": None, "ok": False, "message": "no .qml next to the layer"}
    message, ok = layer.loadNamedStyle(str(qml))
    return {"qml": str(qml), "ok": bool(ok), "message": message}


def main(raster_path, vector_path, png_path):
    app = QgsApplication([], False)
    app.initQgis()
    raster = QgsRasterLayer(raster_path, "clusters")
    vector = QgsVectorLayer(vector_path, "buildings", "ogr")
    report = {
        "raster": {
            "valid": raster.isValid(),
            "crs_wkt": raster.crs().toWkt(),
            "authid": raster.crs().authid(),
            "extent": extent(raster),
            "width": raster.width(),
            "height": raster.height(),
            "bands": raster.bandCount(),
            "renderer_before_style": raster.renderer().type() if raster.renderer() else None,
            "style": load_style(raster, raster_path),
            "renderer": raster.renderer().type() if raster.renderer() else None,
        },
        "vector": {
            "valid": vector.isValid(),
            "crs_wkt": vector.crs().toWkt(),
            "authid": vector.crs().authid(),
            "extent": extent(vector),
            "features": vector.featureCount(),
            "fields": [f.name() for f in vector.fields()],
            "style": load_style(vector, vector_path),
        },
    }
    settings = QgsMapSettings()
    settings.setLayers([vector, raster])
    settings.setDestinationCrs(raster.crs())
    settings.setExtent(raster.extent())
    settings.setOutputSize(QSize(400, 400))
    settings.setBackgroundColor(QColor(255, 255, 255))
    job = QgsMapRendererSequentialJob(settings)
    job.start()
    job.waitForFinished()
    report["render"] = {"saved": job.renderedImage().save(png_path, "PNG"), "png": png_path}
    print(json.dumps(report), flush=True)
    # QGIS 3.22 can crash while tearing down providers in a headless script (after our work is
    # done and reported); skip the teardown so the exit code reflects the checks, not that.
    os._exit(0)


if __name__ == "__main__":
    main(*sys.argv[1:4])
