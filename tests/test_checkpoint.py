"""The checkpoint format: weights_only loading, rebuilding models, refusing foreign files."""

from __future__ import annotations

import pickle

import pytest
import torch

from geoseg.checkpoint import Checkpoint
from geoseg.errors import BadInput
from geoseg.io.bands import BandSpec


def _checkpoint(
    method: str, model_cfg: dict, n_clusters: list[int]
) -> tuple[dict, torch.nn.Module]:
    from geoseg.checkpoint import build_from_spec

    spec = {"method": method, "model_cfg": model_cfg, "in_channels": 4, "n_clusters": n_clusters}
    torch.manual_seed(3)
    model = build_from_spec(spec).eval()
    if method == "kmeans":
        model.centroids.normal_()
    bands = BandSpec.of(
        [1, 2, 3, 4],
        ["red", "green", "blue", "nir"],
        {k: [0.0, 1.0, 2.0, 3.0] for k in ("mean", "std", "p2", "p98")},
    )
    ckpt = Checkpoint.new(
        model,
        method=method,
        spec=spec,
        bands=bands,
        crop_size=64,
        config={"method": method},
        step=7,
        rng_state={"torch": torch.get_rng_state()},
        best_loss=-0.5,
    )
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
    path = ckpt.save(tmp_path / "best.pt")
    raw = torch.load(path, weights_only=True)  # no pickled code needed to read it
    assert raw["step"] == 7 and raw["band_names"][-1] == "nir"
    rebuilt = Checkpoint.load(path).build_model()
    assert not rebuilt.training
    x = torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for a, b in zip(model(x), rebuilt(x), strict=True):
            assert a.shape == (2, a.shape[1], 32, 32)
            assert torch.equal(a, b)
    assert Checkpoint.load(tmp_path)["method"] == method  # a run folder means its best.pt


def test_save_is_atomic_and_replaces(tmp_path):
    ckpt, _ = _checkpoint("kmeans", {}, [3])
    path = tmp_path / "last.pt"
    ckpt.save(path)
    Checkpoint({**ckpt, "step": 8}).save(path)
    assert Checkpoint.load(path)["step"] == 8
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    with pytest.raises(ValueError):
        Checkpoint({"step": 1}).save(tmp_path / "bad.pt")


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
        Checkpoint.load(path)
    assert str(err.value).startswith("-m/--model:")
    assert "pickled code ran" not in capsys.readouterr().out
