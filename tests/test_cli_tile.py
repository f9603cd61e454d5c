"""`geoseg tile` and `geoseg info` from the command line: outputs and exit codes."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner

from geoseg.cli import group, main
from geoseg.tiles.store import open_store


def run(*args):
    return CliRunner().invoke(group, ["-q", *map(str, args)])


def test_tile_then_info(fixtures, tmp_path):
    out = tmp_path / "s.zarr"
    result = run(
        "tile",
        fixtures["rgbn"],
        "-o",
        out,
        "--bands",
        "1,4",
        "--tile-size",
        "32",
        "--overlap",
        "0",
        "--labels",
        fixtures["labels"],
    )
    assert result.exit_code == 0, result.output
    assert "12 tiles" in result.output and "red,nir" in result.output
    store = open_store(out)
    assert store.bands == [1, 4] and store.has_labels
    info = run("info", out, "--json")
    assert info.exit_code == 0
    described = json.loads(info.output)
    assert described["tiles"] == 12 and [b["name"] for b in described["bands"]] == ["red", "nir"]
    table = run("info", fixtures["rgbn"])
    assert table.exit_code == 0 and "EPSG:32611" in table.output and "nir" in table.output


@pytest.mark.parametrize(
    "args, needle",
    [
        (["{bad}", "-o", "{out}"], "INPUT"),
        (["{missing}", "-o", "{out}"], "does not exist"),
        (["{rgbn}", "-o", "{out}", "--bands", "7"], "--bands"),
        (["{rgbn}", "-o", "{out}", "--overlap", "300"], "--overlap"),
        (["{rgbn}", "-o", "{out}", "--min-valid", "2"], "--min-valid"),
        (["{rgbn}", "-o", "{tmp}/no/such/dir/s.zarr"], "--output"),
    ],
)
def test_bad_input_exits_2_naming_the_argument(fixtures, tmp_path, capsys, args, needle):
    bad = tmp_path / "notes.tif"
    bad.write_text("hello")
    names = dict(
        bad=bad,
        missing=tmp_path / "missing.tif",
        rgbn=fixtures["rgbn"],
        out=tmp_path / "s.zarr",
        tmp=tmp_path,
    )
    with pytest.raises(SystemExit) as exit_:
        main(["-q", "tile", *[a.format(**names) for a in args]])
    stderr = capsys.readouterr().err
    assert exit_.value.code == 2, stderr
    assert needle in stderr and stderr.strip().count("\n") == 0
    assert not list(tmp_path.glob("*.zarr")) and not list(tmp_path.glob(".*partial*"))


def test_existing_output_needs_overwrite_end_to_end(fixtures, tmp_path):
    out = tmp_path / "s.zarr"
    args = ["tile", str(fixtures["rgbn"]), "-o", str(out), "--tile-size", "64"]
    assert run(*args).exit_code == 0
    again = subprocess.run(["geoseg", "-q", *args], capture_output=True, text=True)
    assert again.returncode == 2
    assert again.stderr.strip().count("\n") == 0 and "--overwrite" in again.stderr
    assert run(*args, "--overwrite").exit_code == 0
    missing = subprocess.run(
        ["geoseg", "info", str(tmp_path / "x.tif")], capture_output=True, text=True
    )
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_label_raster_on_another_grid_fails_before_writing(fixtures, make_raster, tmp_path, capsys):
    labels = make_raster("small_labels.tif", np.ones((1, 10, 10), np.uint8))
    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "-q",
                "tile",
                str(fixtures["rgbn"]),
                "-o",
                str(tmp_path / "s.zarr"),
                "--labels",
                str(labels),
                "--tile-size",
                "16",
            ]
        )
    assert exit_.value.code == 2 and "--labels" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.zarr")) and not list(tmp_path.glob(".*partial*"))
