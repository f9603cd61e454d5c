"""Bands: names of sensor bands, the user's band selection, and the one normalisation.

Everything that turns "which bands, in which units" into model input lives here, so train and
predict cannot disagree about it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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


#: GDAL colour interpretations that name a band (gray/undefined/palette say nothing)
_COLOUR_NAMES = {
    "red": "red",
    "green": "green",
    "blue": "blue",
    "alpha": "alpha",
    "cyan": "cyan",
    "magenta": "magenta",
    "yellow": "yellow",
    "black": "black",
}


def file_band_labels(src: Any) -> tuple[str | None, ...]:
    """What a raster file itself says each band is: its band descriptions, else its GDAL
    colour interpretation (Red, Green, Blue, Alpha, ...) when that names every band.

    The colour interpretation is what GDAL, QGIS and every TIFF writer record: a BGR copy
    says Blue, Green, Red and an RGBA file says its fourth band is Alpha. Guessing from the
    band count instead called both "red, green, blue(, nir)", so predict fed blue as red and
    alpha as NIR. A partial interpretation (Red, Green, Blue on an 8-band WorldView file, an
    artefact of PHOTOMETRIC=RGB) is not trusted; :func:`band_names` then falls back to presets.
    """
    descriptions = tuple(src.descriptions)
    described = [(d or "").strip() for d in descriptions]
    if all(described) and len({d.lower() for d in described}) == len(described):
        return descriptions
    colours = [_COLOUR_NAMES.get(getattr(c, "name", str(c)).lower()) for c in src.colorinterp]
    if all(colours) and len(set(colours)) == len(colours):
        if "alpha" in colours and not _is_mask(src, colours.index("alpha") + 1):
            # GDAL tags the 4th band of any 4-band uint8 GeoTIFF written without options
            # as Alpha (the NAIP sample): a band of graded values is data, not transparency
            return descriptions
        return tuple(colours)
    return descriptions


def _is_mask(src: Any, band: int) -> bool:
    """Whether a band holds only 0 and its dtype's maximum (a real alpha), on a sample.

    The sample is a 3 x 3 grid of windows of at most 64 x 64 pixels, each inside one block,
    so it decodes at most 9 blocks. A decimated read of the whole band (what this did before)
    touches, and so decodes, every block of a tiled file without overviews, and a
    pixel-interleaved file decodes all its bands with it: ``geoseg tile`` of an 8192² RGBA
    file spent 90 s of its 93 in it, once per reader (issue 11). The answer is remembered
    per file state (path, size, modification time), as every reader of a scene asks.
    """
    import os

    name = str(getattr(src, "name", ""))
    try:
        st = os.stat(name)
        state: tuple = (st.st_size, st.st_mtime_ns)
    except OSError:
        state = ()
    key = (name, band, src.width, src.height, *state)
    if name and key in _MASK_ANSWERS:
        return _MASK_ANSWERS[key]
    answer = _sample_is_mask(src, band)
    if name:
        _MASK_ANSWERS[key] = answer
    return answer


#: :func:`_is_mask` answers by (path, band, width, height, size, mtime)
_MASK_ANSWERS: dict[tuple, bool] = {}


def _sample_is_mask(src: Any, band: int) -> bool:
    from rasterio.windows import Window

    block_h, block_w = src.block_shapes[band - 1]
    rows, cols = min(64, src.height), min(64, src.width)
    for fy in (0.1, 0.5, 0.9):
        for fx in (0.1, 0.5, 0.9):
            # the window starts on a block's first row and column: it decodes that block only
            # (or the few small blocks, such as strips, it spans)
            row = min(int(fy * (src.height - rows)) // block_h * block_h, src.height - rows)
            col = min(int(fx * (src.width - cols)) // block_w * block_w, src.width - cols)
            sample = src.read(band, window=Window(col, row, cols, rows))
            top = np.iinfo(sample.dtype).max if sample.dtype.kind in "ui" else 1
            if not np.isin(sample, (0, top)).all():
                return False
    return True


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
    elif hasattr(src_or_descriptions, "colorinterp"):
        descriptions = file_band_labels(src_or_descriptions)
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


#: names of one band that different files or sensors spell differently (match either way)
_SAME_BAND = (("nir", "nir1", "ir"), ("rededge", "red-edge", "re"))


def _spellings(name: str) -> tuple[str, ...]:
    for group in _SAME_BAND:
        if name in group:
            return (name, *(g for g in group if g != name))
    return (name,)


def match_bands(
    raster_labels: Sequence[str | None],
    raster_dtype: str,
    *,
    model_names: Sequence[str],
    model_bands: Sequence[int],
    model_dtype: str | None = None,
    model_count: int | None = None,
    explicit: str | Sequence[int | str] | None = None,
    name: str = "the raster",
) -> list[int]:
    """The 1-based bands of a raster to feed a model, matched by band name and pixel type.

    The band count alone says nothing: an 8-band uint16 WorldView file has more bands than an
    RGBN uint8 model, an RGBA file as many, and both were read as the model's bands. So:

    - ``explicit`` (``--bands``): the user's mapping, indices or names of the raster, one per
      model band in the model's order, is used as given (a dtype difference is only warned).
    - a different pixel type (uint16 vs uint8) is refused: the normalisation was fitted to
      the training radiometry.
    - named model bands are looked up by name (``nir`` also matches ``nir1``), so a BGR copy
      or a wider sensor is read right; a missing name is refused.
    - unnamed model bands (``b1..bn``) match only a raster that is unnamed too and has the
      training rasters' band count; otherwise ``--bands`` must say which bands to read.

    Args:
        raster_labels: :func:`file_band_labels` of the raster.
        raster_dtype: its pixel type.
        model_names, model_bands: the checkpoint's ``band_names`` and ``bands``.
        model_dtype, model_count: the checkpoint's ``dtype`` and ``band_count`` (the training
            rasters' band count); ``None`` in checkpoints older than the band contract.
        explicit: the ``--bands`` option.
        name: the raster, as named in messages.

    Raises:
        BadInput: (``RASTER`` / ``--bands``) one line saying what to pass.
    """
    n = len(model_names)
    want = ",".join(model_names)
    raster_names = band_names(raster_labels)
    example = ",".join(str(i) for i in range(1, n + 1))
    if explicit is not None:
        picked = resolve_bands(raster_labels, explicit)
        if len(picked) != n:
            raise BadInput(
                f"{len(picked)} bands given but the model takes {n} ({want}); list {n} bands "
                f"of {name} in that order",
                param="--bands",
            )
        if model_dtype and raster_dtype != model_dtype:
            log.warning(
                "%s holds %s pixels but the model was trained on %s: mapped by --bands as asked",
                name,
                raster_dtype,
                model_dtype,
            )
        return picked
    if model_dtype and raster_dtype != model_dtype:
        raise BadInput(
            f"{name} holds {raster_dtype} pixels but the model was trained on {model_dtype} "
            f"({want}); convert it to {model_dtype} with the training scaling, or map bands "
            "explicitly with --bands",
            param="RASTER",
        )
    # "unnamed" means geoseg's own fallback b<i> for band i, not a described "B04" (Sentinel-2)
    synthetic = [f"b{int(b)}" for b in model_bands] == [str(m) for m in model_names]
    if synthetic:
        if model_count is None:  # an older checkpoint: by position, as it always was
            count = len(raster_names)
            if count >= max(model_bands):
                return [int(b) for b in model_bands]
            if count == n:
                return list(range(1, n + 1))
            raise BadInput(
                f"{name} has {count} bands but the model expects {n} (bands "
                f"{','.join(str(int(b)) for b in model_bands)} of its training rasters); pass "
                "a raster with those bands, or map them with --bands",
                param="RASTER",
            )
        fallback = [f"b{i}" for i in range(1, len(raster_names) + 1)]
        if len(raster_names) == model_count and raster_names == fallback:
            return [int(b) for b in model_bands]
        raise BadInput(
            f"{name} has bands {','.join(raster_names)} but the model's {n} bands have no names "
            f"({want}); pass --bands with {n} bands of {name} in training order, "
            f"e.g. --bands {','.join(str(int(b)) for b in model_bands)}",
            param="RASTER",
        )
    picked, missing = [], []
    for m in model_names:
        hit = next((raster_names.index(s) + 1 for s in _spellings(m) if s in raster_names), None)
        if hit is None:
            missing.append(m)
        else:
            picked.append(hit)
    if missing:
        raise BadInput(
            f"{name} has bands {','.join(raster_names)} but the model needs {want} (no "
            f"{','.join(missing)}); pass --bands with {n} bands of {name} in that order, "
            f"e.g. --bands {example}",
            param="RASTER",
        )
    return picked


OPTICAL_BANDS = frozenset(
    {"coastal", "blue", "green", "yellow", "red", "pan", "panchromatic", "r", "g", "b"}
)
"""Band names (lower case) that colour jitter may touch; everything else (NIR, red edge,
SWIR, unknown ``b<i>`` names) is left untouched."""


def normalize(x: Any, stats: Mapping[str, Sequence[float]], out: np.ndarray | None = None) -> Any:
    """Clip each band to its [p2, p98] range, then standardise to float32.

    The one normalisation used by training and prediction (docs/contracts.md), so a model sees
    the same numbers at both times. Clipping first keeps rare saturated pixels (specular roofs,
    clouds) from stretching the scale of every other pixel.

    Args:
        x: ``(C, H, W)`` or ``(B, C, H, W)`` numpy array or torch tensor, any numeric dtype.
        stats: ``{"mean", "std", "p2", "p98"}``, one value per band (a store's or a
            checkpoint's ``norm``).
        out: a float32 numpy array of ``x``'s shape to write into (predict reuses one per
            thread instead of allocating a batch-sized array per batch), or ``None``.

    Returns:
        float32 array of the same kind and shape (``out`` when given).
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
    if out is not None:
        np.copyto(out, x, casting="unsafe")  # the float32 conversion, without a new array
    arr = np.asarray(x, dtype=np.float32) if out is None else out

    def ncol(v: Sequence[float]) -> np.ndarray:
        return np.asarray(v, dtype=np.float32).reshape(shape)

    # one new array (none with ``out``), shifted and scaled in place: same float32 operations
    y = np.clip(arr, ncol(stats["p2"]), ncol(stats["p98"]), out=out)
    y -= ncol(stats["mean"])
    y /= ncol(std)
    return y


