"""The geoseg functions the building benchmark calls, imported in one place.

geoseg's modules are moving into packages (issue 12, docs/architecture.md); the benchmark
imports them only through this module, so a move is fixed here once (each name lists the
modules to try, in order).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_WHERE = {
    "tile": ("geoseg.tiles.writer",),
    "open_store": ("geoseg.tiles.store",),
    "tile_windows": ("geoseg.tiles.grid",),
    "train": ("geoseg.train.loop",),
    "predict": ("geoseg.predict.raster",),
    "fit_mapping": ("geoseg.evaluate",),
    "score": ("geoseg.evaluate",),
    "vectorize": ("geoseg.vector.vectorize",),
    "read_window": ("geoseg.io.rasters",),
    "resolve_bands": ("geoseg.io.bands",),
    "load_checkpoint": ("geoseg.checkpoint",),
    "NoClassFound": ("geoseg.evaluate.mapping",),
    "GeoSegError": ("geoseg.errors",),
    "set_enabled": ("geoseg.progress",),
    "BadInput": ("geoseg.errors",),
}


def _find(name: str) -> Any:
    for module in _WHERE[name]:
        try:
            obj = getattr(import_module(module), name, None)
        except ImportError:
            continue
        if obj is not None:
            return obj
    raise ImportError(f"geoseg has no {name} in {', '.join(_WHERE[name])}")


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return _find(name)
    raise AttributeError(name)
