"""build_model: every trunk/head combination honours the model contract of docs/contracts.md."""

from __future__ import annotations

import pytest
import torch

from geoseg.errors import ConfigError
from geoseg.models import ModelConfig, build_model

TINY_VGG = {"trunk": "vgg", "width": 0.125}
TINY_SMP = {
    "trunk": "smp",
    "encoder": "resnet18",
    "features": 8,
    "smp_kwargs": {"decoder_channels": [32, 16, 16, 8, 8]},
}
CASES = {
    "vgg": ("iic", TINY_VGG),
    "vgg-subheads": ("iic", {**TINY_VGG, "n_sub_heads": 3}),
    "smp-unet": ("iic", TINY_SMP),
    "smp-fpn": ("iic", {"trunk": "smp", "arch": "FPN", "encoder": "resnet18", "features": 8}),
    "ac": ("ac", {"channels": 8, "dilations": [1, 2]}),
    "ac-attention": ("ac", {"channels": 8, "dilations": [1], "attention": True}),
}


def odd_multiples(multiple: int) -> tuple[int, int]:
    """A non-square size whose sides are odd multiples of ``multiple`` (3× and 5×)."""
    return 3 * multiple, 5 * multiple


@pytest.mark.parametrize(
    ("case", "bands"), [(c, 4) for c in CASES] + [("vgg", 8), ("smp-unet", 8), ("ac", 8)]
)
def test_logits_per_head_at_input_resolution(case, bands):
    method, cfg = CASES[case]
    torch.manual_seed(0)
    model = build_model(method, cfg, bands, [3, 7]).eval()
    assert model.head_names == ["main", "over"]
    assert model.n_clusters == [3, 7]
    h, w = odd_multiples(model.size_multiple)
    x = torch.randn(2, bands, h, w)
    with torch.no_grad():
        out = model(x)
        subs = model(x, all_sub_heads=True)
    assert [tuple(o.shape) for o in out] == [(2, 3, h, w), (2, 7, h, w)]
    assert all(torch.isfinite(o).all() for o in out)
    n_sub = cfg.get("n_sub_heads", 1)
    assert [len(s) for s in subs] == [n_sub, n_sub]
    assert all(tuple(z.shape) == (2, k, h, w) for s, k in zip(subs, [3, 7], strict=True) for z in s)


def test_size_multiples_match_the_trunks():
    assert build_model("iic", TINY_VGG, 4, [3]).size_multiple == 2
    assert build_model("iic", TINY_SMP, 4, [3]).size_multiple == 32
    assert build_model("ac", {"channels": 8}, 4, [3]).size_multiple == 1
    with pytest.raises(ValueError, match="multiple of 2"):
        build_model("iic", TINY_VGG, 4, [3])(torch.zeros(1, 4, 9, 10))


def test_sub_head_selection_changes_the_output_and_is_saved():
    torch.manual_seed(1)
    model = build_model("iic", {**TINY_VGG, "n_sub_heads": 2}, 4, [3, 5]).eval()
    x = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        subs = model(x, all_sub_heads=True)
        model.select_sub_heads([1, 0])
        out = model(x)
    assert torch.equal(out[0], subs[0][1]) and torch.equal(out[1], subs[1][0])
    assert model.state_dict()["heads.selected"].tolist() == [1, 0]


@pytest.mark.parametrize("case", ["vgg", "smp-unet", "ac"])
def test_rebuilt_from_the_same_kwargs_and_state_gives_the_same_output(case):
    method, cfg = CASES[case]
    torch.manual_seed(2)
    a = build_model(method, cfg, 4, [3, 6]).eval()
    torch.manual_seed(3)
    b = build_model(method, cfg, 4, [3, 6]).eval()
    x = torch.randn(1, 4, *odd_multiples(a.size_multiple))
    with torch.no_grad():
        assert not torch.allclose(a(x)[0], b(x)[0])
        b.load_state_dict(a.state_dict())
        assert torch.equal(a(x)[0], b(x)[0])


