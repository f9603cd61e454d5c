"""IIC / AC mutual-information loss: values against hand-derivable cases and a brute force."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from geoseg.train.losses import ac_loss, iic_loss, joint_distribution, mutual_information


def one_hot(labels: torch.Tensor, k: int) -> torch.Tensor:
    """(B, H, W) int labels -> (B, K, H, W) float one-hot probabilities."""
    return torch.nn.functional.one_hot(labels, k).permute(0, 3, 1, 2).float()


def random_probs(shape, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).mul(2).softmax(1)


def correlated_pair(shape, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two views that agree more than chance, so the MI is well away from zero."""
    p1 = random_probs(shape, seed)
    return p1, 0.7 * p1 + 0.3 * random_probs(shape, seed + 100)


def brute_force_mi(p1, p2, t: int, lamb: float, mask=None, uncollapsed=False) -> float:
    """The IIC objective by explicit loops over displacements and pixels, in float64 numpy."""
    a, b = p1.double().numpy(), p2.double().numpy()
    n, k, h, w = a.shape
    m = np.ones((n, h, w)) if mask is None else mask.double().numpy()
    joints = []
    for dy, dx in itertools.product(range(-t, t + 1), repeat=2):
        joint = np.zeros((k, k))
        for i, y, x in itertools.product(range(n), range(h), range(w)):
            y2, x2 = y + dy, x + dx
            if 0 <= y2 < h and 0 <= x2 < w:
                weight = m[i, y, x] * m[i, y2, x2]
                joint += weight * np.outer(a[i, :, y, x], b[i, :, y2, x2])
        joints.append(joint)
    if not uncollapsed:
        joints = [sum(joints)]
    values = []
    for joint in joints:
        joint = (joint + joint.T) / 2
        joint = joint / joint.sum()
        pi, pj = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = joint * (np.log(joint) - lamb * np.log(pi) - lamb * np.log(pj))
        values.append(np.nansum(terms))
    return float(np.mean(values))


@pytest.mark.parametrize("k", [2, 5])
def test_identical_one_hot_balanced_gives_log_k(k):
    labels = (torch.randperm(2 * 8 * 10, generator=torch.Generator().manual_seed(k)) % k).view(
        2, 8, 10
    )
    p = one_hot(labels, k)
    assert iic_loss(p, p).item() == pytest.approx(-math.log(k), abs=1e-5)
    # λ > 1 adds (λ - 1) · (H(P_i) + H(P_j)) = 2 (λ - 1) log K for balanced marginals
    assert iic_loss(p, p, lamb=1.5).item() == pytest.approx(-2 * math.log(k), abs=1e-5)


def test_independent_outputs_give_zero_mi():
    g = torch.Generator().manual_seed(0)
    p1 = one_hot(torch.randint(0, 4, (4, 64, 64), generator=g), 4)
    p2 = one_hot(torch.randint(0, 4, (4, 64, 64), generator=g), 4)
    assert abs(iic_loss(p1, p2).item()) < 2e-3
    assert abs(iic_loss(p1, p2, displacement=2).item()) < 2e-3
    uniform = torch.full_like(p2, 0.25)
    assert iic_loss(p1, uniform).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(
    ("t", "lamb", "uncollapsed"),
    [(0, 1.0, False), (1, 1.0, False), (2, 1.3, False), (1, 1.0, True)],
)
def test_displacement_window_matches_explicit_loop(t, lamb, uncollapsed):
    p1, p2 = correlated_pair((2, 3, 5, 6), 1)
    got = iic_loss(p1, p2, displacement=t, lamb=lamb, uncollapsed=uncollapsed).item()
    want = -brute_force_mi(p1, p2, t, lamb, uncollapsed=uncollapsed)
    assert got == pytest.approx(want, rel=1e-4, abs=1e-6)


def test_displacement_pairs_pixel_u_with_pixel_u_plus_t():
    # view 2 is view 1 moved one column right (p2[u + (0, 1)] = p1[u]): only displacement
    # (dy, dx) = (0, 1) pairs the same ground, so only that entry of the window carries MI
    labels = torch.randint(0, 4, (2, 16, 17), generator=torch.Generator().manual_seed(3))
    p1 = one_hot(labels[..., 1:], 4)
    p2 = one_hot(labels[..., :-1], 4)
    per = joint_distribution(p1, p2, displacement=1, uncollapsed=True)
    mi = [mutual_information(j).item() for j in per]
    shifted = 1 * 3 + 2  # row-major index of (dy + 1, dx + 1) = (1, 2)
    assert mi[shifted] > 0.9 * math.log(4)
    assert max(m for d, m in enumerate(mi) if d != shifted) < 0.05
    assert -iic_loss(p1, p2).item() < 0.05


