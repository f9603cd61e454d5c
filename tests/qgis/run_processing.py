"""Run geoseg's Processing algorithms in a real, headless QGIS, as the Processing toolbox would.

Run with Debian's interpreter (``/usr/bin/python3``, which has ``python3-qgis``)::

    QT_QPA_PLATFORM=offscreen GEOSEG_COMMAND="/venv/bin/python -m geoseg" \\
        /usr/bin/python3 run_processing.py PLUGIN_DIR RASTER OUT_DIR TRUTH [MODEL]

Loads ``PLUGIN_DIR`` (``geoseg/qgis``) the way QGIS loads a plugin folder (``classFactory``,
relative imports, a package name other than ``geoseg``), then runs ``geoseg:tile`` and
``train`` (k-means; skipped when MODEL is given), ``predict``, ``vectorize`` and ``score``
through ``processing.run`` and prints one JSON object with what came back.
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


def main(plugin_dir, raster, out_dir, truth, model=None):
    app = QgsApplication([], False)
    app.initQgis()
    sys.path.append("/usr/share/qgis/python/plugins")
    import processing
    from processing.core.Processing import Processing

    Processing.initialize()
    plugin = load_plugin(plugin_dir)  # kept referenced, as QGIS keeps its plugins
    registry = QgsApplication.processingRegistry()
    report = {
        "algorithms": sorted(
            a.id() for a in registry.algorithms() if a.provider() and a.provider().id() == "geoseg"
        )
    }
    out = Path(out_dir)
    # [tile → train →] predict → vectorize → score, each as the toolbox would run it
    if model is None:
        report["tile"] = processing.run(
            "geoseg:tile",
            {
                "INPUT": raster,
                "OUTPUT": str(out / "tiles"),
                "BANDS": "red,green,blue,nir1",
                "TILE_SIZE": 64,
                "OVERLAP": 0,
            },
        )
        report["train"] = processing.run(
            "geoseg:train",
            {
                "STORE": report["tile"]["OUTPUT"],
                "OUTPUT": str(out / "run"),
                "METHOD": 3,
                "SET": "n_clusters=5; seed=0",
                "DEVICE": 1,
            },
        )
        model = report["train"]["CHECKPOINT"]
    predicted = processing.run(
        "geoseg:predict",
        {
            "RASTER": raster,
            "MODEL": model,
            "OUTPUT": str(out / "pred"),
            "CLASS": "building=0,1",
            "DEVICE": 1,
        },
    )
    report["predict"] = {k: str(v) for k, v in predicted.items()}
    report["vectorize"] = processing.run(
        "geoseg:vectorize",
        {"RASTER": predicted["CLUSTERS"], "OUTPUT": str(out / "clusters_2.gpkg"), "CLASS": "two=2"},
    )
    scored = processing.run(
        "geoseg:score",
        {
            "PRED": predicted["BUILDING_VECTOR"],
            "TRUTH": truth,
            "TRUTH_FILTER": "label=1",
            "MIN_AREA": "1",
            "LAYERS": str(out / "errors.gpkg"),
        },
    )
    report["score"] = scored
    try:
        processing.run(
            "geoseg:predict",
            {"RASTER": raster, "MODEL": str(out / "no.pt"), "OUTPUT": str(out / "bad")},
        )
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
