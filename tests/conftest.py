"""Shared fixtures: tiny seeded rasters with a real CRS, and the real samples in tests/data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Tests run on two xdist workers on a 2-core machine: one math thread each avoids
# oversubscription (set before numpy/torch are imported by any test module).
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

DATA = Path(__file__).parent / "data"
sys.path.insert(0, str(DATA))

import make_fixtures  # noqa: E402


@pytest.fixture(scope="session")
def fixtures(tmp_path_factory) -> dict[str, Path]:
    """Generated rasters: rgbn (4-band uint8, EPSG:32611), labels, rgbn_4326, rgbn_nodata."""
    return make_fixtures.write_all(tmp_path_factory.mktemp("fixtures"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """tests/data: real sample crops (see tests/data/SOURCES.md)."""
    return DATA


@pytest.fixture
def make_raster(tmp_path):
    """Factory writing a GeoTIFF into the test's tmp dir: ``make_raster("a.tif", array, **kw)``."""

    def _make(name: str, data, **kwargs) -> Path:
        return make_fixtures.write_raster(tmp_path / name, data, **kwargs)

    return _make


#: the Python that has QGIS (Debian's python3-qgis is for the system interpreter)
QGIS_PYTHON = os.environ.get("GEOSEG_QGIS_PYTHON", "/usr/bin/python3")


@pytest.fixture(scope="session")
def qgis_python() -> str:
    """The interpreter that imports QGIS; skips without one, fails under GEOSEG_REQUIRE_QGIS=1
    (CI), so a missing QGIS never passes silently there."""
    try:
        probe = subprocess.run([QGIS_PYTHON, "-c", "import qgis.core"], capture_output=True)
        if probe.returncode == 0:
            return QGIS_PYTHON
    except OSError:  # no such interpreter
        pass
    message = (
        f"QGIS is not importable from {QGIS_PYTHON}; install it with "
        "`apt-get install -y --no-install-recommends python3-qgis qgis-providers`"
    )
    if os.environ.get("GEOSEG_REQUIRE_QGIS"):
        pytest.fail(message)
    pytest.skip(message)
