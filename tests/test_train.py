"""geoseg train: run folder contents, exact resume, baselines through the loop, and the CLI."""

from __future__ import annotations

import csv

import pytest
import torch
import yaml
from click.testing import CliRunner

from geoseg.checkpoint import load_checkpoint
from geoseg.cli import group, main
from geoseg.train.loop import train

#: a tiny, fast run: 48 px crops, a quarter-width VGG, two heads with two sub-heads each
TINY = (
    "n_clusters=4",
    "n_over_clusters=8",
    "data.crop_size=48",
    "data.batch_size=2",
    "data.quicklook_tiles=2",
    "model.width=0.125",
    "model.n_sub_heads=2",
    "loss.displacement=1",
    "optim.lr=0.001",
    "schedule.eval_batches=1",
    "schedule.log_every=1",
    "schedule.steps_per_epoch=4",
)


@pytest.fixture(scope="module")
def store(fixtures, tmp_path_factory):
    """The synthetic RGBN fixture with its labels, as 6 tiles of 64 px."""
    from geoseg.tiles.writer import tile

    out = tmp_path_factory.mktemp("store") / "fixture.zarr"
    tile([fixtures["rgbn"]], out, tile_size=64, overlap=16, labels=fixtures["labels"])
    return out


def _rows(run):
    with (run / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def test_train_writes_run_folder(store, tmp_path):
    run = tmp_path / "run"
    best = train(store, run, overrides=TINY + ("schedule.steps=6", "schedule.eval_every=3"))
    assert best == run / "best.pt" and best.is_file() and (run / "last.pt").is_file()
    assert sorted(p.name for p in (run / "quicklook").iterdir()) == [
        "epoch_001.png",
        "epoch_002.png",
    ]
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["optim"]["lr"] == 0.001 and saved["model"]["n_sub_heads"] == 2
    rows = _rows(run)
    evals = [r for r in rows if r["split"] == "eval"]
    assert {(r["step"], r["head"]) for r in evals} == {
        (s, h) for s in ("3", "6") for h in ("main", "over")
    }
    # the store has labels, so monitoring rows carry label scores (never used by the loss)
    assert all(0 <= float(r["hungarian_acc"]) <= 1 for r in evals)
    assert len([r for r in rows if r["split"] == "train"]) == 6
    ckpt = torch.load(run / "last.pt", weights_only=True)
    assert ckpt["step"] == 6 and ckpt["method"] == "iic" and ckpt["n_clusters"] == [4, 8]
    assert ckpt["bands"] == [1, 2, 3, 4] and ckpt["tile_size"] == 48
    best_eval = min(float(r["loss"]) for r in evals if r["head"] == "main")
    assert ckpt["best_loss"] == pytest.approx(best_eval, rel=1e-4)


@pytest.mark.parametrize("method", ["iic", "ac"])
def test_resume_continues_exactly(store, tmp_path, method):
    """N steps, stop, resume to 2N == 2N straight (weights, optimizer state, logged losses)."""
    common = TINY + ("schedule.eval_every=2", "schedule.checkpoint_every=2", f"method={method}")
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(store, straight, overrides=common + ("schedule.steps=6",))
    train(store, split, overrides=common + ("schedule.steps=3",))
    train(store, split, overrides=("schedule.steps=6",), resume=True)
    a = torch.load(straight / "last.pt", weights_only=True)
    b = torch.load(split / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 6
    for key, value in a["model_state"].items():
        assert torch.equal(value, b["model_state"][key]), key
    for key, value in a["optimizer_state"]["state"].items():
        for name, tensor in value.items():
            assert torch.equal(tensor, b["optimizer_state"]["state"][key][name]), (key, name)
    # the first part ended at step 3 with its own final evaluation; everything else matches
    rows = [
        [(r["step"], r["split"], r["head"], r["loss"]) for r in _rows(run) if r["step"] != "3"]
        for run in (straight, split)
    ]
    assert rows[0] == rows[1]


def test_kmeans_through_train_recovers_classes(store, tmp_path):
    run = tmp_path / "km"
    best = train(store, run, method="kmeans", overrides=("n_clusters=4", "data.crop_size=64"))
    ckpt = load_checkpoint(best)
    assert ckpt["method"] == "kmeans" and ckpt["optimizer_state"] is None
    (row,) = [r for r in _rows(run) if r["split"] == "eval"]
    assert float(row["hungarian_acc"]) > 0.95
    assert int(row["clusters_used"]) == 4


def test_kanezaki_through_train(store, tmp_path):
    run = tmp_path / "kz"
    over = ("n_clusters=4", "schedule.steps=5", "baseline.width=8", "data.crop_size=48")
    train(store, run, method="kanezaki", overrides=over)
    ckpt = load_checkpoint(run)
    assert ckpt["method"] == "kanezaki" and ckpt["n_clusters"] == [8]
    assert (run / "quicklook" / "epoch_001.png").is_file()


def _main(args: list[str], capsys) -> tuple[int, str]:
    """Run the console entry point (with its exit-code convention); return (code, stderr)."""
    with pytest.raises(SystemExit) as exit_:
        main(["-q", "train", *map(str, args)])
    return exit_.value.code, capsys.readouterr().err


def test_cli_train_set_override_and_refusals(store, tmp_path, capsys):
    run = tmp_path / "cli"
    args = [store, "-o", run, "--method", "kmeans", "--set", "n_clusters=3"]
    result = CliRunner().invoke(group, ["-q", "train", *map(str, args)])
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("best.pt")
    assert load_checkpoint(run / "best.pt")["n_clusters"] == [3]
    assert yaml.safe_load((run / "config.yaml").read_text())["n_clusters"] == 3
    code, err = _main(args, capsys)
    assert code == 2 and "--overwrite" in err and err.strip().count("\n") == 0
    assert _main([*args, "--overwrite"], capsys)[0] == 0


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--set", "data.crop_sise=32"], "unknown key data.crop_sise"),
        (["--set", "schedule.steps=many"], "schedule.steps"),
        (["--resume"], "last.pt"),
        (["--method", "dbscan"], "--method"),
        (["--set", "model.widht=0.5"], "model.widht"),
        pytest.param(
            ["--device", "cuda"],
            "--device",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="needs a CPU-only host"),
        ),
    ],
)
def test_cli_train_bad_input_exits_2(store, tmp_path, capsys, extra, needle):
    code, err = _main([store, "-o", tmp_path / "r", *extra], capsys)
    assert code == 2 and needle in err and err.strip().count("\n") == 0
    assert not (tmp_path / "r").exists() or "--resume" in extra


