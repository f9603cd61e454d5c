"""QGIS layer styles (``.qml``) written next to every raster and vector output.

QGIS loads ``<name>.qml`` automatically when it opens ``<name>.tif`` / ``<name>.gpkg``, so a
user drags an output into QGIS and sees it styled. Raster styles use the same palette as the
COG's embedded colour table (``geoseg.io.palette.colour_table``), so both views agree. The XML
follows what QGIS 3.22 itself saves (``saveNamedStyle``), keeping only the elements that carry
meaning; QGIS fills the rest with its defaults.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from pathlib import Path

import rasterio

from geoseg.io.palette import colour_table
from geoseg.paths import atomic_output

#: version written into styles; QGIS 3.x reads styles from any 3.x release
QGIS_VERSION = "3.22.0"

#: building outline colour (RGBA), chosen to stand out on imagery and on the cluster palette
OUTLINE_RGBA = (255, 0, 170, 255)
#: stroke width of polygon outlines, in millimetres
OUTLINE_WIDTH_MM = 0.6
#: fill alpha (0-255) when polygons are filled rather than outlined
FILL_ALPHA = 70
#: a 0/1 class raster's class pixels: the outline colour, half transparent so the image shows
CLASS_RGBA = (255, 0, 170, 150)
#: outline colours (RGBA) of ``geoseg score --layers``: green matches, orange false alarms,
#: magenta misses (Okabe-Ito hues, distinct on imagery and for colour-blind readers)
SCORE_RGBA = {"tp": (0, 158, 115, 255), "fp": (230, 159, 0, 255), "fn": (204, 0, 204, 255)}


def write_raster_style(
    tif_path: str | Path,
    classes: int | Iterable[int],
    class_names: Mapping[int, str] | None = None,
    *,
    nodata: float | None = None,
) -> Path:
    """Write ``<tif stem>.qml``: a paletted renderer whose colours equal the COG colour table.

    Args:
        tif_path: the class/cluster raster the style belongs to.
        classes: number of classes ``n`` (values ``0..n-1``) or the explicit values.
        class_names: legend label per value (default: the value).
        nodata: value drawn transparent; default the raster's own nodata when it can be read.

    Returns:
        Path of the written ``.qml``. With ``class_names``, the names also go into the
        raster's GDAL category names and attribute table (:func:`write_class_table`), so
        tools other than QGIS see them too.
    """
    tif_path = Path(tif_path)
    values = list(range(classes)) if isinstance(classes, int) else sorted({int(v) for v in classes})
    if nodata is None:
        nodata = _raster_nodata(tif_path)
    names = class_names or {}
    palette = colour_table(max(values) + 1 if values else 0)
    if names:
        write_class_table(tif_path, {v: names.get(v, str(v)) for v in values if v != nodata})
    else:  # names of an earlier, mapped run would now be wrong
        _remove_class_table(tif_path)

    root, pipe, renderer = _paletted([] if nodata is None else [_num(nodata)])
    entries = ET.SubElement(renderer, "colorPalette")
    for value in values:
        if nodata is not None and value == nodata:
            continue
        r, g, b, a = palette[value]
        ET.SubElement(
            entries,
            "paletteEntry",
            value=str(value),
            color=f"#{r:02x}{g:02x}{b:02x}",
            alpha=str(a),
            label=str(names.get(value, value)),
        )
    ET.SubElement(pipe, "brightnesscontrast", brightness="0", contrast="0", gamma="1")
    ET.SubElement(pipe, "rasterresampler", maxOversampling="2")
    ET.SubElement(root, "blendMode").text = "0"
    return _write(root, tif_path.with_suffix(".qml"))


def _paletted(transparent: list[str]) -> tuple[ET.Element, ET.Element, ET.Element]:
    """``(root, pipe, renderer)`` of a paletted raster style, with ``transparent`` values fully
    transparent (nodata, or the 0 of a class raster that must not hide the image)."""
    root = _root()
    pipe = ET.SubElement(root, "pipe")
    renderer = ET.SubElement(
        pipe,
        "rasterrenderer",
        type="paletted",
        band="1",
        opacity="1",
        alphaBand="-1",
        nodataColor="",
    )
    if transparent:
        pixels = ET.SubElement(
            ET.SubElement(renderer, "rasterTransparency"), "singleValuePixelList"
        )
        for value in transparent:
            ET.SubElement(pixels, "pixelListEntry", min=value, max=value, percentTransparent="100")
    return root, pipe, renderer


def write_class_style(tif_path: str | Path, name: str, *, rgba=CLASS_RGBA) -> Path:
    """Write ``<tif stem>.qml`` for a 0/1 class raster (predict's ``<stem>_building.tif``).

    Only the class is drawn (value 1, half transparent); 0 and nodata are fully transparent,
    so the raster can lie over the image without hiding it.
    """
    tif_path = Path(tif_path)
    root, pipe, renderer = _paletted(["0", "255"])
    entries = ET.SubElement(renderer, "colorPalette")
    r, g, b, a = rgba
    ET.SubElement(
        entries, "paletteEntry", value="0", color="#000000", alpha="0", label=f"not {name}"
    )
    ET.SubElement(
        entries,
        "paletteEntry",
        value="1",
        color=f"#{r:02x}{g:02x}{b:02x}",
        alpha=str(a),
        label=name,
    )
    ET.SubElement(pipe, "brightnesscontrast", brightness="0", contrast="0", gamma="1")
    ET.SubElement(pipe, "rasterresampler", maxOversampling="2")
    ET.SubElement(root, "blendMode").text = "0"
    write_class_table(tif_path, {0: f"not {name}", 1: name}, colours={0: (0, 0, 0, 0), 1: rgba})
    return _write(root, tif_path.with_suffix(".qml"))


def class_raster_colormap() -> dict[int, tuple[int, int, int, int]]:
    """GDAL colour table of a 0/1 class raster (nodata 255): the class only, as in its style."""
    return {0: (0, 0, 0, 0), 1: CLASS_RGBA, 255: (0, 0, 0, 0)}


def write_class_table(
    tif_path: str | Path,
    names: Mapping[int, str],
    *,
    colours: Mapping[int, tuple[int, int, int, int]] | None = None,
) -> Path:
    """Write ``<tif>.aux.xml``: GDAL category names and a raster attribute table.

    GDAL reads this sidecar (its "PAM" file) with the raster, so ``gdalinfo``, QGIS's
    identify tool and any GDAL-based tool name the values; a COG cannot hold either inside.
    Rows are value, class name and the colour of :func:`~geoseg.io.palette.colour_table`.
    """
    tif_path = Path(tif_path)
    palette = colour_table(max(names) + 1 if names else 0) | dict(colours or {})
    root = ET.Element("PAMDataset")
    band = ET.SubElement(root, "PAMRasterBand", band="1")
    categories = ET.SubElement(band, "CategoryNames")
    for value in range(max(names) + 1 if names else 0):  # GDAL indexes names by value
        ET.SubElement(categories, "Category").text = names.get(value, "")
    table = ET.SubElement(band, "GDALRasterAttributeTable", tableType="thematic")
    # GDAL field types: 0 integer, 2 string; usages: 5 min-max (the value), 2 name, 6-9 RGBA
    fields = [
        ("Value", 0, 5),
        ("Class", 2, 2),
        ("Red", 0, 6),
        ("Green", 0, 7),
        ("Blue", 0, 8),
        ("Alpha", 0, 9),
    ]
    for i, (field, kind, usage) in enumerate(fields):
        defn = ET.SubElement(table, "FieldDefn", index=str(i))
        ET.SubElement(defn, "Name").text = field
        ET.SubElement(defn, "Type").text = str(kind)
        ET.SubElement(defn, "Usage").text = str(usage)
    for i, (value, name) in enumerate(sorted(names.items())):
        row = ET.SubElement(table, "Row", index=str(i))
        for cell in (value, name, *palette[value]):
            ET.SubElement(row, "F").text = str(cell)
    ET.indent(root)
    path = tif_path.with_name(tif_path.name + ".aux.xml")
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(ET.tostring(root, encoding="unicode") + "\n", encoding="utf-8")
    return path


def _remove_class_table(tif_path: Path) -> None:
    aux = tif_path.with_name(tif_path.name + ".aux.xml")
    if aux.exists() and "<CategoryNames>" in aux.read_text(encoding="utf-8", errors="replace"):
        aux.unlink()


def score_layer_style(layer: str) -> str:
    """QGIS style (QML text) of a ``geoseg score --layers`` layer: its coloured outline.

    Stored inside the GeoPackage as the layer's default style (``layer_styles`` table), which
    QGIS applies when it opens the layer: a single ``.qml`` beside the file cannot style
    three layers differently.
    """
    root = vector_style(rgba=SCORE_RGBA[layer])
    return _text(root)


def write_vector_style(
    vector_path: str | Path,
    *,
    outline_only: bool = True,
    classes: Mapping[int, str] | None = None,
) -> Path:
    """Write ``<stem>.qml`` for a polygon layer: coloured 0.6 mm outlines.

    Args:
        vector_path: the GeoPackage / GeoJSON / FlatGeobuf the style belongs to.
        outline_only: no fill (footprints over imagery) instead of a semi-transparent fill.
        classes: ``{cluster value: name}`` of the layer; with two or more, polygons are
            categorised by their ``cluster`` field in the raster palette's colours, so a
            polygon has the colour of the pixels it came from. Otherwise one outline colour.

    Returns:
        Path of the written ``.qml``.
    """
    root = vector_style(outline_only=outline_only, classes=classes)
    return _write(root, Path(vector_path).with_suffix(".qml"))


def vector_style(
    *,
    outline_only: bool = True,
    classes: Mapping[int, str] | None = None,
    rgba: tuple[int, int, int, int] = OUTLINE_RGBA,
) -> ET.Element:
    """The ``<qgis>`` element of a polygon style (see :func:`write_vector_style`)."""
    root = _root()
    attrs = {"symbollevels": "0", "enableorderby": "0", "forceraster": "0", "referencescale": "-1"}
    if classes is not None and len(classes) > 1:
        renderer = ET.SubElement(
            root, "renderer-v2", type="categorizedSymbol", attr="cluster", **attrs
        )
        categories = ET.SubElement(renderer, "categories")
        symbols = ET.SubElement(renderer, "symbols")
        palette = colour_table(max(classes) + 1)
        for i, (value, name) in enumerate(sorted(classes.items())):
            ET.SubElement(
                categories, "category", render="true", symbol=str(i), value=str(value), label=name
            )
            _fill_symbol(symbols, str(i), palette[value], outline_only)
    else:
        renderer = ET.SubElement(root, "renderer-v2", type="singleSymbol", **attrs)
        _fill_symbol(ET.SubElement(renderer, "symbols"), "0", rgba, outline_only)
    ET.SubElement(renderer, "rotation")
    ET.SubElement(renderer, "sizescale")
    ET.SubElement(root, "blendMode").text = "0"
    ET.SubElement(root, "featureBlendMode").text = "0"
    ET.SubElement(root, "layerGeometryType").text = "2"  # polygon
    return root


def _fill_symbol(
    symbols: ET.Element, name: str, rgba: tuple[int, int, int, int], outline_only: bool
) -> None:
    """A QGIS fill symbol: an ``rgba`` outline, and no fill or a faint fill of the same colour."""
    r, g, b, _ = rgba
    props = {
        "color": "0,0,0,0" if outline_only else f"{r},{g},{b},{FILL_ALPHA}",
        "style": "no" if outline_only else "solid",
        "outline_color": ",".join(map(str, rgba)),
        "outline_style": "solid",
        "outline_width": str(OUTLINE_WIDTH_MM),
        "outline_width_unit": "MM",
        "joinstyle": "miter",
    }
    symbol = ET.SubElement(
        symbols, "symbol", name=name, type="fill", alpha="1", clip_to_extent="1", force_rhr="0"
    )
    attrs = {"class": "SimpleFill", "enabled": "1", "locked": "0", "pass": "0"}
    layer = ET.SubElement(symbol, "layer", attrs)
    options = ET.SubElement(layer, "Option", type="Map")
    for key, value in props.items():
        ET.SubElement(options, "Option", name=key, value=value, type="QString")
    # the older <prop> form too, as QGIS 3.22 itself writes both
    for key, value in props.items():
        ET.SubElement(layer, "prop", k=key, v=value)


def _root() -> ET.Element:
    return ET.Element("qgis", version=QGIS_VERSION, styleCategories="Symbology")


def _text(root: ET.Element) -> str:
    ET.indent(root)
    doctype = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
    return doctype + ET.tostring(root, encoding="unicode") + "\n"


def _write(root: ET.Element, path: Path) -> Path:
    """Write the style atomically; a style follows its data file, so it is always replaced."""
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(_text(root), encoding="utf-8")
    return path


def _raster_nodata(path: Path) -> float | None:
    """The raster's nodata value, or None when it has none or cannot be read yet."""
    try:
        with rasterio.open(path) as src:
            return src.nodata
    except rasterio.RasterioIOError:  # a style may be written before its raster
        return None


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
