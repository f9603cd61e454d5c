"""Clustering networks: IIC trunks (VGG-style, segmentation-models-pytorch) and the AC net.

Everything the rest of geoseg needs is :func:`build_model`; its keyword arguments are what a
checkpoint stores (``ckpt["model"]``), so a run can always be rebuilt from its checkpoint. The
model interface (logits per head at input resolution, ``head_names``, ``n_clusters``,
``size_multiple``) is pinned in docs/contracts.md.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from geoseg.config import from_dict
from geoseg.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Network hyperparameters (``model:`` section of a training config).

    Defaults are small enough for CPU training on 64–128 px crops.

    Attributes:
        trunk: IIC trunk: ``"vgg"`` (the IIC paper's net) or ``"smp"``
            (segmentation-models-pytorch).
        width: VGG channel multiplier of the paper's 64…512 channels (1.0 = paper).
        arch: smp architecture (``"Unet"``, ``"FPN"``, ``"DeepLabV3Plus"``, …).
        encoder: smp encoder (``"resnet18"``, ``"efficientnet-b0"``, …); never pretrained.
        features: channels the smp decoder hands to the cluster heads.
        smp_kwargs: extra keyword arguments for the smp model (e.g. ``decoder_channels``).
        n_sub_heads: independent sub-heads per head (losses averaged over them).
        channels: AC: channels of every masked layer.
        dilations: AC: one residual masked 3×3 block per entry, with that dilation.
        attention: AC: add local masked self-attention.
        attention_window: AC: odd window edge of the attention.
    """

    trunk: str = "vgg"
    width: float = 0.25
    arch: str = "Unet"
    encoder: str = "resnet18"
    features: int = 32
    smp_kwargs: dict = dataclasses.field(default_factory=dict)
    n_sub_heads: int = 1
    channels: int = 32
    dilations: tuple[int, ...] = (1, 2, 4, 1)
    attention: bool = False
    attention_window: int = 5


def model_config(model_cfg: dict[str, Any] | ModelConfig | None) -> ModelConfig:
    """Validate a ``model:`` mapping (unknown keys and wrong types are :class:`ConfigError`)."""
    if isinstance(model_cfg, ModelConfig):
        return model_cfg
    return from_dict(ModelConfig, dict(model_cfg or {}), prefix="model.")


def build_model(
    method: str,
    model_cfg: dict[str, Any] | None,
    in_channels: int,
    n_clusters: list[int],
) -> nn.Module:
    """Build an untrained clustering network.

    Args:
        method: ``"iic"`` (trunk + heads) or ``"ac"`` (masked-convolution net).
        model_cfg: the ``model:`` mapping, keys of :class:`ModelConfig` (missing = default).
        in_channels: number of input bands.
        n_clusters: K per head, main head first (e.g. ``[6, 24]``).

    Returns:
        the module; ``forward(x) -> list[Tensor (B, K_h, H, W)]`` logits, plus ``head_names``,
        ``n_clusters``, ``size_multiple``; AC nets also take ``ordering``.

    Raises:
        ConfigError: unknown method, trunk or key, or impossible values.
    """
    cfg = model_config(model_cfg)
    n_clusters = [int(k) for k in n_clusters]
    if not n_clusters or min(n_clusters) < 2:
        raise ConfigError(f"every head needs at least 2 clusters, got {n_clusters}", param="config")
    if in_channels < 1:
        raise ConfigError(f"in_channels must be >= 1, got {in_channels}", param="config")
    if method == "ac":
        from geoseg.models.ac import ACNet

        if cfg.attention_window % 2 == 0:
            raise ConfigError(
                f"must be odd, got {cfg.attention_window}", param="model.attention_window"
            )
        return ACNet(
            in_channels,
            n_clusters,
            channels=cfg.channels,
            dilations=tuple(cfg.dilations),
            attention=cfg.attention,
            attention_window=cfg.attention_window,
            n_sub_heads=cfg.n_sub_heads,
        )
    if method != "iic":
        raise ConfigError(f"no network for method {method!r}; use iic or ac", param="method")
    from geoseg.models.heads import SegmentationNet

    if cfg.trunk == "vgg":
        from geoseg.models.vgg import VGGTrunk

        trunk: nn.Module = VGGTrunk(in_channels, cfg.width)
    elif cfg.trunk == "smp":
        from geoseg.models.smp_trunk import SMPTrunk

        try:
            trunk = SMPTrunk(
                in_channels,
                arch=cfg.arch,
                encoder=cfg.encoder,
                features=cfg.features,
                extra=cfg.smp_kwargs,
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ConfigError(
                f"smp cannot build {cfg.arch}/{cfg.encoder}: {exc}", param="model"
            ) from exc
    else:
        raise ConfigError(f"unknown trunk {cfg.trunk!r}; use vgg or smp", param="model.trunk")
    return SegmentationNet(
        trunk,
        trunk.out_channels,
        n_clusters,
        size_multiple=trunk.size_multiple,
        n_sub_heads=cfg.n_sub_heads,
    )


__all__ = ["ModelConfig", "build_model", "model_config"]
