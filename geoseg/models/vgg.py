"""The IIC paper's VGG-style segmentation trunk ("SegmentationNet10a"), with a width knob.

Ji et al. use 3×3 conv-BN-ReLU blocks with one max-pool and two dilated blocks, so the features
sit at half resolution with a wide receptive field and no decoder. The paper's widths
(64 … 512 channels) are multiplied by ``width`` so that CPU training is feasible; 1.0 is the
paper's net.
"""

from __future__ import annotations

from torch import Tensor, nn

# (channels, dilation) per conv block, "M" = 2×2 max-pool (IIC's SegmentationNet10aTrunk)
PAPER_LAYERS: tuple[tuple[int, int] | str, ...] = (
    (64, 1),
    (128, 1),
    "M",
    (256, 1),
    (256, 1),
    (512, 2),
    (512, 2),
)


class VGGTrunk(nn.Module):
    """Image ``(B, C, H, W)`` → features ``(B, out_channels, H/2, W/2)``.

    Args:
        in_channels: input bands.
        width: multiplier of the paper's channel counts (each layer keeps at least 8).
    """

    def __init__(self, in_channels: int, width: float = 0.25):
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be > 0, got {width}")
        layers: list[nn.Module] = []
        c_in = in_channels
        pools = 0
        for spec in PAPER_LAYERS:
            if spec == "M":
                layers.append(nn.MaxPool2d(2))
                pools += 1
                continue
            channels, dilation = spec
            c_out = max(8, round(channels * width))
            layers += [
                nn.Conv2d(c_in, c_out, 3, padding=dilation, dilation=dilation, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.out_channels = c_in
        self.size_multiple = 2**pools

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)
