"""Run geoseg's Processing algorithms in a real, headless QGIS, as the Processing toolbox would.

Run with Debian's interpreter (``/usr/bin/python3``, which has ``python3-qgis``)::

    QT_QPA_PLATFORM=offscreen GEOSEG_COMMAND="/venv/bin/python -m geoseg" \\
        /usr/bin/python3 run_processing.py PLUGIN_DIR RASTER MODEL OUT_DIR TRUTH

Loads ``PLUGIN_DIR`` (``geoseg/qgis``) the way QGIS loads a plugin folder (``classFactory``,
relative imports, a package name other than ``geoseg``), then runs ``geoseg:predict`` and
``geoseg:score`` through ``processing.run`` and prints one JSON object with what came back.
"""

import importlib.util
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qgis.core import QgsApplication, QgsProcessingException  # noqa: E402


def load_plugin(folder):
    spec = importlib.util.spec_from_file_location(
        "geoseg_processing", Path(folder) / "__init__.py", submodule_search_locations=[folder]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    plugin = module.classFactory(None)
    plugin.initProcessing()
    return plugin


def main(plugin_dir, raster, model, out_dir, truth):
    app = QgsApplication([], False)
    app.initQgis()
    sys.path.append("/usr/share/qgis/python/plugins")
    import processing
    from processing.core.Processing import Processing

    Processing.initialize()
    plugin = load_plugin(plugin_dir)  # kept referenced, as QGIS keeps its plugins
    registry = QgsApplication.processingRegistry()
    report = {"algorithms": sorted(a.id() for a in registry.algorithms() if a.provider()
                                   and a.provider().id() == "geoseg")}  # fmt: skip
    predicted = processing.run(
        "geoseg:predict",
        {"RASTER": raster, "MODEL": model, "OUTPUT": str(Path(out_dir) / "pred"),
         "CLASS": "building=0,1", "DEVICE": 1},
    )  # fmt: skip
    report["predict"] = {k: str(v) for k, v in predicted.items()}
    scored = processing.run(
        "geoseg:score",
        {"PRED": predicted["BUILDING_VECTOR"], "TRUTH": truth, "TRUTH_FILTER": "label=1",
         "MIN_AREA": "1", "LAYERS": str(Path(out_dir) / "errors.gpkg")},
    )  # fmt: skip
    report["score"] = scored
    try:
        processing.run("geoseg:predict", {"RASTER": raster, "MODEL": str(Path(out_dir) / "no.pt"),
                                          "OUTPUT": str(Path(out_dir) / "bad")})  # fmt: skip
        report["bad_model"] = None
    except QgsProcessingException as exc:
        report["bad_model"] = str(exc)
    print(json.dumps(report), flush=True)
    plugin.unload()
    # QGIS 3.22 can crash while tearing down providers in a headless script (after the work is
    # done and reported); skip the teardown so the exit code reflects the checks, not that.
    os._exit(0)


if __name__ == "__main__":
    main(*sys.argv[1:6])
