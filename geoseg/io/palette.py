"""Class rasters' look: the shared palette, and the dtype/nodata a class raster gets.

One palette for COG colour tables, QGIS styles and training quicklooks, so a cluster has the
same colour everywhere it is drawn.
"""

from __future__ import annotations

import colorsys


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


def class_dtype(n_classes: int) -> tuple[str, int]:
    """``(dtype, nodata)`` of a class raster: uint8/255 up to 255 classes, else uint16/65535."""
    return ("uint8", 255) if n_classes <= 255 else ("uint16", 65535)


def class_colormap(n_classes: int, nodata: int) -> dict[int, tuple[int, int, int, int]]:
    """:func:`colour_table` plus a transparent entry for ``nodata``, for a GDAL palette."""
    table = colour_table(n_classes)
    table[nodata] = (0, 0, 0, 0)
    return table
