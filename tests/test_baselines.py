"""k-means and Kanezaki baselines: the model interface, and what they recover on the fixture."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

from geoseg.io.bands import normalize
from geoseg.models.baselines import KanezakiNet, KMeansSegmenter, build_baseline
from geoseg.train.baselines import fit_kanezaki
from geoseg.train.monitor import confusion, hungarian_scores


@pytest.fixture(scope="module")
def scene(fixtures):
    """The synthetic RGBN fixture normalised with its own statistics, and its labels."""
    with rasterio.open(fixtures["rgbn"]) as src:
        image = src.read()
    with rasterio.open(fixtures["labels"]) as src:
        labels = src.read(1)
    flat = image.reshape(image.shape[0], -1).astype(np.float64)
    stats = {
        "mean": flat.mean(1).tolist(),
        "std": flat.std(1).tolist(),
        "p2": np.percentile(flat, 2, axis=1).tolist(),
        "p98": np.percentile(flat, 98, axis=1).tolist(),
    }
    return torch.from_numpy(normalize(image, stats))[None], labels


def test_kmeans_recovers_synthetic_classes(scene):
    x, labels = scene
    model = KMeansSegmenter(4, [4])
    pixels = model.features(x)[0].flatten(1).T
    model.fit(pixels[::3], seed=0)
    logits = model(x)
    assert len(logits) == 1 and logits[0].shape == (1, 4, *labels.shape)
    pred = logits[0].argmax(1)[0].numpy()
    acc, miou = hungarian_scores(confusion(pred, labels, 4, 4))
    # four well separated colours plus noise: nearest-centroid is nearly perfect
    assert acc > 0.97
    assert miou > 0.9


def test_kmeans_logits_are_negative_squared_distances(scene):
    x, _ = scene
    model = KMeansSegmenter(4, [3], texture=True, texture_window=3)
    model.centroids.copy_(torch.randn(3, 12, generator=torch.Generator().manual_seed(1)))
    feats = model.features(x)
    assert feats.shape == (1, 12, *x.shape[-2:])
    expect = -((feats[0, :, 5, 7][None] - model.centroids) ** 2).sum(1)
    assert torch.allclose(model(x)[0][0, :, 5, 7], expect, atol=1e-3)


def test_kanezaki_merges_clusters_and_separates_classes(scene):
    x, labels = scene
    torch.manual_seed(0)
    model = KanezakiNet(4, [32], layers=2)
    valid = torch.ones(1, *labels.shape, dtype=torch.bool)
    used = []
    fit_kanezaki(
        model,
        lambda step: (x, valid),
        steps=60,
        mu=5.0,
        min_clusters=4,
        on_step=lambda step, loss, n: used.append(n),
    )
    assert used[-1] < used[0]  # the argmax self-labelling merges the initial 32 responses
    with torch.no_grad():
        pred = model(x)[0].argmax(1)[0].numpy()
    acc, _ = hungarian_scores(confusion(pred, labels, 32, 4))
    assert acc > 0.85


def test_build_baseline_round_trips_state(scene):
    x, _ = scene
    a = build_baseline("kanezaki", {"layers": 1}, 4, [8]).eval()
    b = build_baseline("kanezaki", {"layers": 1}, 4, [8]).eval()
    b.load_state_dict(a.state_dict())
    assert torch.equal(a(x)[0], b(x)[0])
    assert a.head_names == ["main"] and a.n_clusters == [8] and a.size_multiple == 1
    with pytest.raises(ValueError):
        build_baseline("nope", {}, 4, [8])
