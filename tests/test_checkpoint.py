"""The checkpoint format: weights_only loading, rebuilding models, refusing foreign files."""

from __future__ import annotations

import pickle

import pytest
import torch

from geoseg.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from geoseg.errors import BadInput


def _checkpoint(
    method: str, model_cfg: dict, n_clusters: list[int]
) -> tuple[dict, torch.nn.Module]:
    from geoseg.checkpoint import build_from_spec

    spec = {"method": method, "model_cfg": model_cfg, "in_channels": 4, "n_clusters": n_clusters}
    torch.manual_seed(3)
    model = build_from_spec(spec).eval()
    if method == "kmeans":
        model.centroids.normal_()
    ckpt = {
        "geoseg_version": "0.1.0", "method": method, "config": {"method": method},
        "model": spec, "model_state": model.state_dict(), "optimizer_state": None,
        "step": 7, "epoch": 0, "rng_state": {"torch": torch.get_rng_state()},
        "bands": [1, 2, 3, 4], "band_names": ["red", "green", "blue", "nir"],
        "norm": {k: [0.0, 1.0, 2.0, 3.0] for k in ("mean", "std", "p2", "p98")},
        "n_clusters": n_clusters, "head_names": list(model.head_names), "head": 0,
        "tile_size": 64, "mapping": None, "best_loss": -0.5,
    }  # fmt: skip
    return ckpt, model


@pytest.mark.parametrize(
    ("method", "model_cfg", "n_clusters"),
    [
        ("iic", {"width": 0.125, "n_sub_heads": 2}, [3, 6]),
        ("ac", {"channels": 8, "dilations": [1, 2]}, [3, 6]),
        ("kmeans", {"texture": True, "texture_window": 3}, [5]),
        ("kanezaki", {"layers": 1}, [8]),
    ],
)
def test_round_trip_rebuilds_the_same_model(tmp_path, method, model_cfg, n_clusters):
    ckpt, model = _checkpoint(method, model_cfg, n_clusters)
    path = save_checkpoint(ckpt, tmp_path / "best.pt")
    raw = torch.load(path, weights_only=True)  # no pickled code needed to read it
    assert raw["step"] == 7 and raw["band_names"][-1] == "nir"
    rebuilt = model_from_checkpoint(load_checkpoint(path))
    assert not rebuilt.training
    x = torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for a, b in zip(model(x), rebuilt(x), strict=True):
            assert a.shape == (2, a.shape[1], 32, 32)
            assert torch.equal(a, b)
    assert load_checkpoint(tmp_path)["method"] == method  # a run folder means its best.pt


def test_save_is_atomic_and_replaces(tmp_path):
    ckpt, _ = _checkpoint("kmeans", {}, [3])
    path = tmp_path / "last.pt"
    save_checkpoint(ckpt, path)
    save_checkpoint({**ckpt, "step": 8}, path)
    assert load_checkpoint(path)["step"] == 8
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    with pytest.raises(ValueError):
        save_checkpoint({"step": 1}, tmp_path / "bad.pt")


class _Evil:
    def __reduce__(self):
        return (print, ("pickled code ran",))


@pytest.mark.parametrize("kind", ["missing", "text", "pickle", "foreign", "empty_dir"])
def test_foreign_files_are_bad_input(tmp_path, capsys, kind):
    path = tmp_path / "model.pt"
    if kind == "text":
        path.write_text("not a checkpoint")
    elif kind == "pickle":
        path.write_bytes(pickle.dumps({"model_state": _Evil()}))
    elif kind == "foreign":
        torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    elif kind == "empty_dir":
        path = tmp_path
    with pytest.raises(BadInput) as err:
        load_checkpoint(path)
    assert str(err.value).startswith("-m/--model:")
    assert "pickled code ran" not in capsys.readouterr().out
