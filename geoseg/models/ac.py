"""Autoregressive Clustering (Ouali et al. 2020): a masked-convolution net read in 8 orderings.

AC maximises the mutual information between the cluster outputs of *one* network read in two
different raster-scan orderings: each output at a pixel sees only the pixels that come before it
in its ordering, so the two views see different context and the MI has to come from what the
contexts share. The eight orderings come from one causal mask (rows above, then columns to the
left) by presenting the input flipped and rotated (``rot90`` ``k`` times, optional horizontal
flip) and mapping the output back, so one set of weights serves every ordering.

Causality details:

- The mask ("type B") keeps the current pixel. The first layer must not (a pixel may not see
  itself, "type A"); instead of a second mask the input is shifted one column to the right
  (the shift trick), so the centre tap of the first layer reads the previous pixel of the row.
- No batch normalisation: batch statistics over a tile would leak later pixels into earlier
  outputs during training. Residual connections keep the plain stack trainable.
- The optional self-attention attends over a local window, restricted to earlier positions.
- As in PixelCNN's masked 3×3 stacks, the receptive field has a blind spot to the upper right
  of each pixel; the dilated blocks keep it small, and other orderings see that side.

With ``ordering=None`` (inference) no mask and no shift are applied: the same weights run as an
ordinary convolutional net that sees the whole neighbourhood.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geoseg.models.dihedral import dihedral, undihedral
from geoseg.models.heads import ClusterHeads, head_names

N_ORDERINGS = 8


def causal_mask(kernel_size: int) -> Tensor:
    """``(k, k)`` mask keeping the rows above the centre and the centre row up to the centre."""
    c = kernel_size // 2
    mask = torch.zeros(kernel_size, kernel_size)
    mask[:c] = 1
    mask[c, : c + 1] = 1
    return mask


def orient(x: Tensor, ordering: int) -> Tensor:
    """Present ``x`` so that a raster scan of the result is ordering ``ordering`` of ``x``."""
    return dihedral(x, ordering % 4, ordering >= 4)


def unorient(y: Tensor, ordering: int) -> Tensor:
    """Inverse of :func:`orient`: map an output back onto the input's frame."""
    return undihedral(y, ordering % 4, ordering >= 4)


def ordering_rank(height: int, width: int, ordering: int) -> Tensor:
    """``(H, W)`` position of every pixel in the scan of ``ordering`` (0 = first visited)."""
    shape = orient(torch.zeros(height, width), ordering).shape
    scan = torch.arange(shape[0] * shape[1]).reshape(shape)
    return unorient(scan, ordering)


def sample_orderings(generator: torch.Generator) -> tuple[int, int]:
    """Two different orderings, uniformly among the 8 × 7 pairs."""
    a, b = torch.randperm(N_ORDERINGS, generator=generator)[:2].tolist()
    return int(a), int(b)


