"""Find image/label pairs in the folder layouts people download datasets in.

``geoseg tile`` takes files, folders or dataset roots; this module turns them into a flat list of
:class:`Scene` (one georeferenced image, optionally its labels) so the tiler never needs to
know where a dataset came from. Recognised layouts:

- **SpaceNet**: an AOI folder (or a root holding AOI folders) with imagery folders such as
  ``MUL-PanSharpen``, ``PS-MS``, ``PS-RGBNIR``, ``RGB-PanSharpen`` and labels under
  ``geojson/buildings`` (or ``geojson_buildings``), matched by the ``AOI_..._img<N>`` id.
  Multispectral imagery is preferred, because geoseg exists to use the extra bands.
- **Inria**: ``images/`` and ``gt/`` with the same file names.
- **ISPRS Potsdam**: ``4_Ortho_RGBIR`` (else ``2_Ortho_RGB``) and ``5_Labels_all`` (colour-coded),
  matched by the ``potsdam_<a>_<b>`` id.
- **Band stacks**: single-band files of one scene named ``<stem>-R.tif``, ``-G``, ``-B``, ``-N``
  (or ``_red``, ``_nir``, ...) are staged as one multiband RGBN source, read window by window.
- **Plain**: any raster file, or every raster in a folder (recursively, sorted).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from geoseg.errors import BadInput
from geoseg.io.labels import VECTOR_SUFFIXES

log = logging.getLogger(__name__)

RASTER_SUFFIXES = {".tif", ".tiff", ".vrt", ".jp2", ".img", ".png"}

#: Imagery folder names of SpaceNet releases, most useful (most bands) first.
SPACENET_IMAGERY = ("MUL-PanSharpen", "PS-MS", "PS-RGBNIR", "RGB-PanSharpen", "PS-RGB", "MUL")
SPACENET_LABELS = ("geojson/buildings", "geojson_buildings", "geojson/spacenet-buildings")

#: Suffix of a single-band file → (position in the stack, band name).
_STACK_BANDS = {
    "r": (0, "red"),
    "red": (0, "red"),
    "g": (1, "green"),
    "green": (1, "green"),
    "b": (2, "blue"),
    "blue": (2, "blue"),
    "n": (3, "nir"),
    "nir": (3, "nir"),
    "ir": (3, "nir"),
}
_STACK_RE = re.compile(r"^(?P<stem>.+)[-_](?P<band>r|g|b|n|red|green|blue|nir|ir)$", re.IGNORECASE)
_SPACENET_ID = re.compile(r"(AOI_.*?img\d+)", re.IGNORECASE)
_POTSDAM_ID = re.compile(r"potsdam_(\d+_\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class Scene:
    """One source image of a tile store.

    Attributes:
        name: a short id (file stem, SpaceNet image id, ...), for messages and attrs.
        images: one raster path, or several single-band rasters of one grid stacked in order.
        label: labels of this scene (vector file or label raster), if the layout has them.
        descriptions: band names for a stack (the files' own descriptions otherwise).
    """

    name: str
    images: tuple[str, ...]
    label: str | None = None
    descriptions: tuple[str, ...] | None = None

    @property
    def path(self) -> str:
        """The path recorded in the store: the image, or the stack's common stem."""
        if len(self.images) == 1:
            return self.images[0]
        return str(Path(self.images[0]).with_name(self.name))


def find_scenes(inputs: Sequence[str | Path], *, labels: str | Path | None = None) -> list[Scene]:
    """Expand files, folders and dataset roots into scenes, in a stable order.

    Args:
        inputs: raster files, URLs, folders or dataset roots.
        labels: one labels file applied to every scene (overrides layout labels).

    Raises:
        BadInput: (``INPUT``) a missing path or a folder without rasters, naming what to pass.
    """
    scenes: list[Scene] = []
    loose: list[Path] = []
    for item in inputs:
        text = str(item)
        if "://" in text or text.startswith("/vsi"):
            scenes.append(Scene(name=Path(text).stem, images=(text,)))
            continue
        path = Path(text)
        if not path.exists():
            raise BadInput(f"{path} does not exist; check the path", param="INPUT")
        if path.is_file():
            loose.append(path)
            continue
        found = _spacenet(path) or _inria(path) or _potsdam(path)
        if found:
            scenes.extend(found)
            continue
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in RASTER_SUFFIXES)
        if not files:
            raise BadInput(
                f"{path} contains no raster; pass a folder with *.tif or a SpaceNet AOI, Inria "
                "or Potsdam dataset folder",
                param="INPUT",
            )
        scenes.extend(_plain(files))
    scenes.extend(_plain(loose))
    if labels is not None:
        label = str(labels)
        if "://" not in label and not Path(label).exists():
            raise BadInput(f"{label} does not exist; check the path", param="--labels")
        scenes = [Scene(s.name, s.images, label, s.descriptions) for s in scenes]
    return scenes


