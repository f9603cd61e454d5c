"""Evaluation: SpaceNet building F1, pixel metrics, and the cluster→class mapping.

Imports are lazy so ``import geoseg.evaluate`` (e.g. for the pure-numpy pixel metrics during
training) does not pull in geopandas or torch.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "score": "geoseg.evaluate.spacenet",
    "ScoreResult": "geoseg.evaluate.spacenet",
    "evaluate": "geoseg.evaluate.rasters",
    "fit_mapping": "geoseg.evaluate.mapping",
    "mapping_from_confusion": "geoseg.evaluate.pixels",
    "confusion_matrix": "geoseg.evaluate.pixels",
    "hungarian_accuracy": "geoseg.evaluate.pixels",
    "many_to_one_accuracy": "geoseg.evaluate.pixels",
    "pixel_metrics": "geoseg.evaluate.pixels",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'geoseg.evaluate' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