def test_masked_pixels_contribute_nothing():
    p1, p2 = correlated_pair((2, 4, 9, 10), 4)
    mask = torch.zeros(2, 9, 10, dtype=torch.bool)
    mask[..., :6] = True
    # scribble over the invalid part: it must not matter
    noisy1, noisy2 = p1.clone(), p2.clone()
    noisy1[..., 6:] = random_probs((2, 4, 9, 4), 6)
    noisy2[..., 6:] = one_hot(torch.zeros(2, 9, 4, dtype=torch.long), 4)
    for t in (0, 1):
        masked = iic_loss(noisy1, noisy2, displacement=t, mask=mask).item()
        cropped = iic_loss(p1[..., :6], p2[..., :6], displacement=t).item()
        assert masked == pytest.approx(cropped, rel=1e-5)
        assert iic_loss(noisy1, noisy2, displacement=t).item() != pytest.approx(cropped, rel=1e-3)
    got = iic_loss(p1, p2, displacement=1, mask=mask.unsqueeze(1)).item()
    assert got == pytest.approx(-brute_force_mi(p1, p2, 1, 1.0, mask=mask), rel=1e-4)


@pytest.mark.parametrize("t", [0, 2])
def test_invariant_to_permuting_clusters(t):
    p1, p2 = correlated_pair((3, 6, 8, 8), 7)
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(9))
    base = iic_loss(p1, p2, displacement=t)
    assert iic_loss(p1[:, perm], p2[:, perm], displacement=t).item() == pytest.approx(
        base.item(), rel=1e-5, abs=1e-7
    )
    # a permutation of only one view is a different pairing, so the loss must notice it
    other = torch.roll(torch.arange(6), 1)
    assert iic_loss(p1, p1[:, other]).item() != pytest.approx(iic_loss(p1, p1).item(), rel=1e-3)


def test_gradients_finite_with_near_zero_probabilities():
    g = torch.Generator().manual_seed(10)
    logits1 = (torch.randn(2, 5, 8, 8, generator=g) * 60).requires_grad_()
    logits2 = (torch.randn(2, 5, 8, 8, generator=g) * 60).requires_grad_()
    for uncollapsed in (False, True):
        # cluster 4 is never used by anyone: its marginal is ~0
        p1 = torch.cat([logits1[:, :4], logits1[:, 4:] - 200], 1).softmax(1)
        p2 = torch.cat([logits2[:, :4], logits2[:, 4:] - 200], 1).softmax(1)
        assert p1.min() < 1e-20
        loss = iic_loss(p1, p2, displacement=1, lamb=1.5, uncollapsed=uncollapsed)
        g1, g2 = torch.autograd.grad(loss, (logits1, logits2))
        assert torch.isfinite(loss)
        assert torch.isfinite(g1).all() and torch.isfinite(g2).all()
        assert g1.abs().sum() > 0


def test_joint_is_symmetric_normalised_and_uncollapsed_per_displacement():
    p1, p2 = random_probs((2, 3, 6, 7), 11), random_probs((2, 3, 6, 7), 12)
    joint = joint_distribution(p1, p2, displacement=1)
    assert joint.shape == (3, 3)
    assert torch.allclose(joint, joint.T)
    assert joint.sum().item() == pytest.approx(1.0, abs=1e-6)
    per = joint_distribution(p1, p2, displacement=1, uncollapsed=True)
    assert per.shape == (9, 3, 3)
    assert torch.allclose(per.sum((1, 2)), torch.ones(9))
    # the centre displacement (index 4) is the same-pixel joint
    assert torch.allclose(per[4], joint_distribution(p1, p2), atol=1e-6)
    assert mutual_information(per).item() == pytest.approx(
        float(np.mean([mutual_information(j).item() for j in per])), rel=1e-5
    )


def test_ac_loss_is_the_mi_objective():
    p1, p2 = random_probs((2, 4, 6, 6), 13), random_probs((2, 4, 6, 6), 14)
    assert ac_loss(p1, p2, displacement=1).item() == pytest.approx(
        iic_loss(p1, p2, displacement=1).item()
    )


def test_rejects_mismatched_views():
    with pytest.raises(ValueError, match="alike"):
        iic_loss(random_probs((1, 3, 4, 4), 0), random_probs((1, 3, 4, 5), 0))
