"""Raster I/O: open and describe rasters, band selection, nodata/valid masks, windowed reads,
and Cloud Optimized GeoTIFF writing.

Everything here works window by window so memory is bounded by the window, never the scene.
"""

from __future__ import annotations

import colorsys

# --- palette (shared by COG colour tables and QGIS styles) -----------------------------------


def colour_table(n: int) -> dict[int, tuple[int, int, int, int]]:
    """A stable, well-separated RGBA colour per class/cluster id ``0..n-1``.

    Golden-ratio hue steps keep neighbouring ids distinguishable for any ``n``, and the same
    id always gets the same colour, so a COG's embedded table and its ``.qml`` style agree.
    """
    table = {}
    for i in range(n):
        hue = (i * 0.618033988749895) % 1.0
        light = 0.45 + 0.15 * ((i // 7) % 2)
        r, g, b = colorsys.hls_to_rgb(hue, light, 0.75)
        table[i] = (round(r * 255), round(g * 255), round(b * 255), 255)
    return table


# --- reading (owned by the tiles/foundation work) --------------------------------------------


# --- COG writing (owned by the predict work) -------------------------------------------------
