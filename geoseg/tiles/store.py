"""Reading a tile store written by :func:`geoseg.tiles.tile` (the reader API of
docs/contracts.md), kept apart from the writer so training and ``geoseg info`` only need this.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from geoseg.errors import BadInput


def is_url(path: str | Path) -> bool:
    """True for fsspec URLs (``memory://``, ``s3://``), false for local paths and ``file://``."""
    return "://" in str(path) and not str(path).startswith("file://")


class TileStore:
    """Read access to a complete tile store (the reader API of docs/contracts.md)."""

    def __init__(self, group, url: str):
        self.group, self.url = group, url
        attrs = group.attrs.asdict()
        self.attrs = attrs
        self.image = group["image"]
        self.valid = group["valid"]
        self.label = group.get("label")
        self.origin = group["origin"][:]
        self.n_tiles = int(self.image.shape[0])
        self.tile_size = int(attrs["tile_size"])
        self.overlap = int(attrs["overlap"])
        self.bands = list(attrs["bands"])
        self.band_names = list(attrs["band_names"])
        self.sources = list(attrs["sources"])
        self.stats = {k: np.asarray(v, np.float64) for k, v in attrs["stats"].items()}
        self.label_classes = dict(attrs.get("label_classes") or {})

    @property
    def has_labels(self) -> bool:
        return self.label is not None

    def __len__(self) -> int:
        return self.n_tiles

    def read(self, i: int) -> dict[str, Any]:
        """One tile with its georeferencing, torchgeo-style.

        Returns:
            ``image`` (C,T,T) source dtype, ``valid`` (T,T), ``label`` (T,T) or None,
            ``origin`` ``[source, row, col, n_valid]``, and where it lies: ``transform`` (the
            tile's affine) and ``crs`` (its source's WKT, ``None`` if it had none), so a tile
            never travels without its place on Earth.
        """
        return {
            "image": self.image[i],
            "valid": self.valid[i],
            "label": self.label[i] if self.label is not None else None,
            "origin": self.origin[i],
            "transform": self.tile_transform(i),
            "crs": self.sources[int(self.origin[i][0])]["crs"] or None,
        }

    def tile_transform(self, i: int):
        """The affine transform of tile ``i`` (its source transform shifted to the tile)."""
        from affine import Affine

        source, row, col, _ = (int(v) for v in self.origin[i])
        return Affine(*self.sources[source]["transform"]) @ Affine.translation(col, row)

    def crs(self, i: int):
        """The rasterio CRS of tile ``i``'s source (``None`` if the source had none)."""
        from rasterio.crs import CRS

        wkt = self.sources[int(self.origin[i][0])]["crs"]
        return CRS.from_wkt(wkt) if wkt else None


def open_store(url: str | Path) -> TileStore:
    """Open a tile store written by :func:`geoseg.tiles.tile` (local path or fsspec URL).

    Raises:
        BadInput: not a tile store, or an interrupted one (rerun ``geoseg tile`` to finish it).
    """
    import zarr

    text = str(url)
    if not is_url(text) and not Path(text.removeprefix("file://")).exists():
        raise BadInput(f"{text} does not exist; create it with geoseg tile", param="STORE")
    try:
        group = zarr.open_group(text, mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, ValueError):
        raise BadInput(f"{text} is not a Zarr tile store; create one with geoseg tile") from None
    if "image" not in group or "tile_size" not in group.attrs:
        raise BadInput(f"{text} is not a geoseg tile store; create one with geoseg tile")
    needed = ["valid", "origin"] + (["label"] if group.attrs.get("label_classes") else [])
    missing = [name for name in needed if name not in group]
    if missing:  # a partial copy: the reader would fail later with a bare KeyError
        raise BadInput(
            f"{text} lacks its {', '.join(missing)} array(s): the store is damaged or was "
            "copied partly; copy it again or rerun geoseg tile with --overwrite"
        )
    if not group.attrs.get("complete"):
        raise BadInput(f"{text} is incomplete; rerun the same geoseg tile command to finish it")
    return TileStore(group, text)


def describe_store(url: str | Path) -> dict:
    """What ``geoseg info`` shows for a tile store (from its attributes, not its pixels)."""
    store = open_store(url)
    from rasterio.crs import CRS

    crss = sorted({CRS.from_wkt(s["crs"]).to_string() for s in store.sources if s["crs"]})
    return {
        "path": str(url),
        "kind": "tile store",
        "tiles": store.n_tiles,
        "tile_size": store.tile_size,
        "overlap": store.overlap,
        "dtype": str(store.image.dtype),
        "bands": [
            {"index": b, "name": n, **{k: float(v[i]) for k, v in store.stats.items()}}
            for i, (b, n) in enumerate(zip(store.bands, store.band_names, strict=True))
        ],
        "crs": crss,
        "sources": [s["path"] for s in store.sources],
        "labels": store.has_labels,
        "label_classes": store.label_classes,
        "geoseg_version": store.attrs.get("geoseg_version"),
    }
