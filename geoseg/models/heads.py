"""Clustering heads shared by every trunk, and the segmentation net that joins them.

IIC trains a main head (K ≈ number of classes) and an overclustering head (K ≫ classes) on the
same trunk; the overclustering head is an auxiliary task that shapes the features, the main
head is what predict uses. Each head may hold several sub-heads (independent 1×1 convs) whose
losses are averaged, which the IIC paper found makes training robust to a bad initialisation;
the sub-head to use at inference is stored in the ``selected`` buffer so it travels with the
model state.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def head_names(n_heads: int) -> list[str]:
    """``["main", "over", "over2", ...]``: the first head is the main one."""
    return ["main"] + ["over" if i == 1 else f"over{i}" for i in range(1, n_heads)]


class ClusterHeads(nn.Module):
    """One 1×1 conv per (head, sub-head), mapping features to cluster logits.

    Args:
        in_channels: feature channels coming from the trunk.
        n_clusters: K per head, main head first.
        n_sub_heads: independent sub-heads per head.
    """

    def __init__(self, in_channels: int, n_clusters: list[int], n_sub_heads: int = 1):
        super().__init__()
        if not n_clusters or min(n_clusters) < 2:
            raise ValueError(f"every head needs at least 2 clusters, got {n_clusters}")
        if n_sub_heads < 1:
            raise ValueError(f"n_sub_heads must be >= 1, got {n_sub_heads}")
        self.n_clusters = list(n_clusters)
        self.heads = nn.ModuleList(
            nn.ModuleList(nn.Conv2d(in_channels, k, 1) for _ in range(n_sub_heads))
            for k in n_clusters
        )
        self.register_buffer("selected", torch.zeros(len(n_clusters), dtype=torch.long))

    def forward(
        self, features: Tensor, size: tuple[int, int], *, all_sub_heads: bool = False
    ) -> list[Tensor] | list[list[Tensor]]:
        """Logits at ``size`` (bilinear upsampling of low-resolution logits).

        Returns:
            one ``(B, K_h, H, W)`` tensor per head (its selected sub-head), or with
            ``all_sub_heads`` a list per head of one tensor per sub-head.
        """

        def run(conv: nn.Module) -> Tensor:
            y = conv(features)
            if tuple(y.shape[-2:]) != tuple(size):
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            return y

        if all_sub_heads:
            return [[run(conv) for conv in subs] for subs in self.heads]
        return [run(subs[int(s)]) for subs, s in zip(self.heads, self.selected, strict=True)]


class SegmentationNet(nn.Module):
    """A trunk (image → features) followed by :class:`ClusterHeads`, per docs/contracts.md.

    Attributes:
        head_names: ``["main", "over", ...]``.
        n_clusters: K per head.
        size_multiple: input height and width must be multiples of it.
    """

    def __init__(
        self,
        trunk: nn.Module,
        out_channels: int,
        n_clusters: list[int],
        *,
        size_multiple: int,
        n_sub_heads: int = 1,
    ):
        super().__init__()
        self.trunk = trunk
        self.heads = ClusterHeads(out_channels, n_clusters, n_sub_heads)
        self.head_names = head_names(len(n_clusters))
        self.n_clusters = list(n_clusters)
        self.size_multiple = int(size_multiple)

    def forward(
        self, x: Tensor, *, all_sub_heads: bool = False
    ) -> list[Tensor] | list[list[Tensor]]:
        """Logits per head at the input resolution (see :meth:`ClusterHeads.forward`)."""
        h, w = x.shape[-2:]
        if h % self.size_multiple or w % self.size_multiple:
            raise ValueError(f"input {h}x{w} is not a multiple of {self.size_multiple}; pad it")
        return self.heads(self.trunk(x), (h, w), all_sub_heads=all_sub_heads)

    def select_sub_heads(self, indices: list[int]) -> None:
        """Choose the sub-head each head uses from now on (e.g. the one with lowest loss)."""
        self.heads.selected.copy_(torch.as_tensor(indices, dtype=torch.long))
