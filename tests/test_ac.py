"""AC masked network: causality in each of the 8 orderings, and an unmasked net at inference."""

from __future__ import annotations

import pytest
import torch

from geoseg.models import build_model
from geoseg.models.ac import N_ORDERINGS, ordering_rank, orient, sample_orderings, unorient
from geoseg.train.losses import ac_loss

H, W = 7, 9  # not square, so the quarter turns really change the scan


@pytest.fixture(scope="module", params=[False, True], ids=["conv", "attention"])
def net(request):
    torch.manual_seed(0)
    model = build_model(
        "ac",
        {"channels": 8, "dilations": [1, 2], "attention": request.param, "attention_window": 3},
        3,
        [4, 6],
    )
    return model.eval()


def response(model, pixel: tuple[int, int], ordering: int | None) -> torch.Tensor:
    """|change| of every output pixel (summed over heads and clusters) when ``pixel`` changes."""
    x = torch.randn(1, 3, H, W, generator=torch.Generator().manual_seed(1))
    bumped = x.clone()
    bumped[0, :, pixel[0], pixel[1]] += 5.0
    with torch.no_grad():
        a, b = model(x, ordering=ordering), model(bumped, ordering=ordering)
    return sum((ya - yb).abs().sum((0, 1)) for ya, yb in zip(a, b, strict=True))


@pytest.mark.parametrize("ordering", range(N_ORDERINGS))
@pytest.mark.parametrize("pixel", [(3, 4), (0, 8), (6, 0)])
def test_output_depends_only_on_earlier_pixels(net, ordering, pixel):
    rank = ordering_rank(H, W, ordering)
    change = response(net, pixel, ordering)
    here = rank[pixel]
    earlier = rank < here
    if earlier.any():
        assert change[earlier].max() < 1e-5
    # a pixel does not see itself either (the first layer is "type A")
    assert change[pixel] < 1e-5
    later = rank > here
    if later.any():
        assert change[later].max() > 1e-3


def test_unmasked_inference_sees_every_neighbour(net):
    change = response(net, (3, 4), None)
    around = change[2:5, 3:6]
    assert (around > 1e-4).all(), around
    for ordering in range(N_ORDERINGS):
        rank = ordering_rank(H, W, ordering)
        assert change[rank < rank[3, 4]].max() > 1e-3


def test_orderings_are_eight_distinct_scans_and_orient_round_trips():
    ranks = {tuple(ordering_rank(H, W, o).flatten().tolist()) for o in range(N_ORDERINGS)}
    assert len(ranks) == N_ORDERINGS
    x = torch.arange(2 * H * W).view(1, 2, H, W)
    for o in range(N_ORDERINGS):
        rank = ordering_rank(H, W, o)
        assert sorted(rank.flatten().tolist()) == list(range(H * W))
        assert torch.equal(unorient(orient(x, o), o), x)
    # ordering 0 is the plain raster scan: rows top to bottom, columns left to right
    assert torch.equal(ordering_rank(H, W, 0), torch.arange(H * W).view(H, W))


def test_outputs_in_input_frame_and_trainable(net):
    x = torch.randn(2, 3, H, W, generator=torch.Generator().manual_seed(2))
    o1, o2 = sample_orderings(torch.Generator().manual_seed(3))
    assert o1 != o2
    net.train()
    try:
        out1, out2 = net(x, ordering=o1), net(x, ordering=o2)
        assert [z.shape for z in out1] == [(2, 4, H, W), (2, 6, H, W)]
        loss = sum(
            ac_loss(z1.softmax(1), z2.softmax(1), displacement=1)
            for z1, z2 in zip(out1, out2, strict=True)
        )
        loss.backward()
        grads = [p.grad for p in net.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert net.stem.weight.grad.abs().sum() > 0
    finally:
        net.zero_grad(set_to_none=True)
        net.eval()


def test_rejects_unknown_ordering(net):
    with pytest.raises(ValueError, match="ordering"):
        net(torch.zeros(1, 3, H, W), ordering=8)
