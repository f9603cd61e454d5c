"""Frozen configuration dataclasses loaded from YAML.

Unknown keys are errors (a typo in a config must not silently fall back to a default), and
``--set key=value`` overrides use dotted keys into nested dataclasses. The resolved config is a
plain dict (:func:`to_dict`) so it can travel inside a ``weights_only`` checkpoint.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from geoseg.errors import ConfigError

T = TypeVar("T")


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """Check/convert ``value`` to the annotated type ``tp`` (enough for YAML scalars/lists)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if _is_dataclass_type(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"expected a mapping, got {value!r}", param=key)
        return from_dict(tp, value, prefix=key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{value!r} does not match {tp}", param=key)
    if origin is typing.Literal:
        if value not in args:
            choices = ", ".join(map(str, args))
            raise ConfigError(f"{value!r} is not one of {choices}", param=key)
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            value = [value]
        item_t = args[0] if args else Any
        items = [_coerce(item_t, v, key) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"expected a mapping, got {value!r}", param=key)
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"expected true/false, got {value!r}", param=key)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"expected an integer, got {value!r}", param=key)
        return value
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads "1e-4" (no dot) as a string; users mean the number.
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"expected a number, got {value!r}", param=key)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"expected a string, got {value!r}", param=key)
        return value
    return value


