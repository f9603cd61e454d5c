"""What a folder holds that a report can show: run files, prediction outputs, score files.

A run folder (``geoseg train -o``) has ``metrics.csv``, ``best.pt`` and ``quicklook/``; an
output folder (``geoseg predict -o``) has ``<stem>_clusters.tif``, one ``<stem>_<class>.tif``
per mapped class and polygons; the demo's folder has both, the run in a subfolder. Files are
recognised by the names geoseg gives them, searched in the folder and one level below it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from geoseg.errors import BadInput

#: GeoPackage layers that ``geoseg score --layers`` writes
SCORE_LAYERS = ("tp", "fp", "fn")


@dataclass
class Contents:
    """The report's inputs found in one folder (empty lists / None when absent)."""

    root: Path
    metrics: Path | None = None
    quicklook: Path | None = None
    checkpoint: Path | None = None
    clusters: list[Path] = field(default_factory=list)
    classes: list[Path] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    polygons: list[Path] = field(default_factory=list)
    score_layers: Path | None = None
    score_json: Path | None = None

    def is_empty(self) -> bool:
        return not (self.metrics or self.quicklook or self.clusters or self.score_layers)


def _files(root: Path, pattern: str) -> list[Path]:
    """Matches in ``root`` and its direct subfolders (not inside tile stores), sorted."""
    found = list(root.glob(pattern)) + list(root.glob(f"*/{pattern}"))
    return sorted(p for p in found if ".zarr" not in p.as_posix() and not p.name.startswith("."))


def _is_score_gpkg(path: Path) -> bool:
    import pyogrio

    try:
        names = {str(row[0]) for row in pyogrio.list_layers(path)}
    except Exception:  # an unreadable GeoPackage is simply not a score file
        return False
    return set(SCORE_LAYERS) <= names


def _is_score_json(path: Path) -> bool:
    try:
        total = json.loads(path.read_text()).get("total", {})
    except (ValueError, AttributeError, OSError):
        return False
    return isinstance(total, dict) and {"tp", "fp", "fn", "f1"} <= set(total)


def find_contents(root: str | Path, *, param: str = "DIR") -> Contents:
    """Find the run, prediction and score files in ``root``.

    Raises:
        BadInput: ``root`` is not a folder, or holds nothing a report can show.
    """
    root = Path(root)
    if not root.is_dir():
        raise BadInput(f"{root} is not a folder; give a run or an output folder", param=param)
    found = Contents(root)
    metrics = _files(root, "metrics.csv")
    found.metrics = metrics[0] if metrics else None
    looks = _files(root, "quicklook/epoch_*.png")
    found.quicklook = looks[-1] if looks else None  # the last epoch: what the run ended with
    ckpt = _files(root, "best.pt")
    found.checkpoint = ckpt[0] if ckpt else None
    found.clusters = _files(root, "*_clusters.tif")
    stems = [p.name[: -len("_clusters.tif")] for p in found.clusters]
    for path in _files(root, "*.tif"):
        if path in found.clusters or path.name.endswith("_probabilities.tif"):
            continue
        stem = next((s for s in stems if path.name.startswith(f"{s}_")), None)
        if stem is not None:  # <stem>_<class>.tif beside <stem>_clusters.tif
            found.classes.append(path)
            found.class_names.append(path.stem[len(stem) + 1 :])
    gpkgs = _files(root, "*.gpkg")
    scores = [p for p in gpkgs if _is_score_gpkg(p)]
    found.score_layers = scores[0] if scores else None
    found.polygons = [p for p in gpkgs if p not in scores]
    jsons = [p for p in _files(root, "*.json") if _is_score_json(p)]
    found.score_json = jsons[0] if jsons else None
    if found.is_empty():
        raise BadInput(
            f"{root} holds no metrics.csv, quicklook, *_clusters.tif or score layers; give a "
            "folder written by geoseg train, predict, score --layers or demo",
            param=param,
        )
    return found
