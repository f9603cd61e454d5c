"""Mutual-information losses of IIC (Ji et al. 2019) and AC (Ouali et al. 2020).

Both methods maximise the mutual information between the cluster assignments of two views of
the same pixels: IIC's views are an image and its augmented copy (mapped back to the first
frame), AC's views are two raster-scan orderings of a masked network. The estimate of the joint
distribution ``P`` of the two assignments is the part that has to be exactly right, so it lives
here as pure tensor functions with no model or data code around it.

All functions take per-pixel *probabilities* (softmax of the model logits), shaped
``(B, K, H, W)``, with both views already in the same pixel frame.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

EPS = 1e-8
"""Floor for probabilities inside logarithms; keeps log and its gradient finite."""

__all__ = ["EPS", "ac_loss", "iic_loss", "joint_distribution", "mutual_information"]


def joint_distribution(
    p1: Tensor,
    p2: Tensor,
    *,
    displacement: int = 0,
    mask: Tensor | None = None,
    uncollapsed: bool = False,
) -> Tensor:
    """Estimate the symmetrised joint distribution of cluster assignments of two views.

    Pixel ``u`` of view 1 is paired with pixel ``u + t`` of view 2 for every displacement
    ``t = (dy, dx)`` with ``|dy|, |dx| <= displacement`` (the IIC paper's window, which makes
    neighbouring pixels predict each other's cluster). Pairs falling outside the image, or
    touching an invalid pixel, contribute nothing. The sum over pixels and displacements is a
    single ``conv2d`` of one output with the other: the batch acts as the channel axis.

    Args:
        p1: probabilities of view 1, ``(B, K, H, W)``, summing to 1 over K.
        p2: probabilities of view 2 in the same frame, ``(B, K, H, W)``.
        displacement: T, the half-size of the displacement window (0 = same pixel only).
        mask: optional ``(B, H, W)`` or ``(B, 1, H, W)`` bool/float; 0 marks invalid pixels.
        uncollapsed: return one normalised joint per displacement instead of one overall.

    Returns:
        ``(K, K)`` joint (or ``(D, K, K)`` with ``D = (2T+1)^2`` displacements in row-major
        order of ``(dy, dx)`` when ``uncollapsed``), symmetrised and summing to 1 (per D).
    """
    if p1.shape != p2.shape or p1.dim() != 4:
        raise ValueError(f"both views must be (B, K, H, W) alike, got {p1.shape} and {p2.shape}")
    # Estimating P in low precision loses the small entries that the logs amplify.
    p1, p2 = p1.float(), p2.float()
    if mask is not None:
        m = (mask if mask.dim() == 4 else mask.unsqueeze(1)).to(p1)
        p1, p2 = p1 * m, p2 * m
    k = p1.shape[1]
    t = int(displacement)
    if t == 0:
        joint = torch.einsum("bihw,bjhw->ij", p1, p2).reshape(1, k, k)
    else:
        # conv2d(input=(K, B, H+2T, W+2T), weight=(K, B, H, W)) -> (K, K, 2T+1, 2T+1):
        # out[i, j, a, b] = sum_{n,u} p2[n, i, u + (a-T, b-T)] * p1[n, j, u], so index
        # (a, b) is the displacement (dy, dx) = (a - T, b - T) from view 1 to view 2.
        out = F.conv2d(p2.transpose(0, 1), p1.transpose(0, 1), padding=t)
        joint = out.permute(2, 3, 1, 0).reshape(-1, k, k)  # (D, view-1 cluster, view-2 cluster)
    if not uncollapsed:
        joint = joint.sum(0, keepdim=True)
    joint = (joint + joint.transpose(1, 2)) / 2
    total = joint.sum((1, 2), keepdim=True).clamp_min(EPS)
    joint = joint / total
    return joint if uncollapsed else joint[0]


def mutual_information(joint: Tensor, *, lamb: float = 1.0) -> Tensor:
    """IIC objective ``sum P (log P - lamb log P_i - lamb log P_j)`` of a joint distribution.

    With ``lamb = 1`` this is the mutual information in nats; ``lamb > 1`` rewards balanced
    marginals more (the IIC paper's defence against a degenerate solution).

    Args:
        joint: ``(K, K)`` or batched ``(D, K, K)`` joints, each summing to 1.
        lamb: λ, weight of the marginal entropy terms.

    Returns:
        a scalar (the mean over D when batched).
    """
    j = joint if joint.dim() == 3 else joint.unsqueeze(0)
    p_i = j.sum(2, keepdim=True)
    p_j = j.sum(1, keepdim=True)
    # The weight is the unclamped P so that 0 * log(eps) adds exactly nothing; the clamp only
    # keeps the logarithm (and its gradient) finite where P vanishes.
    log_p = j.clamp_min(EPS).log()
    log_pi = p_i.clamp_min(EPS).log()
    log_pj = p_j.clamp_min(EPS).log()
    mi = (j * (log_p - lamb * log_pi - lamb * log_pj)).sum((1, 2))
    return mi.mean()


def iic_loss(
    p1: Tensor,
    p2: Tensor,
    *,
    displacement: int = 0,
    lamb: float = 1.0,
    mask: Tensor | None = None,
    uncollapsed: bool = False,
) -> Tensor:
    """The IIC loss: minus the (λ-weighted) mutual information between two views' clusters.

    Args:
        p1: softmax output of the first view, ``(B, K, H, W)``.
        p2: softmax output of the second view mapped back onto the first view's frame.
        displacement: T of the displacement window (see :func:`joint_distribution`).
        lamb: λ entropy weight (1.0 = plain negative MI).
        mask: ``(B, H, W)`` valid pixels (in both views); invalid pixels contribute nothing.
        uncollapsed: one joint per displacement, the MI averaged over displacements.

    Returns:
        scalar loss to minimise; ``-log K`` is the best possible value for λ = 1.
    """
    joint = joint_distribution(
        p1, p2, displacement=displacement, mask=mask, uncollapsed=uncollapsed
    )
    return -mutual_information(joint, lamb=lamb)


def ac_loss(
    p_a: Tensor,
    p_b: Tensor,
    *,
    displacement: int = 0,
    lamb: float = 1.0,
    mask: Tensor | None = None,
    uncollapsed: bool = False,
) -> Tensor:
    """The AC loss: minus the MI between the outputs of two raster-scan orderings.

    ``p_a`` and ``p_b`` are softmax outputs of the same masked network under two different
    orderings (``model(x, ordering=o)`` already maps its output back to the input frame), or
    of one ordering on ``x`` and another on a transformed view mapped back. The objective is the
    IIC one; this alias exists so the training loop reads as the paper does.
    """
    return iic_loss(
        p_a, p_b, displacement=displacement, lamb=lamb, mask=mask, uncollapsed=uncollapsed
    )