def from_dict(cls: type[T], data: dict[str, Any], *, prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys raise :class:`ConfigError`."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown key {prefix}{unknown[0]}; valid keys: {', '.join(sorted(names))}",
            param="config",
        )
    kwargs = {k: _coerce(hints[k], v, prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain Python types (tuples become lists), for YAML and checkpoints."""

    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Turn ``["optim.lr=1e-3", "model.k=6"]`` into a nested dict (values parsed as YAML)."""
    nested: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(
                f"{item!r} is not KEY=VALUE (e.g. --set optim.lr=0.001)", param="--set"
            )
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw else ""
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return nested


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(
    cls: type[T],
    source: str | Path | dict[str, Any] | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> T:
    """Load ``cls`` from a YAML file (or dict), then apply ``--set`` overrides.

    Raises:
        ConfigError: missing file, invalid YAML, unknown key or wrongly typed value.
    """
    if source is None:
        data: dict[str, Any] = {}
    elif isinstance(source, dict):
        data = source
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(
                f"{path} does not exist; pass a YAML file from configs/", param="--config"
            )
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(
                f"{path} is not valid YAML ({exc.__class__.__name__})", param="--config"
            ) from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a mapping at top level", param="--config")
    return from_dict(cls, _merge(data, parse_overrides(overrides)))


# --- training config (owned by geoseg.train) ---------------------------------------------------
# Frozen dataclasses for ``geoseg train``; configs/*.yaml hold the per-dataset recipes.


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which pixels a training step sees.

    Attributes:
        crop_size: edge of the random square crops (pixels); also predict's default tile size.
        batch_size: crops per step.
        min_valid: fraction of valid pixels a crop needs, so nodata edges do not dominate.
        quicklook_tiles: fixed tiles drawn as image | clusters PNGs each epoch.
        pin_memory: pin host batches when training on CUDA (faster host→device copies).
        workers: data-loader processes cutting crops ahead of the model (-1 = choose: up to 8
            on CUDA, 1 on a CPU with two or more cores; 0 = in the training thread). Crops
            depend only on (seed, step), so this never changes a run's numbers.
        cache_mb: decoded tiles kept per process, so a tile drawn again is not decoded again.
    """

    crop_size: int = 128
    batch_size: int = 8
    min_valid: float = 0.5
    quicklook_tiles: int = 4
    pin_memory: bool = True
    workers: int = -1
    cache_mb: float = 256.0


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """The mutual-information objective (IIC paper notation).

    Attributes:
        lamb: λ, weight of the marginal entropy terms (1.0 is plain MI; >1 fights collapse).
        displacement: T, largest pixel shift |t| ≤ T in the joint distribution window.
        uncollapsed: normalise the joint per displacement instead of over the whole window.
    """

    lamb: float = 1.0
    displacement: int = 1
    uncollapsed: bool = False


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """The transform g in IIC's (x, g(x)) pair; geometric parts are inverted on the output.

    Attributes:
        flip: random horizontal/vertical flips.
        rotate: random 90° rotations.
        jitter: strength of brightness/contrast/saturation jitter on the optical bands (IR
            bands are never jittered, see DESIGN.md).
        noise: std of additive Gaussian noise, in normalised units.
        affine: add a small random rotation/zoom/shift (inverted by resampling).
        max_angle: largest affine rotation in degrees.
        scale_range: (lo, hi) affine zoom factors.
        translate: largest affine shift, as a fraction of the half-width.
    """

    flip: bool = True
    rotate: bool = True
    jitter: float = 0.1
    noise: float = 0.0
    affine: bool = False
    max_angle: float = 10.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    translate: float = 0.05


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Adam settings (the IIC paper uses Adam with lr 1e-4)."""

    lr: float = 1e-4
    weight_decay: float = 0.0


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """How long to train and how often to look.

    Attributes:
        steps: optimiser steps in total (a resume continues up to this number).
        steps_per_epoch: steps between quicklook images (an "epoch" over random crops).
        checkpoint_every: steps between ``last.pt`` saves.
        eval_every: steps between evaluation passes (loss on fixed crops, label metrics).
        eval_batches: fixed batches in each evaluation pass.
        log_every: steps between ``metrics.csv`` training rows.
    """

    steps: int = 1000
    steps_per_epoch: int = 200
    checkpoint_every: int = 200
    eval_every: int = 100
    eval_batches: int = 4
    log_every: int = 10


@dataclasses.dataclass(frozen=True)
class BaselineConfig:
    """The classical baselines (``method: kmeans`` or ``kanezaki``).

    Attributes:
        samples: valid pixels sampled from the store to fit k-means.
        texture: add local mean/std (box filter) of each band as k-means features.
        texture_window: box filter size in pixels for the texture features.
        pyramid: cluster the multi-scale feature pyramid (geoseg.models.pyramid: colour,
            smoothed bands, texture, edges, morphological top-hats) instead of pixels.
        pyramid_metres: size the pyramid's blurs and windows in ground units, from the tile
            store's pixel size (geoseg.models.pyramid.scales_for; the scales are kept in the
            checkpoint); stores without georeferencing keep the pixel scales.
        n_init: k-means restarts (the best is kept); fewer is faster on many features.
        mu: Kanezaki's spatial-continuity weight μ.
        lr: Kanezaki's SGD learning rate (the paper's 0.1; ``optim`` is for IIC/AC).
        width: Kanezaki feature channels (also its upper bound on clusters).
        layers: Kanezaki 3×3 conv layers.
    """

    samples: int = 100_000
    texture: bool = False
    texture_window: int = 5
    pyramid: bool = False
    pyramid_metres: bool = False
    n_init: int = 10
    mu: float = 5.0
    lr: float = 0.1
    width: int = 32
    layers: int = 2


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything ``geoseg train`` needs; saved as run/config.yaml and inside checkpoints.

    Attributes:
        method: iic | ac (trained networks) or kmeans | kanezaki (classical baselines).
        n_clusters: clusters of the main head (≈ number of classes).
        n_over_clusters: clusters of the overclustering head (0 = no such head).
        seed: seeds torch, numpy and python RNGs, so a run is repeatable.
        model: passed through to ``geoseg.models.build_model`` as ``model_cfg``.
        compile: run the training forward through ``torch.compile`` (off by default: it
            compiles for a minute or more before the first step, worth it on long GPU runs).
    """

    method: typing.Literal["iic", "ac", "kmeans", "kanezaki"] = "iic"
    n_clusters: int = 6
    n_over_clusters: int = 24
    seed: int = 0
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: dict = dataclasses.field(default_factory=dict)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    baseline: BaselineConfig = dataclasses.field(default_factory=BaselineConfig)
    compile: bool = False
