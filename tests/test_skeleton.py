"""The shared plumbing: exit-code convention, config loading, atomic outputs, dask runner."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from geoseg.config import load_config, parse_overrides, to_dict
from geoseg.errors import BadInput, ConfigError, OutputExists
from geoseg.paths import atomic_output, check_input


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "geoseg", *args], capture_output=True, text=True, timeout=120
    )


def test_version_and_help_are_fast_and_light():
    out = run_cli("--version")
    assert out.returncode == 0 and "0.1.0" in out.stdout
    # --help must not import torch/dask/geopandas: check in a fresh interpreter.
    code = (
        "import sys; from geoseg.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "heavy = [m for m in ('torch', 'dask', 'geopandas', 'rasterio') if m in sys.modules]\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_usage_error_is_one_line_exit_2():
    out = run_cli("no-such-command")
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0
    assert "no-such-command" in out.stderr


@dataclasses.dataclass(frozen=True)
class Optim:
    lr: float = 1e-3
    betas: tuple[float, ...] = (0.9, 0.999)


@dataclasses.dataclass(frozen=True)
class Cfg:
    method: str = "iic"
    steps: int = 10
    optim: Optim = dataclasses.field(default_factory=Optim)
    note: str | None = None


def test_config_yaml_overrides_and_round_trip(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 20\noptim:\n  lr: 0.01\n")
    cfg = load_config(Cfg, path, ["optim.lr=0.5", "method=ac"])
    assert cfg == Cfg(method="ac", steps=20, optim=Optim(lr=0.5))
    assert to_dict(cfg)["optim"]["betas"] == [0.9, 0.999]
    assert load_config(Cfg, to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    ("source", "overrides", "fragment"),
    [
        ({"stepz": 3}, (), "unknown key stepz"),
        ({"optim": {"lrr": 1}}, (), "unknown key optim.lrr"),
        ({}, ("steps=ten",), "expected an integer"),
        ({}, ("steps",), "not KEY=VALUE"),
    ],
)
def test_config_errors_name_the_key(source, overrides, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config(Cfg, source, overrides)


def test_config_reads_exponent_floats_that_yaml_leaves_as_strings(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 1e-4\n")
    assert load_config(Cfg, path, ["optim.betas=[1e-3, 0.5]"]).optim == Optim(1e-4, (1e-3, 0.5))
    with pytest.raises(ConfigError, match="expected a number"):
        load_config(Cfg, {"optim": {"lr": "fast"}})


def test_parse_overrides_nests_and_parses_yaml_values():
    assert parse_overrides(["a.b=1", "a.c=[1, 2]", "d=true"]) == {
        "a": {"b": 1, "c": [1, 2]},
        "d": True,
    }


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.tif"
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_refuses_then_replaces(tmp_path):
    target = tmp_path / "store.zarr"
    target.mkdir()
    (target / "old").write_text("x")
    with pytest.raises(OutputExists, match="--overwrite"), atomic_output(target):
        pass
    with atomic_output(target, overwrite=True) as tmp:
        tmp.mkdir()
        (tmp / "new").write_text("y")
    assert sorted(p.name for p in target.iterdir()) == ["new"]
    assert [p.name for p in tmp_path.iterdir()] == ["store.zarr"]


def test_check_input_names_the_argument(tmp_path):
    with pytest.raises(BadInput, match=r"^RASTER: .*does not exist"):
        check_input(tmp_path / "missing.tif", param="RASTER")


def test_run_tasks_keeps_order_on_threads():
    import dask

    from geoseg.progress import run_tasks

    tasks = [dask.delayed(lambda i: i * i)(i) for i in range(20)]
    assert run_tasks(tasks, desc="test") == [i * i for i in range(20)]
    assert run_tasks(tasks, scheduler="sync") == [i * i for i in range(20)]


def test_run_tasks_on_a_distributed_cluster():
    dask = pytest.importorskip("dask")
    distributed = pytest.importorskip("distributed")
    from geoseg.progress import run_tasks

    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        tasks = [dask.delayed(Path)(f"p{i}") for i in range(5)]
        assert run_tasks(tasks, scheduler=cluster.scheduler_address) == [
            Path(f"p{i}") for i in range(5)
        ]


def test_quiet_progress_needs_no_tqdm():
    """Under -q a bar is a silent stand-in with the interface geoseg uses (iteration, a
    context, update, set_postfix, close), and tqdm is never imported: ~30-50 ms of a short
    command (issue 11). With bars on, the real tqdm draws them."""
    code = (
        "import sys\n"
        "from geoseg.progress import progress, set_enabled\n"
        "set_enabled(False)\n"
        "assert list(progress(range(3), desc='x')) == [0, 1, 2]\n"
        "with progress(total=2, desc='y') as bar:\n"
        "    bar.update(1); bar.set_postfix(loss=1.0)\n"
        "progress(total=1).close()\n"
        "assert 'tqdm' not in sys.modules, 'tqdm imported under -q'\n"
        "set_enabled(True)\n"
        "bar = progress(total=1, desc='z')\n"
        "assert type(bar).__module__.startswith('tqdm')\n"
        "bar.close()\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