def test_training_step_reaches_every_parameter():
    torch.manual_seed(4)
    model = build_model("iic", TINY_VGG, 4, [3, 6]).train()
    out = model(torch.randn(2, 4, 16, 16))
    sum(o.logsumexp(1).mean() for o in out).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_vgg_width_one_is_the_paper_net():
    from geoseg.models.vgg import VGGTrunk

    convs = [m for m in VGGTrunk(3, 1.0).modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 256, 512, 512]
    assert [c.dilation[0] for c in convs] == [1, 1, 1, 1, 2, 2]


@pytest.mark.parametrize(
    ("method", "cfg", "n_clusters", "match"),
    [
        ("iic", {"depth": 3}, [3], "unknown key model.depth"),
        ("iic", {"width": "wide"}, [3], "model.width"),
        ("iic", {"trunk": "resnet"}, [3], "unknown trunk"),
        ("iic", {"trunk": "smp", "encoder": "no-such-encoder"}, [3], "no-such-encoder"),
        ("kmeans", {}, [3], "iic or ac"),
        ("iic", {}, [1], "at least 2 clusters"),
        ("ac", {"attention_window": 4}, [3], "odd"),
    ],
)
def test_bad_configs_are_config_errors(method, cfg, n_clusters, match):
    with pytest.raises(ConfigError, match=match):
        build_model(method, cfg, 4, n_clusters)


def test_model_config_defaults_are_documented_keys():
    cfg = ModelConfig()
    assert cfg.trunk == "vgg" and cfg.n_sub_heads == 1
    model = build_model("iic", None, 3, [4, 12])
    assert model.n_clusters == [4, 12]


def two_region_scene(gen: torch.Generator, b: int, size: int = 32):
    """Images split by a random line into two regions of different spectra, and the split."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    angle = torch.rand(b, 1, 1, generator=gen) * 6.283
    offset = (torch.rand(b, 1, 1, generator=gen) - 0.5) * size / 2
    label = ((xx - size / 2) * torch.cos(angle) + (yy - size / 2) * torch.sin(angle)) > offset
    spectra = torch.tensor([[1.0, -1.0, 0.5, 0.0], [-1.0, 1.0, -0.5, 0.0]])
    noise = 0.4 * torch.randn(b, 4, size, size, generator=gen)
    return spectra[label.long()].permute(0, 3, 1, 2) + noise, label


class TinyAdam:
    """Adam in a few lines: torch.optim's first use imports torch._dynamo (seconds of CPU)."""

    def __init__(self, params, lr: float = 1e-3):
        self.params, self.lr, self.t = list(params), lr, 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        for p, m, v in zip(self.params, self.m, self.v, strict=True):
            if p.grad is not None:
                m.mul_(0.9).add_(p.grad, alpha=0.1)
                v.mul_(0.999).addcmul_(p.grad, p.grad, value=0.001)
                step = (m / (1 - 0.9**self.t)) / ((v / (1 - 0.999**self.t)).sqrt() + 1e-8)
                p -= self.lr * step
                p.grad = None


@pytest.mark.parametrize(
    ("method", "cfg", "steps"),
    [("iic", {"width": 0.125}, 20), ("ac", {"channels": 8, "dilations": [1, 2]}, 30)],
)
def test_mi_training_separates_two_regions(method, cfg, steps):
    """Losses, inverse transforms and models together: a few Adam steps find the two regions."""
    from geoseg.train.augment import sample_transform
    from geoseg.train.losses import iic_loss

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = build_model(method, cfg, 4, [2])
    opt = TinyAdam(model.parameters())
    for step in range(steps):
        x, _ = two_region_scene(gen, 4)
        g = sample_transform(gen, {}, 4, jitter_bands=[0, 1, 2])
        if method == "ac":  # two different orderings, the second on the view
            z1, z2 = model(x, ordering=step % 8)[0], model(g.apply(x), ordering=(step + 3) % 8)[0]
        else:
            z1, z2 = model(x)[0], model(g.apply(x))[0]
        mask = g.valid(shape=x.shape[-2:])
        loss = iic_loss(z1.softmax(1), g.invert(z2.softmax(1)), displacement=1, mask=mask)
        loss.backward()
        opt.step()
    assert loss.item() < -0.01
    x, label = two_region_scene(gen, 8)
    with torch.no_grad():
        pred = model.eval()(x)[0].argmax(1) == 1
    agreement = (pred == label).float().mean().item()
    assert max(agreement, 1 - agreement) > 0.85
