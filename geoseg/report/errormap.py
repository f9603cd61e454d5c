"""The score, seen: counts and an error map of true positives, false positives and misses.

``geoseg score --layers`` writes the matched proposals (``tp``), unmatched proposals (``fp``)
and missed footprints (``fn``) as GeoPackage layers; here they are outlined on the report's
display grid in the same colours as their QGIS styles, so the page and QGIS read alike.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from geoseg.report.contents import SCORE_LAYERS
from geoseg.report.panels import Grid
from geoseg.vector.styles import SCORE_RGBA

#: outline colour per score layer (RGB): the layers' QGIS style colours
LAYER_COLOURS = {name: rgba[:3] for name, rgba in SCORE_RGBA.items()}
LAYER_LABELS = {
    "tp": "true positive (matched proposal)",
    "fp": "false positive (unmatched proposal)",
    "fn": "missed footprint (false negative)",
}


def score_summary(layers: Path | None, score_json: Path | None) -> dict | None:
    """TP/FP/FN, precision, recall and F1: from the score JSON when there is one, else
    counted from the layers (each feature of ``tp``/``fp``/``fn`` is one polygon)."""
    from geoseg.evaluate.spacenet import prf

    if score_json is not None:
        total = dict(json.loads(score_json.read_text())["total"])
        total["source"] = score_json.name
        return total
    if layers is None:
        return None
    import pyogrio

    counts = {name: int(pyogrio.read_info(layers, layer=name)["features"]) for name in SCORE_LAYERS}
    precision, recall, f1 = prf(counts["tp"], counts["fp"], counts["fn"])
    return {
        **counts,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "source": f"counted from the layers of {layers.name}",
    }


def error_map(
    layers: Path, grid: Grid, background: np.ndarray | None
) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """(H, W, 3) uint8: tp/fp/fn outlines (2 px) over a dimmed background, and the legend."""
    import geopandas as gpd
    from rasterio.features import rasterize
    from scipy.ndimage import binary_dilation

    shape = (grid.height, grid.width)
    out = np.full((*shape, 3), 255, np.uint8)
    if background is not None:
        out[:] = (background.astype(np.float32) * 0.5 + 255 * 0.5).astype(np.uint8)
    legend = []
    for name in ("fn", "fp", "tp"):  # matches drawn last, on top
        frame = gpd.read_file(layers, layer=name)
        if frame.crs is not None and grid.crs is not None:
            frame = frame.to_crs(grid.crs)
        rgb = LAYER_COLOURS[name]
        legend.append(("#{:02x}{:02x}{:02x}".format(*rgb), f"{LAYER_LABELS[name]}: {len(frame)}"))
        edges = [(g.boundary, 1) for g in frame.geometry if g is not None and not g.is_empty]
        if not edges:
            continue
        lines = rasterize(edges, out_shape=shape, transform=grid.transform, all_touched=True)
        out[binary_dilation(lines.astype(bool))] = rgb
    return out, legend[::-1]
