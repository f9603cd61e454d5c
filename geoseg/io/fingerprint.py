"""Input fingerprints: enough to tell that a file is no longer the one a store was started from.

A resumed ``geoseg tile`` must only finish a store from the very inputs it started with:
re-exporting a scene under the same name and rerunning would otherwise mix old and new pixels
in one store. A fingerprint is cheap to take on any scene size (it never reads the whole file):
the absolute path, size and modification time, and a hash of the file's first bytes (the
header: size, tiling, georeferencing, band layout) plus a pixel sample read through GDAL (which
also covers a VRT's source files): a 3 × 3 grid of small windows spread over the raster. Small
windows, not a decimated read of the whole raster: on a tiled GeoTIFF a decimated read touches,
and so decodes, every block of the scene, a second full read inside ``geoseg tile``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from geoseg.errors import BadInput

#: bytes of the file start hashed as its header
HEADER_BYTES = 64 * 1024
#: edge of each sampled window, and where the 3 × 3 windows sit (fractions of the raster)
SAMPLE_EDGE = 64
SAMPLE_AT = (0.1, 0.5, 0.9)


def _is_local(path: str) -> bool:
    return "://" not in path and not path.startswith("/vsi")


def fingerprint(path: str | Path, *, raster: bool = True) -> dict[str, Any]:
    """``{"path", "size", "mtime_ns", "hash"}`` of one input (size/mtime None for URLs).

    ``raster=False`` (a vector labels file) hashes the file's bytes only, no pixel sample.
    """
    text = str(path)
    h = hashlib.sha256()
    size = mtime = None
    if _is_local(text):
        p = Path(text).resolve()
        text = str(p)
        st = p.stat()
        size, mtime = st.st_size, st.st_mtime_ns
        with p.open("rb") as f:
            h.update(f.read(HEADER_BYTES))
    if raster:
        import rasterio
        from rasterio.windows import Window

        with rasterio.open(text) as src:
            h.update(repr((src.width, src.height, src.count, src.dtypes, src.transform)).encode())
            rows, cols = min(SAMPLE_EDGE, src.height), min(SAMPLE_EDGE, src.width)
            for fy in SAMPLE_AT:
                for fx in SAMPLE_AT:
                    row = int(fy * (src.height - rows))
                    col = int(fx * (src.width - cols))
                    h.update(src.read(window=Window(col, row, cols, rows)).tobytes())
    return {"path": text, "size": size, "mtime_ns": mtime, "hash": h.hexdigest()}


def check_unchanged(
    recorded: Sequence[Mapping[str, Any]] | None,
    current: Sequence[Mapping[str, Any]],
    *,
    param: str = "INPUT",
) -> None:
    """Refuse to resume when an input differs from its recorded fingerprint.

    A store started by an older geoseg has no fingerprints: it is resumed as before.

    Raises:
        BadInput: naming the first changed input, with the fix (``--overwrite``).
    """
    if not recorded:
        return
    for old, new in zip(recorded, current, strict=False):
        if dict(old) != dict(new):
            raise BadInput(
                f"{new['path']}: input changed since the store was started; use --overwrite "
                "to start the store again from the current inputs",
                param=param,
            )
    if len(recorded) != len(current):
        raise BadInput(
            "input changed since the store was started (another number of inputs); use --overwrite",
            param=param,
        )