class MaskedConv2d(nn.Conv2d):
    """A 'same' convolution whose weights can be restricted to the causal mask."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 3, dilation: int = 1):
        super().__init__(
            c_in, c_out, kernel_size, padding=dilation * (kernel_size // 2), dilation=dilation
        )
        self.register_buffer("mask", causal_mask(kernel_size).view(1, 1, kernel_size, kernel_size))

    def forward(self, x: Tensor, masked: bool = True) -> Tensor:  # type: ignore[override]
        weight = self.weight * self.mask if masked else self.weight
        return self._conv_forward(x, weight, self.bias)


class LocalCausalAttention(nn.Module):
    """Single-head self-attention over a ``window × window`` neighbourhood of each pixel.

    Global attention over a 128² tile would need a 16k × 16k matrix; a local window keeps
    memory linear in the pixels. When masked, a pixel attends only to window positions that
    precede or equal it in the raster scan; the features it reads are already strictly causal.
    """

    def __init__(self, channels: int, window: int = 5, dim: int = 16):
        super().__init__()
        if window % 2 == 0:
            raise ValueError(f"attention_window must be odd, got {window}")
        self.window, self.dim = window, dim
        self.qkv = nn.Conv2d(channels, 3 * dim, 1)
        self.proj = nn.Conv2d(dim, channels, 1)
        c = window // 2
        causal = causal_mask(window).flatten().bool()  # same raster rule as the convs
        self.register_buffer("causal", causal.view(1, -1, 1), persistent=False)
        self.centre = c * window + c

    def forward(self, x: Tensor, masked: bool = True) -> Tensor:
        b, _, h, w = x.shape
        w2, r = self.window**2, self.window // 2
        q, k, v = self.qkv(x).chunk(3, 1)
        keys = F.unfold(k, self.window, padding=r).view(b, self.dim, w2, h * w)
        values = F.unfold(v, self.window, padding=r).view(b, self.dim, w2, h * w)
        logits = (q.reshape(b, self.dim, 1, h * w) * keys).sum(1) / math.sqrt(self.dim)
        inside = F.unfold(x.new_ones(1, 1, h, w), self.window, padding=r) > 0  # (1, w2, HW)
        allowed = inside & self.causal if masked else inside
        attn = logits.masked_fill(~allowed, float("-inf")).softmax(1)
        out = (attn.unsqueeze(1) * values).sum(2).view(b, self.dim, h, w)
        return self.proj(out)


class ACNet(nn.Module):
    """Masked-convolution clustering net for AC (contract: docs/contracts.md, Models).

    Args:
        in_channels: input bands.
        n_clusters: K per head (main first).
        channels: feature channels of every layer.
        dilations: one residual masked 3×3 block per entry, with that dilation (the receptive
            field grows with the sum of dilations).
        attention: add a local masked self-attention block after the convolutions.
        attention_window: odd window edge of the attention.
        n_sub_heads: sub-heads per head.
    """

    def __init__(
        self,
        in_channels: int,
        n_clusters: list[int],
        *,
        channels: int = 32,
        dilations: tuple[int, ...] = (1, 2, 4, 1),
        attention: bool = False,
        attention_window: int = 5,
        n_sub_heads: int = 1,
    ):
        super().__init__()
        self.stem = MaskedConv2d(in_channels, channels, 3)
        self.blocks = nn.ModuleList(MaskedConv2d(channels, channels, 3, d) for d in dilations)
        self.attention = LocalCausalAttention(channels, attention_window) if attention else None
        self.heads = ClusterHeads(channels, n_clusters, n_sub_heads)
        self.head_names = head_names(len(n_clusters))
        self.n_clusters = list(n_clusters)
        self.size_multiple = 1

    def features(self, x: Tensor, masked: bool) -> Tensor:
        """Per-pixel features; when ``masked``, each depends only on earlier raster pixels."""
        if masked:
            # shift trick: move the input one column right so the stem's centre tap reads the
            # previous pixel ("type A"); the output is cropped after the conv, not the input
            # before it, so the last column stays visible to the row below
            h = F.relu(self.stem(F.pad(x, (1, 0)), masked))[..., :-1]
        else:
            h = F.relu(self.stem(x, masked))
        for block in self.blocks:
            h = h + F.relu(block(h, masked))
        if self.attention is not None:
            h = h + self.attention(h, masked)
        return h

    def forward(
        self, x: Tensor, ordering: int | None = None, *, all_sub_heads: bool = False
    ) -> list[Tensor] | list[list[Tensor]]:
        """Logits per head at input resolution, in the input's frame.

        Args:
            x: ``(B, C, H, W)`` normalised input (any H, W).
            ordering: 0..7 reads the image in that raster-scan ordering (training);
                None runs the unmasked net (inference).
            all_sub_heads: return every sub-head (see :class:`ClusterHeads`).
        """
        size = (x.shape[-2], x.shape[-1])
        if ordering is None:
            feats = self.features(x, masked=False)
        else:
            if not 0 <= ordering < N_ORDERINGS:
                raise ValueError(f"ordering must be 0..7 or None, got {ordering}")
            feats = unorient(self.features(orient(x, ordering), masked=True), ordering)
        return self.heads(feats, size, all_sub_heads=all_sub_heads)

    def select_sub_heads(self, indices: list[int]) -> None:
        """Choose the sub-head each head uses from now on."""
        self.heads.selected.copy_(torch.as_tensor(indices, dtype=torch.long))
