"""Any segmentation-models-pytorch architecture/encoder as a clustering trunk.

smp gives pretrained-quality architectures (U-Net, FPN, DeepLabV3+, …) over dozens of
encoders and already handles any number of input bands. Its segmentation head is used to
project the decoder output onto ``features`` channels at input resolution; geoseg's cluster
heads sit on top after a BN-ReLU. Weights are never downloaded (``encoder_weights=None``):
ImageNet RGB weights do not fit multispectral input and the machines may be offline.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn


class SMPTrunk(nn.Module):
    """Image ``(B, C, H, W)`` → features ``(B, features, H, W)``.

    Args:
        in_channels: input bands.
        arch: smp architecture name (``"Unet"``, ``"FPN"``, ``"DeepLabV3Plus"``, …).
        encoder: smp encoder name (``"resnet18"``, ``"efficientnet-b0"``, …).
        features: channels handed to the cluster heads.
        extra: further keyword arguments for the smp model (e.g. ``decoder_channels``).
    """

    def __init__(
        self,
        in_channels: int,
        *,
        arch: str = "Unet",
        encoder: str = "resnet18",
        features: int = 32,
        extra: dict[str, Any] | None = None,
    ):
        super().__init__()
        import segmentation_models_pytorch as smp

        self.net = smp.create_model(
            arch,
            encoder_name=encoder,
            encoder_weights=None,
            in_channels=in_channels,
            classes=features,
            **(extra or {}),
        )
        self.post = nn.Sequential(nn.BatchNorm2d(features), nn.ReLU(inplace=True))
        self.out_channels = features
        self.size_multiple = int(getattr(self.net.encoder, "output_stride", 32))

    def forward(self, x: Tensor) -> Tensor:
        return self.post(self.net(x))
