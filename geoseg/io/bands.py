"""Bands: names of sensor bands, the user's band selection, and the one normalisation.

Everything that turns "which bands, in which units" into model input lives here, so train and
predict cannot disagree about it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from geoseg.errors import BadInput

log = logging.getLogger(__name__)

#: Band names of common sensors, by band count, used when a file carries no band descriptions.
#: WorldView-3 8-band MS order; NAIP and ISPRS Potsdam RGBIR share the RGBN order.
SENSOR_PRESETS: dict[int, tuple[str, ...]] = {
    8: ("coastal", "blue", "green", "yellow", "red", "rededge", "nir1", "nir2"),
    4: ("red", "green", "blue", "nir"),
    3: ("red", "green", "blue"),
}

#: Other spellings users type for the same band.
_ALIASES = {
    "nir": ("nir", "nir1"),
    "ir": ("nir", "nir1"),
    "red-edge": ("rededge",),
    "re": ("rededge",),
}


def band_names(descriptions: Sequence[str | None]) -> list[str]:
    """Lower-case names of the bands: descriptions, else the sensor preset, else ``b1, b2, ...``.

    A partial or non-unique set of descriptions is not trusted, because band selection by
    name must be unambiguous.
    """
    count = len(descriptions)
    described = [(d or "").strip().lower() for d in descriptions]
    if all(described) and len(set(described)) == count:
        return described
    if count in SENSOR_PRESETS:
        return list(SENSOR_PRESETS[count])
    return [f"b{i}" for i in range(1, count + 1)]


def resolve_bands(src_or_descriptions: Any, bands: str | Sequence[int | str] | None) -> list[int]:
    """Turn a user's band selection into 1-based band indices.

    Args:
        src_or_descriptions: an open rasterio dataset, a band-description sequence, or a band
            count (int).
        bands: ``None`` (all bands), ``"1,2,3"``, ``"red,green,blue,nir"`` or a list of ints /
            names. Names come from band descriptions, else the sensor preset for the count
            (WorldView-3 8-band, RGBN, RGB); ``nir`` also matches ``nir1``.

    Returns:
        1-based band indices in the order asked.

    Raises:
        BadInput: (``--bands``) an index out of range or an unknown name, naming what is valid.
    """
    if isinstance(src_or_descriptions, int):
        descriptions: Sequence[str | None] = [None] * src_or_descriptions
    elif hasattr(src_or_descriptions, "descriptions"):
        descriptions = src_or_descriptions.descriptions
    else:
        descriptions = list(src_or_descriptions)
    count = len(descriptions)
    names = band_names(descriptions)
    if bands is None:
        return list(range(1, count + 1))
    items = [b.strip() for b in bands.split(",")] if isinstance(bands, str) else list(bands)
    if not items or any(item == "" for item in items):
        raise BadInput(f"empty band list {bands!r}; give e.g. 1,2,3", param="--bands")
    out = []
    for item in items:
        if isinstance(item, (int, np.integer)) or (isinstance(item, str) and item.isdigit()):
            index = int(item)
            if not 1 <= index <= count:
                raise BadInput(
                    f"band {index} is out of range; this raster has bands 1..{count}",
                    param="--bands",
                )
            out.append(index)
            continue
        wanted = str(item).lower()
        candidates = _ALIASES.get(wanted, (wanted,))
        match = next((names.index(c) + 1 for c in candidates if c in names), None)
        if match is None:
            raise BadInput(
                f"no band named {item!r}; valid names are {','.join(names)} or indices 1..{count}",
                param="--bands",
            )
        out.append(match)
    return out


OPTICAL_BANDS = frozenset(
    {"coastal", "blue", "green", "yellow", "red", "pan", "panchromatic", "r", "g", "b"}
)
"""Band names (lower case) that colour jitter may touch; everything else (NIR, red edge,
SWIR, unknown ``b<i>`` names) is left untouched."""


def normalize(x: Any, stats: Mapping[str, Sequence[float]]) -> Any:
    """Clip each band to its [p2, p98] range, then standardise to float32.

    The one normalisation used by training and prediction (docs/contracts.md), so a model sees
    the same numbers at both times. Clipping first keeps rare saturated pixels (specular roofs,
    clouds) from stretching the scale of every other pixel.

    Args:
        x: ``(C, H, W)`` or ``(B, C, H, W)`` numpy array or torch tensor, any numeric dtype.
        stats: ``{"mean", "std", "p2", "p98"}``, one value per band (a store's or a
            checkpoint's ``norm``).

    Returns:
        float32 array of the same kind and shape.
    """
    c = x.shape[-3]
    if any(len(stats[k]) != c for k in ("mean", "std", "p2", "p98")):
        raise ValueError(f"stats hold {len(stats['mean'])} bands but the input has {c}")
    shape = (c, 1, 1)
    # A constant band has std 0; dividing by 1 keeps it at zero instead of NaN.
    std = [s if s > 0 else 1.0 for s in stats["std"]]
    torch = sys.modules.get("torch")
    # a tensor can only exist once torch is imported, so io never imports torch itself
    if torch is not None and isinstance(x, torch.Tensor):

        def col(v: Sequence[float]):
            return torch.as_tensor(v, dtype=torch.float32, device=x.device).reshape(shape)

        y = x.float()
        y = torch.minimum(torch.maximum(y, col(stats["p2"])), col(stats["p98"]))
        return (y - col(stats["mean"])) / col(std)
    arr = np.asarray(x, dtype=np.float32)

    def ncol(v: Sequence[float]) -> np.ndarray:
        return np.asarray(v, dtype=np.float32).reshape(shape)

    y = np.clip(arr, ncol(stats["p2"]), ncol(stats["p98"]))
    return ((y - ncol(stats["mean"])) / ncol(std)).astype(np.float32)


def optical_bands(band_names: Sequence[str]) -> list[int]:
    """Indices (0-based, into the selected bands) of the bands colour jitter may change."""
    idx = [i for i, name in enumerate(band_names) if name.lower() in OPTICAL_BANDS]
    if not idx:
        log.info("no optical band among %s: colour jitter disabled", list(band_names))
    return idx