def optical_bands(band_names: Sequence[str]) -> list[int]:
    """Indices (0-based, into the selected bands) of the bands colour jitter may change."""
    idx = [i for i, name in enumerate(band_names) if name.lower() in OPTICAL_BANDS]
    if not idx:
        log.info("no optical band among %s: colour jitter disabled", list(band_names))
    return idx


def model_input(
    x: np.ndarray,
    valid: np.ndarray | None,
    stats: Mapping[str, Sequence[float]] | None,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """What a model sees of source pixels: normalised float32, invalid pixels set to 0.

    The one place where "invalid pixels become 0 after normalisation" is coded, for training
    crops, predict's tiles and map's tiles alike. 0 is the band mean once normalised, so
    padding and nodata carry no signal. A pixel with a non-finite value in ANY band is invalid
    too (a NaN would spread through the loss and every neighbour's prediction); setting is a
    select, never a product, because NaN * 0 is NaN.

    Args:
        x: ``(C, H, W)`` or ``(B, C, H, W)`` source pixels, any numeric dtype.
        valid: ``(H, W)`` / ``(B, H, W)`` bool, or ``None`` when every pixel is valid.
        stats: ``{"mean", "std", "p2", "p98"}`` per band (:func:`normalize`), or ``None`` for
            input that is already normalised.
        out: with ``stats``, a float32 array of ``x``'s shape to normalise into (:func:`normalize`).

    Returns:
        ``(image float32 like x, valid bool)`` where ``valid`` now also excludes non-finite
        pixels.
    """
    image = np.asarray(x if stats is None else normalize(x, stats, out), np.float32)
    finite = np.isfinite(image).all(axis=-3)
    valid = finite if valid is None else np.asarray(valid, bool) & finite
    if stats is None:  # ``image`` may be the caller's array: a new one
        return np.where(np.expand_dims(valid, -3), image, np.float32(0)), valid
    np.copyto(image, np.float32(0), where=~np.expand_dims(valid, -3))  # normalize's own array
    return image, valid


@dataclass(frozen=True)
class BandSpec:
    """The bands a model was trained on, and how their pixels become model input.

    One object instead of the ``bands`` / ``band_names`` / ``norm`` keys spelled out by every
    caller: a tile store describes its bands with it, a checkpoint stores it, and predict,
    map and training turn pixels into model input through :meth:`model_input`.

    Attributes:
        indices: 1-based band indices in the source rasters, in model order.
        names: lower-case band names (``"red"``, ``"nir"``, ``"b5"``...), used to match a
            raster's bands by name at predict time.
        stats: ``{"mean", "std", "p2", "p98"}`` per band over valid training pixels.
        dtype: source pixel type (``"uint8"``, ``"uint16"``...), or ``None`` when unknown
            (checkpoints written before it was stored).
    """

    indices: tuple[int, ...]
    names: tuple[str, ...]
    stats: Mapping[str, tuple[float, ...]]
    dtype: str | None = None

    @classmethod
    def of_store(cls, store: Any) -> BandSpec:
        """The bands of a :class:`~geoseg.tiles.store.TileStore`."""
        return cls.of(store.bands, store.band_names, store.stats, str(store.image.dtype))

    @classmethod
    def of_checkpoint(cls, ckpt: Mapping[str, Any]) -> BandSpec:
        """The bands of a checkpoint dict (``bands``, ``band_names``, ``norm``, ``dtype``)."""
        names = ckpt.get("band_names") or [f"b{b}" for b in ckpt["bands"]]
        return cls.of(ckpt["bands"], names, ckpt["norm"], ckpt.get("dtype"))

    @classmethod
    def of(
        cls,
        indices: Sequence[int],
        names: Sequence[str],
        stats: Mapping[str, Sequence[float]],
        dtype: str | None = None,
    ) -> BandSpec:
        """A spec from plain values (numpy statistics become float tuples)."""
        keys = ("mean", "std", "p2", "p98")
        return cls(
            indices=tuple(int(b) for b in indices),
            names=tuple(str(n) for n in names),
            stats={k: tuple(float(v) for v in np.asarray(stats[k]).ravel()) for k in keys},
            dtype=None if dtype is None else str(dtype),
        )

    def __len__(self) -> int:
        return len(self.indices)

    def to_checkpoint(self) -> dict[str, Any]:
        """The checkpoint keys of docs/contracts.md (plain lists: ``weights_only`` loadable)."""
        out: dict[str, Any] = {
            "bands": list(self.indices),
            "band_names": list(self.names),
            "norm": {k: list(v) for k, v in self.stats.items()},
        }
        if self.dtype is not None:
            out["dtype"] = self.dtype
        return out

    def normalize(self, x: Any) -> Any:
        """:func:`normalize` with these statistics."""
        return normalize(x, self.stats)

    def model_input(
        self, x: np.ndarray, valid: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """:func:`model_input` with these statistics."""
        return model_input(x, valid, self.stats)

    def optical(self) -> list[int]:
        """0-based indices of the bands colour jitter may change (:func:`optical_bands`)."""
        return optical_bands(self.names)