def _plain(files: Sequence[Path]) -> list[Scene]:
    """Files as scenes, grouping single-band ``-R/-G/-B/-N`` files of one stem into a stack."""
    stacks: dict[str, dict[int, tuple[Path, str]]] = {}
    for f in files:
        m = _STACK_RE.match(f.stem)
        if m:
            pos, name = _STACK_BANDS[m["band"].lower()]
            stacks.setdefault(str(f.parent / m["stem"]), {})[pos] = (f, name)
    stacks = {k: v for k, v in stacks.items() if len(v) >= 2}
    scenes, seen = [], set()
    for f in files:
        m = _STACK_RE.match(f.stem)
        key = str(f.parent / m["stem"]) if m else None
        if key in stacks:
            if key not in seen:
                seen.add(key)
                members = [stacks[key][pos] for pos in sorted(stacks[key])]
                scenes.append(
                    Scene(
                        name=Path(key).name,
                        images=tuple(str(p) for p, _ in members),
                        descriptions=tuple(n for _, n in members),
                    )
                )
            continue
        if any(f.stem.startswith(Path(k).name + s) for k in stacks for s in "-_"):
            # e.g. "<stem>-RGB.tif" next to the R/G/B/N files: a composite of the same scene.
            log.info("skipping %s: the band stack of the same scene is used instead", f)
            continue
        scenes.append(Scene(name=f.stem, images=(str(f),)))
    return scenes


def _spacenet(root: Path) -> list[Scene]:
    aois = (
        [root]
        if _spacenet_imagery(root)
        else sorted(d for d in root.iterdir() if d.is_dir() and _spacenet_imagery(d))
    )
    scenes = []
    for aoi in aois:
        imagery = _spacenet_imagery(aoi)
        label_dir = next((aoi / s for s in SPACENET_LABELS if (aoi / s).is_dir()), None)
        labels = {}
        if label_dir:
            for p in sorted(label_dir.iterdir()):
                m = _SPACENET_ID.search(p.stem)
                if m and p.suffix.lower() in VECTOR_SUFFIXES:
                    labels[m[1].lower()] = str(p)
        for img in sorted(imagery.glob("*.tif")):
            m = _SPACENET_ID.search(img.stem)
            image_id = m[1] if m else img.stem
            scenes.append(Scene(image_id, (str(img),), labels.get(image_id.lower())))
    return scenes


def _spacenet_imagery(folder: Path) -> Path | None:
    return next((folder / n for n in SPACENET_IMAGERY if (folder / n).is_dir()), None)


def _inria(root: Path) -> list[Scene]:
    images, gt = root / "images", root / "gt"
    if not images.is_dir():
        return []
    scenes = []
    for img in sorted(p for p in images.iterdir() if p.suffix.lower() in RASTER_SUFFIXES):
        label = gt / img.name
        scenes.append(Scene(img.stem, (str(img),), str(label) if label.exists() else None))
    return scenes


def _potsdam(root: Path) -> list[Scene]:
    imagery = next(
        (root / n for n in ("4_Ortho_RGBIR", "2_Ortho_RGB") if (root / n).is_dir()), None
    )
    if imagery is None:
        return []
    label_dir = next(
        (root / n for n in ("5_Labels_all", "5_Labels_for_participants") if (root / n).is_dir()),
        None,
    )
    labels = {}
    if label_dir:
        for p in sorted(label_dir.glob("*.tif")):
            m = _POTSDAM_ID.search(p.stem)
            if m:
                labels[m[1]] = str(p)
    scenes = []
    for img in sorted(imagery.glob("*.tif")):
        m = _POTSDAM_ID.search(img.stem)
        label = labels.get(m[1]) if m else None
        name = f"potsdam_{m[1]}" if m else img.stem
        scenes.append(Scene(name, (str(img),), label))
    return scenes
