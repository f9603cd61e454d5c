"""QGIS projects (``.qgz``) that open a prediction as a styled, ordered map in one click.

The project is written by hand, not by QGIS (geoseg does not depend on it): the same XML a
QGIS 3.22 project holds, reduced to what carries meaning: one ``<maplayer>`` per layer with
its data source *relative to the project* (so the folder can be moved or shared), its CRS and
its style (the ``.qml`` written beside each output, copied in), and a layer tree giving the
drawing order: errors and polygons on top, then the class raster, clusters, and the image.
"""

from __future__ import annotations

import os
import uuid
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio

from geoseg.paths import atomic_output

QGIS_VERSION = "3.22.0-Białowieża"


@dataclass(frozen=True)
class Layer:
    """One layer of a project: a file (and GeoPackage layer), its style, and its visibility."""

    name: str
    path: Path
    kind: str  # "raster" | "vector"
    style: ET.Element | None = None  # a <qgis> style element (as in a .qml)
    layer: str | None = None  # GeoPackage layer name
    visible: bool = True


def qml(path: Path) -> ET.Element | None:
    """The style written beside ``path`` (``<stem>.qml``), if any."""
    style = path.with_suffix(".qml")
    return ET.parse(style).getroot() if style.exists() else None


def image_style(path: str | Path, bands: Sequence[int]) -> ET.Element:
    """A red/green/blue style for ``bands`` of ``path``, stretched between 2% and 98%.

    QGIS's default would show bands 1, 2, 3, which on an 8-band WorldView image are coastal,
    blue and green; the percentiles come from a decimated read, as QGIS's own estimate does.
    """
    with rasterio.open(path) as src:
        step = max(1, max(src.width, src.height) // 512)
        out = (len(bands), max(1, src.height // step), max(1, src.width // step))
        data = src.read(list(bands), out_shape=out, masked=True)
    root = ET.Element("qgis", version=QGIS_VERSION, styleCategories="Symbology")
    pipe = ET.SubElement(root, "pipe")
    renderer = ET.SubElement(
        pipe,
        "rasterrenderer",
        type="multibandcolor",
        opacity="1",
        alphaBand="-1",
        redBand=str(bands[0]),
        greenBand=str(bands[1]),
        blueBand=str(bands[2]),
    )
    for colour, band in zip(("red", "green", "blue"), data, strict=True):
        values = band.compressed()
        lo, hi = np.percentile(values, (2, 98)) if values.size else (0.0, 1.0)
        enhance = ET.SubElement(renderer, f"{colour}ContrastEnhancement")
        ET.SubElement(enhance, "minValue").text = repr(float(lo))
        ET.SubElement(enhance, "maxValue").text = repr(float(hi))
        ET.SubElement(enhance, "algorithm").text = "StretchToMinimumMaximum"
    ET.SubElement(pipe, "brightnesscontrast", brightness="0", contrast="0", gamma="1")
    ET.SubElement(pipe, "rasterresampler", maxOversampling="2")
    return root


def write_project(
    path: str | Path,
    layers: Sequence[Layer],
    *,
    overwrite: bool = False,
    param: str = "--qgis-project",
) -> Path:
    """Write a ``.qgz`` (zipped ``.qgs``) showing ``layers``, first on top.

    Args:
        path: the project file; data sources are written relative to its folder.
        layers: drawing order, top first.
        overwrite: replace an existing project.

    Returns:
        The project path.
    """
    path = Path(path)
    folder = path.parent.resolve()
    ids = [f"{_safe(layer.name)}_{uuid.uuid4().hex[:8]}" for layer in layers]
    crs_wkt = _crs_wkt(layers[-1]) if layers else ""
    root = ET.Element("qgis", projectname=path.stem, version=QGIS_VERSION)
    ET.SubElement(root, "title").text = path.stem
    project_crs = ET.SubElement(root, "projectCrs")
    _srs(project_crs, crs_wkt)
    tree = ET.SubElement(root, "layer-tree-group")
    ET.SubElement(tree, "customproperties")
    sources = [_source(layer, folder) for layer in layers]
    for layer, layer_id, source in zip(layers, ids, sources, strict=True):
        ET.SubElement(
            tree,
            "layer-tree-layer",
            id=layer_id,
            name=layer.name,
            source=source,
            providerKey="gdal" if layer.kind == "raster" else "ogr",
            checked="Qt::Checked" if layer.visible else "Qt::Unchecked",
            expanded="0",
        )
    maplayers = ET.SubElement(root, "projectlayers")
    for layer, layer_id, source in zip(layers, ids, sources, strict=True):
        maplayers.append(_maplayer(layer, layer_id, source))
    properties = ET.SubElement(root, "properties")
    paths = ET.SubElement(properties, "Paths")
    ET.SubElement(paths, "Absolute", type="bool").text = "false"
    ET.indent(root)
    text = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + ET.tostring(
        root, encoding="unicode"
    )
    with (
        atomic_output(path, overwrite=overwrite, param=param) as tmp,
        zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive,
    ):
        archive.writestr(f"{path.stem}.qgs", text)
    return path


def prediction_layers(
    written: Mapping[str, Path],
    *,
    image: str | Path | None = None,
    image_bands: Sequence[int] | None = None,
    score_layers: str | Path | None = None,
) -> list[Layer]:
    """The layers of a prediction, top first: score errors, polygons, classes, clusters, image.

    ``written`` is what :func:`geoseg.predict.raster.predict` returns (role → path). The
    clusters are listed but hidden when a class raster is shown, so the class reads over the
    image; the score layers come from ``geoseg score --layers``.
    """
    from geoseg.vector.styles import SCORE_RGBA, vector_style

    layers: list[Layer] = []
    if score_layers is not None:
        for name in SCORE_RGBA:
            style = vector_style(rgba=SCORE_RGBA[name])
            layers.append(Layer(f"score {name}", Path(score_layers), "vector", style, name))
    roles = [r for r in written if ":" not in r and r not in ("clusters", "probabilities")]
    for role in roles:
        vector = written.get(f"{role}:vector")
        if vector is not None:
            vector = Path(vector)
            layers.append(Layer(f"{role} polygons", vector, "vector", qml(vector), vector.stem))
    for role in roles:
        layers.append(Layer(role, Path(written[role]), "raster", qml(Path(written[role]))))
    clusters = Path(written["clusters"])
    layers.append(Layer("clusters", clusters, "raster", qml(clusters), visible=not roles))
    if image is not None and image_bands is not None and len(image_bands) >= 3:
        layers.append(Layer("image", Path(image), "raster", image_style(image, image_bands[:3])))
    return layers


def _maplayer(layer: Layer, layer_id: str, source: str) -> ET.Element:
    element = ET.Element("maplayer", type=layer.kind)
    if layer.kind == "vector":
        element.set("geometry", "Polygon")
        element.set("wkbType", "MultiPolygon")
    ET.SubElement(element, "id").text = layer_id
    ET.SubElement(element, "datasource").text = source
    ET.SubElement(element, "layername").text = layer.name
    srs = ET.SubElement(element, "srs")
    _srs(srs, _crs_wkt(layer))
    provider = ET.SubElement(element, "provider", encoding="UTF-8")
    provider.text = "gdal" if layer.kind == "raster" else "ogr"
    if layer.style is not None:
        for child in layer.style:  # the style's elements sit directly in <maplayer>
            element.append(child)
    return element


def _source(layer: Layer, folder: Path) -> str:
    """The data source relative to the project folder (``./x.tif``), GeoPackage layer added."""
    target = layer.path.resolve()
    try:
        relative = os.path.relpath(target, folder)
        source = relative if relative.startswith("..") else f"./{relative}"
    except ValueError:  # another drive (Windows): only an absolute path can reach it
        source = str(target)
    return f"{source}|layername={layer.layer}" if layer.layer else source


def _crs_wkt(layer: Layer) -> str:
    if layer.kind == "raster":
        with rasterio.open(layer.path) as src:
            return src.crs.to_wkt() if src.crs else ""
    import pyogrio

    info = pyogrio.read_info(layer.path, layer=layer.layer)
    return info.get("crs") or ""


def _srs(parent: ET.Element, wkt: str) -> None:
    from pyproj import CRS

    system = ET.SubElement(parent, "spatialrefsys", nativeFormat="Wkt")
    if not wkt:
        return
    crs = CRS.from_user_input(wkt)
    ET.SubElement(system, "wkt").text = crs.to_wkt()
    authority = crs.to_authority()
    if authority:
        ET.SubElement(system, "authid").text = ":".join(authority)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def write_prediction_project(
    written: Mapping[str, Path],
    image: str | Path,
    *,
    score_layers: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``<stem>.qgz`` beside predict's outputs: image, clusters, classes, polygons, score.

    The image is drawn in its red, green and blue bands when they can be named (else its first
    three); a one- or two-band image is left out of the project rather than drawn wrongly.
    """
    from geoseg.io.bands import resolve_bands

    clusters = Path(written["clusters"])
    with rasterio.open(image) as src:
        try:
            bands = resolve_bands(src, "red,green,blue")
        except Exception:  # unnamed bands: the first three, as QGIS would
            bands = [1, 2, 3] if src.count >= 3 else None
    layers = prediction_layers(written, image=image, image_bands=bands, score_layers=score_layers)
    path = clusters.with_name(clusters.name.replace("_clusters.tif", ".qgz"))
    return write_project(path, layers, overwrite=overwrite)
