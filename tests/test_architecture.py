"""The import layers of docs/architecture.md hold: import-linter's contracts in pyproject.toml.

Run inside the suite so an upward import or a cycle fails `pytest -n 2` like any other bug.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _lint(config: Path) -> subprocess.CompletedProcess:
    code = (
        "import sys; from importlinter.cli import lint_imports; "
        f"sys.exit(lint_imports(config_filename={str(config)!r}, no_cache=True, no_logo=True))"
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_import_layers_and_no_cycles():
    result = _lint(ROOT / "pyproject.toml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_upward_import_breaks_the_layers(tmp_path):
    """The contract can fail: the same layers over a copy where io imports tiles are broken."""
    import shutil

    pkg = tmp_path / "geoseg"
    shutil.copytree(ROOT / "geoseg", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    with open(pkg / "io" / "palette.py", "a") as f:
        f.write("\nfrom geoseg.tiles import grid  # noqa: E402, F401\n")
    config = tmp_path / "pyproject.toml"
    config.write_text((ROOT / "pyproject.toml").read_text())
    code = (
        f"import sys; sys.path.insert(0, {str(tmp_path)!r}); "
        "from importlinter.cli import lint_imports; "
        f"sys.exit(lint_imports(config_filename={str(config)!r}, no_cache=True, no_logo=True))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "geoseg.io.palette -> geoseg.tiles.grid" in result.stdout
