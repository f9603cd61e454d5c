"""The import layers of docs/architecture.md hold: import-linter's contracts in pyproject.toml.

Run inside the suite so an upward import or a cycle fails `pytest -n 2` like any other bug.
"""

from __future__ import annotations

import ast
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


# --- every command's code is one hop from cli/<command>.py -----------------------------------

#: command → the library function(s) its cli module delegates to, each a public function
#: defined in the module named (not a re-export). ``geoseg predict --qgis-project`` is the one
#: second step: the project is written by geoseg.vector after predict returns.
DELEGATES = {
    "demo": {"geoseg.demo.demo"},
    "evaluate": {"geoseg.evaluate.rasters.evaluate"},
    "info": {"geoseg.info.describe"},
    "map": {"geoseg.evaluate.mapping.fit_mapping"},
    "predict": {
        "geoseg.predict.raster.predict",
        "geoseg.vector.project.write_prediction_project",
    },
    "report": {"geoseg.report.page.report"},
    "score": {"geoseg.evaluate.spacenet.score"},
    "tile": {"geoseg.tiles.writer.tile"},
    "train": {"geoseg.train.loop.train"},
    "vectorize": {"geoseg.vector.vectorize.vectorize_to_file"},
}

#: what a command module may import besides the standard library and its delegates
CLI_ALLOWED = {"__future__", "click", "geoseg.cli.options"}


def cli_violations(source: str, command: str) -> list[str]:
    """Why a command module is not "parse, then call its delegate" (empty: it is).

    It may import click, the standard library, ``geoseg.cli.options`` (shared parsing) and
    its delegates; each delegate must be called, once.
    """
    problems: list[str] = []
    delegates = DELEGATES.get(command)
    if delegates is None:
        return [f"{command}: no delegate declared in DELEGATES"]
    tree = ast.parse(source)
    local: dict[str, str] = {}  # local name → dotted delegate
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top not in CLI_ALLOWED and top not in sys.stdlib_module_names:
                    problems.append(f"{command}: imports {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            top = module.split(".")[0]
            if node.level or top == "geoseg":
                if module in CLI_ALLOWED:
                    continue
                for alias in node.names:
                    dotted = f"{module}.{alias.name}"
                    if dotted in delegates:
                        local[alias.asname or alias.name] = dotted
                    else:
                        problems.append(f"{command}: imports {dotted}, not its delegate")
            elif top not in CLI_ALLOWED and top not in sys.stdlib_module_names:
                problems.append(f"{command}: imports {module}")
    calls = [
        local[node.func.id]
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in local
    ]
    for dotted in sorted(delegates):
        if calls.count(dotted) != 1:
            problems.append(f"{command}: calls {dotted} {calls.count(dotted)} times, not once")
    return problems


def _defines(dotted: str) -> bool:
    """The delegate is a public top-level function of the module it is imported from."""
    module, name = dotted.rsplit(".", 1)
    parts = module.split(".")
    path = ROOT.joinpath(*parts).with_suffix(".py")
    if not path.exists():
        path = ROOT.joinpath(*parts, "__init__.py")
    tree = ast.parse(path.read_text())
    public = not name.startswith("_") and not any(p.startswith("_") for p in parts)
    return public and any(
        isinstance(node, ast.FunctionDef) and node.name == name for node in tree.body
    )


def test_every_command_parses_then_calls_one_library_function():
    from geoseg.cli import COMMANDS

    modules = {
        p.stem
        for p in (ROOT / "geoseg" / "cli").glob("*.py")
        if p.stem not in ("__init__", "options")
    }
    assert modules == set(COMMANDS) == set(DELEGATES)
    problems = []
    for command in sorted(modules):
        source = (ROOT / "geoseg" / "cli" / f"{command}.py").read_text()
        problems += cli_violations(source, command)
        problems += [
            f"{d} is not a public function defined there"
            for d in sorted(DELEGATES[command])
            if not _defines(d)
        ]
    assert not problems, "\n".join(problems)


def test_the_one_hop_check_can_fail():
    """A command reaching into a private helper, numpy, or a re-export is caught."""
    bad = (
        "import numpy as np\n"
        "from geoseg.evaluate import evaluate\n"
        "from geoseg.evaluate.rasters import _confusion\n"
        "def cli(pred):\n"
        "    return _confusion(np.zeros(1)), evaluate(pred)\n"
    )
    problems = cli_violations(bad, "evaluate")
    assert any("imports numpy" in p for p in problems)
    assert any("geoseg.evaluate.rasters._confusion" in p for p in problems)
    assert any("geoseg.evaluate.evaluate, not its delegate" in p for p in problems)
    assert any("calls geoseg.evaluate.rasters.evaluate 0 times" in p for p in problems)
    assert not _defines("geoseg.evaluate.evaluate")  # a lazy re-export, two hops away
    assert not _defines("geoseg.train.loop._fit_steps")