def test_cli_train_config_file_unknown_key(store, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: iic\noptim:\n  learning_rate: 0.1\n")
    code, err = _main([store, "-o", tmp_path / "r", "-c", bad], capsys)
    assert code == 2 and "optim.learning_rate" in err
    assert not (tmp_path / "r").exists()


def test_every_shipped_config_loads():
    from pathlib import Path

    from geoseg.config import TrainConfig, load_config
    from geoseg.models import model_config

    configs = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
    assert len(configs) >= 9
    for path in configs:
        cfg = load_config(TrainConfig, path)
        assert isinstance(cfg.optim.lr, float), path  # "1e-4" would be a YAML string
        if cfg.method in ("iic", "ac"):
            model_config(cfg.model)


def test_rng_state_survives_a_weights_only_checkpoint(tmp_path):
    import random

    import numpy as np

    from geoseg.train.data import rng_state, seed_everything, set_rng_state

    seed_everything(5)
    torch.save({"rng_state": rng_state()}, tmp_path / "s.pt")
    first = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(torch.load(tmp_path / "s.pt", weights_only=True)["rng_state"])
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], again[0])
    assert np.array_equal(first[1], again[1]) and first[2] == again[2]


def test_geoseg_train_end_to_end_bad_config(store, tmp_path):
    import subprocess

    cmd = ["geoseg", "-q", "train", str(store), "-o", str(tmp_path / "r"), "--method", "kmeans"]
    bad = subprocess.run([*cmd, "--set", "baseline.sampels=10"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
    assert "baseline.sampels" in bad.stderr and not (tmp_path / "r").exists()


@pytest.mark.slow
def test_torchrun_two_processes_train_one_run(store, tmp_path):
    """DDP on CPU (gloo): two ranks, one run folder written by rank 0, weights in sync."""
    import os
    import subprocess
    import sys

    run = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29561",
        "-m",
        "geoseg",
        "-q",
        "train",
        str(store),
        "-o",
        str(run),
        "--device",
        "cpu",
        "--set",
        "schedule.steps=3",
        "--set",
        "schedule.eval_every=2",
        *[a for o in TINY for a in ("--set", o)],
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert load_checkpoint(run / "last.pt")["step"] == 3
    steps = [r["step"] for r in _rows(run) if r["split"] == "train"]
    assert steps == ["1", "2", "3"]  # one writer: no duplicated rows
