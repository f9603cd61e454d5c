"""Normalisation and paired augmentations: g⁻¹ undoes g on the overlap, jitter spares NIR."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from geoseg.io.bands import normalize, optical_bands
from geoseg.train.augment import PairTransform, sample_transform

STATS = {
    "mean": [10.0, 20.0, 5.0],
    "std": [2.0, 4.0, 0.0],
    "p2": [4.0, 8.0, 1.0],
    "p98": [16, 30, 9],
}


def smooth_image(b: int, c: int, size: int, seed: int) -> torch.Tensor:
    """Low-frequency bands, so bilinear resampling is accurate away from the border."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    freq = torch.rand(b, c, 2, generator=g) + 0.25  # cycles per tile
    phase = torch.rand(b, c, 1, 1, generator=g) * math.tau
    return torch.sin(math.tau * (freq[..., :1, None] * yy + freq[..., 1:, None] * xx) + phase)


def pointwise_net(x: torch.Tensor) -> torch.Tensor:
    """Stand-in for a segmentation net: a fixed per-pixel map of the bands to 5 'clusters'."""
    weight = torch.linspace(-1, 1, 5 * x.shape[1]).view(5, x.shape[1], 1, 1)
    return torch.nn.functional.conv2d(x, weight).softmax(1)


def test_normalize_clips_then_standardises_numpy_and_torch():
    g = np.random.default_rng(0)
    x = g.integers(0, 40, size=(2, 3, 5, 6)).astype(np.uint16)
    got = normalize(x, STATS)
    assert got.dtype == np.float32 and got.shape == x.shape
    for band in range(3):
        lo, hi = STATS["p2"][band], STATS["p98"][band]
        std = STATS["std"][band] or 1.0
        want = (np.clip(x[:, band].astype(np.float64), lo, hi) - STATS["mean"][band]) / std
        np.testing.assert_allclose(got[:, band], want, rtol=1e-6)
    assert np.isfinite(got).all()  # the zero-std band does not blow up
    single = normalize(x[0], STATS)
    np.testing.assert_array_equal(single, got[0])
    as_torch = normalize(torch.from_numpy(x.astype(np.int32)), STATS)
    assert as_torch.dtype == torch.float32
    np.testing.assert_allclose(as_torch.numpy(), got, rtol=1e-6)
    with pytest.raises(ValueError, match="bands"):
        normalize(x[:, :2], STATS)


DIHEDRAL = list(itertools.product([False, True], range(4)))


def dihedral_transform() -> PairTransform:
    """All eight flip/rotation combinations, one per sample."""
    return PairTransform(
        hflip=torch.tensor([f for f, _ in DIHEDRAL]), k=torch.tensor([k for _, k in DIHEDRAL])
    )


def test_flips_and_quarter_turns_invert_exactly():
    x = torch.randn(8, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    g = dihedral_transform()
    view = g.apply(x)
    # the eight views are eight different images (so the inverse has work to do)
    assert len({tuple(v.flatten().tolist()) for v in view}) == 8
    assert torch.equal(g.invert(view), x)  # pure index moves: exact
    # through a per-pixel "net" only float summation order can differ
    assert torch.allclose(g.invert(pointwise_net(view)), pointwise_net(x), atol=1e-6)
    assert g.valid(shape=(6, 6)).all()
    # label-like tensors follow the same path
    assert torch.equal(g.invert(g.geometric(x)), x)


def test_vertical_flip_available_without_rotation():
    g = sample_transform(torch.Generator().manual_seed(2), {"rotate": False}, 64)
    assert set(g.k.tolist()) == {0, 2}
    assert g.hflip.any() and not g.hflip.all()
    none = sample_transform(torch.Generator().manual_seed(2), {"rotate": False, "flip": False}, 8)
    x = torch.randn(8, 2, 5, 5)
    assert torch.equal(none.apply(x), x)


def test_affine_inverse_reproduces_first_view_on_overlap():
    cfg = {"affine": True, "max_angle": 15.0, "scale_range": (0.85, 1.2), "translate": 0.1}
    g = sample_transform(torch.Generator().manual_seed(3), cfg, 6)
    x = smooth_image(6, 3, 48, 4)
    view = g.apply(x)
    valid = g.valid(shape=(48, 48))
    assert 0.4 < valid.float().mean() < 1.0  # some of the frame is lost, most is kept
    back = g.invert(pointwise_net(view))
    err = (back - pointwise_net(x)).abs().amax(1)
    assert err[valid].max() < 0.02
    # outside the overlap the round trip is not trustworthy, which is why valid exists
    assert err[~valid].max() > 0.05


def test_valid_excludes_pixels_touched_by_invalid_input():
    cfg = {"affine": True, "max_angle": 10.0, "translate": 0.05}
    g = sample_transform(torch.Generator().manual_seed(5), cfg, 4)
    x = smooth_image(4, 2, 40, 6)
    mask = torch.ones(4, 40, 40, dtype=torch.bool)
    mask[:, 15:25, 10:30] = False
    garbage = x.clone()
    garbage[~mask.unsqueeze(1).expand_as(x)] = 100.0
    both = g.valid(mask)
    assert not both[~mask].any()
    assert both.float().mean() > 0.4
    back = g.invert(g.apply(garbage))
    assert (back - x).abs().amax(1)[both].max() < 0.02


def test_jitter_changes_optical_bands_only():
    names = ["blue", "green", "red", "nir"]
    bands = optical_bands(names)
    assert bands == [0, 1, 2]
    assert optical_bands(["b1", "b2", "nir"]) == []
    cfg = {"jitter": 0.3}
    x = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(7))
    g = sample_transform(torch.Generator().manual_seed(8), cfg, 4, jitter_bands=bands)
    view, moved = g.apply(x), g.geometric(x)
    assert torch.equal(view[:, 3], moved[:, 3])
    assert (view[:, :3] - moved[:, :3]).abs().amax() > 0.05
    plain = sample_transform(torch.Generator().manual_seed(8), cfg, 4, jitter_bands=[])
    assert torch.equal(plain.apply(x), plain.geometric(x))


def test_seeded_and_per_sample():
    cfg = {"affine": True, "jitter": 0.2, "noise": 0.1}
    x = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(9))
    a = sample_transform(torch.Generator().manual_seed(10), cfg, 16, jitter_bands=[0, 1])
    b = sample_transform(torch.Generator().manual_seed(10), cfg, 16, jitter_bands=[0, 1])
    c = sample_transform(torch.Generator().manual_seed(11), cfg, 16, jitter_bands=[0, 1])
    assert torch.equal(a.apply(x), b.apply(x))
    assert torch.equal(a.apply(x), a.apply(x))  # noise is part of the sampled transform
    assert not torch.equal(a.apply(x), c.apply(x))
    assert len(set(a.k.tolist())) > 1 and len(set(a.theta[:, 0, 2].tolist())) == 16


def test_reads_config_dataclass_and_rejects_bad_shapes():
    from geoseg.config import AugmentConfig

    g = sample_transform(torch.Generator().manual_seed(12), AugmentConfig(), 3, jitter_bands=[0])
    assert g.theta is None and g.brightness is not None
    with pytest.raises(ValueError, match="square"):
        PairTransform(hflip=torch.tensor([False]), k=torch.tensor([1])).apply(
            torch.zeros(1, 1, 4, 6)
        )
    with pytest.raises(ValueError, match="B=3"):
        g.apply(torch.zeros(2, 1, 4, 4))
