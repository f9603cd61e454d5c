"""``geoseg report DIR``: one self-contained HTML page of a run or an output folder.

Everything is embedded (PNG panels and SVG charts as base64 ``data:`` URIs, CSS inline), so
the page can be mailed, attached to a ticket or opened offline, and still show everything.
"""

from __future__ import annotations

import base64
import datetime
import json
import logging
import math
from html import escape
from pathlib import Path

from geoseg.report.contents import Contents, find_contents
from geoseg.report.panels import (
    Grid,
    Panel,
    bounds_grid,
    class_image,
    display_grid,
    png_bytes,
    rgb_image,
    with_scale_bar,
)

log = logging.getLogger(__name__)

CSS = """
body { font-family: sans-serif; margin: 24px; color: #222; max-width: 1500px; }
h1 { font-size: 22px; } h2 { font-size: 18px; border-bottom: 1px solid #ccc; }
.panels { display: flex; flex-wrap: wrap; gap: 18px; }
figure { margin: 0; border: 1px solid #ddd; padding: 8px; background: #fafafa; }
figcaption { font-size: 13px; margin-top: 6px; max-width: 720px; }
figure h3 { font-size: 14px; margin: 0 0 6px 0; }
.legend span.swatch { display: inline-block; width: 14px; height: 14px; margin: 0 4px -2px 10px;
  border: 1px solid #555; }
table { border-collapse: collapse; font-size: 14px; }
td, th { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
td:first-child, th:first-child { text-align: left; }
.muted { color: #666; font-size: 13px; }
"""


def report(
    directory: str | Path,
    output: str | Path | None = None,
    *,
    image: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Write an HTML report of a run folder, an output folder, or the demo's folder.

    Args:
        directory: folder written by ``geoseg train``, ``predict``, ``score --layers`` or
            ``demo``.
        output: the HTML file (default ``DIR/report.html``).
        image: source image to draw under classes and errors (default: the image the
            folder's tile store was made from, when there is one).
        overwrite: replace an existing report.

    Returns:
        The written HTML path.
    """
    from geoseg.paths import atomic_output, check_input, check_output

    contents = find_contents(directory)
    output = Path(output) if output else contents.root / "report.html"
    check_output(output, overwrite=overwrite, param="--output")
    image_path, rgb_bands = _image_source(contents, image)
    sections = [_header(contents)]
    grid = _reference_grid(contents, image_path)
    background = None
    if grid is not None and image_path is not None:
        background = rgb_image(check_input(image_path, param="--image"), grid, rgb_bands)
    sections.append(_score_section(contents, grid, background))
    sections.append(_map_section(contents, grid, background, image_path))
    sections.append(_training_section(contents))
    sections.append(_files_section(contents))
    html = _document(contents.root, "\n".join(s for s in sections if s))
    with atomic_output(output, overwrite=overwrite, param="--output") as tmp:
        tmp.write_text(html, encoding="utf-8")
    return output


def _image_source(contents: Contents, image) -> tuple[Path | None, list[int]]:
    """The source image and its red/green/blue band indices.

    Without ``image``, a tile store in the folder says which image it was cut from and which
    bands were red, green and blue (``sources`` / ``bands`` / ``band_names`` attributes).
    """
    if image is not None:
        import rasterio

        from geoseg.io.bands import resolve_bands

        with rasterio.open(image) as src:
            try:
                return Path(image), resolve_bands(src, "red,green,blue")
            except Exception:  # unnamed bands: the first three (or one grey band thrice)
                return Path(image), [min(i, src.count) for i in (1, 2, 3)]
    for meta in sorted(contents.root.glob("*.zarr/zarr.json")):
        attrs = json.loads(meta.read_text()).get("attributes", {})
        names, bands = attrs.get("band_names", []), attrs.get("bands", [])
        sources = attrs.get("sources", [])
        path = Path(sources[0]["path"]) if len(sources) == 1 and "path" in sources[0] else None
        if path is None or not path.exists():
            continue
        picked = [bands[names.index(n)] for n in ("red", "green", "blue") if n in names]
        if len(picked) < 3:  # no red/green/blue names: the first three bands
            picked = [bands[min(i, len(bands) - 1)] for i in range(3)]
        return path, picked
    for project in sorted(contents.root.glob("*.qgz")):
        found = _project_image(project)
        if found is not None:
            return found
    return None, []


def _project_image(project: Path) -> tuple[Path, list[int]] | None:
    """The "image" layer of a geoseg QGIS project (``predict --qgis-project``), if any."""
    import xml.etree.ElementTree as ET
    import zipfile

    try:
        with zipfile.ZipFile(project) as archive:
            name = next(n for n in archive.namelist() if n.endswith(".qgs"))
            root = ET.fromstring(archive.read(name))
    except (zipfile.BadZipFile, StopIteration, ET.ParseError):
        return None
    for layer in root.iter("maplayer"):
        renderer = layer.find("pipe/rasterrenderer")
        if layer.findtext("layername") != "image" or renderer is None:
            continue
        path = (project.parent / layer.findtext("datasource", "")).resolve()
        bands = [int(renderer.get(f"{c}Band", 0)) for c in ("red", "green", "blue")]
        if path.exists() and all(bands):
            return path, bands
    return None


def _reference_grid(contents: Contents, image: Path | None) -> Grid | None:
    if contents.clusters:
        return display_grid(contents.clusters[0])
    if image is not None:
        return display_grid(image)
    if contents.score_layers is not None:
        return _layers_grid(contents.score_layers)
    return None


def _layers_grid(layers: Path) -> Grid:
    """A display grid over the score layers' extent when no raster is at hand."""
    import geopandas as gpd
    import pandas as pd

    frames = [gpd.read_file(layers, layer=name) for name in ("tp", "fp", "fn")]
    crs = next((f.crs for f in frames if f.crs is not None), None)
    return bounds_grid(pd.concat(frames).total_bounds, crs)


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _figure(panel: Panel) -> str:
    legend = "".join(
        f'<span class="swatch" style="background:{colour}"></span>{escape(label)}'
        for colour, label in panel.legend
    )
    return (
        f"<figure><h3>{escape(panel.title)}</h3>"
        f'<img alt="{escape(panel.title)}" src="{_data_uri(panel.png, "image/png")}">'
        f'<figcaption><div class="legend">{legend}</div>'
        f'<div class="muted">{escape(panel.caption)}</div></figcaption></figure>'
    )


def _header(contents: Contents) -> str:
    from geoseg import __version__

    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return (
        f"<h1>geoseg report: {escape(contents.root.resolve().name)}</h1>"
        f'<p class="muted">{escape(str(contents.root.resolve()))} · written {when} · '
        f"geoseg {__version__}</p>"
    )


def _score_section(contents: Contents, grid: Grid | None, background) -> str:
    from geoseg.report.errormap import error_map, score_summary

    total = score_summary(contents.score_layers, contents.score_json)
    if total is None:
        return ""
    rule = ""
    if "iou_threshold" in total:
        rule = f"IoU &gt; {total['iou_threshold']}, min area {total['min_area']} " + escape(
            str(total.get("area_unit", ""))
        )
    rows = "".join(
        f"<td>{total[k]:.4f}</td>" if isinstance(total[k], float) else f"<td>{total[k]}</td>"
        for k in ("tp", "fp", "fn", "precision", "recall", "f1")
    )
    parts = [
        "<h2>Score (SpaceNet building F1)</h2>",
        "<table><tr><th>TP</th><th>FP</th><th>FN</th><th>precision</th><th>recall</th>"
        f"<th>F1</th></tr><tr>{rows}</tr></table>",
        f'<p class="muted">{rule}{" · " if rule else ""}source: {escape(total["source"])}</p>',
    ]
    if contents.score_layers is not None and grid is not None:
        rgb, legend = error_map(contents.score_layers, grid, background)
        png = png_bytes(with_scale_bar(rgb, grid.metres_per_px))
        caption = f"outlines from {contents.score_layers.name}; open it in QGIS to inspect"
        figure = _figure(Panel("Error map", png, legend, caption))
        parts.append(f'<div class="panels">{figure}</div>')
    return "\n".join(parts)


def _map_section(contents: Contents, grid: Grid | None, background, image: Path | None) -> str:
    if grid is None:
        return ""
    figures = []
    scale = ""
    if math.isfinite(grid.metres_per_px):
        scale = f"1 px = {grid.metres_per_px:.2f} m east-west"
    if background is not None:
        png = png_bytes(with_scale_bar(background, grid.metres_per_px))
        figures.append(Panel("Image (red, green, blue)", png, [], f"{image.name}; {scale}"))
    for path in contents.clusters:
        rgb, legend = class_image(path, grid)
        png = png_bytes(with_scale_bar(rgb, grid.metres_per_px))
        figures.append(Panel(f"Clusters: {path.name}", png, legend, scale))
    for path, stem in zip(contents.classes, contents.class_names, strict=True):
        # class rasters are 0/1: only the class is drawn, over the image
        rgb, legend = class_image(path, grid, background=background, only={1: stem})
        png = png_bytes(with_scale_bar(rgb, grid.metres_per_px))
        figures.append(Panel(f"Class: {path.name}", png, legend, scale))
    if not figures:
        return ""
    return "<h2>Maps</h2>" + '<div class="panels">' + "".join(map(_figure, figures)) + "</div>"


def _training_section(contents: Contents) -> str:
    from geoseg.report.curves import training_charts

    parts = []
    if contents.metrics is not None:
        for title, svg in training_charts(contents.metrics):
            uri = _data_uri(svg.encode("utf-8"), "image/svg+xml")
            parts.append(f'<figure><img alt="{escape(title)}" src="{uri}"></figure>')
    if contents.quicklook is not None:
        png = contents.quicklook.read_bytes()
        title = f"Quicklook {contents.quicklook.stem.replace('_', ' ')}"
        parts.append(_figure(Panel(title, png, [], "each row: image | clusters (main head)")))
    if not parts:
        return ""
    return "<h2>Training</h2>" + '<div class="panels">' + "".join(parts) + "</div>"


def _files_section(contents: Contents) -> str:
    import pyogrio

    rows = []
    for path in contents.polygons:
        try:
            count = sum(
                int(pyogrio.read_info(path, layer=str(name))["features"])
                for name, _ in pyogrio.list_layers(path)
            )
        except Exception:  # listed anyway; the count is a courtesy
            count = "?"
        rows.append((path, f"{count} polygons"))
    for path in (contents.checkpoint, contents.metrics, contents.score_layers):
        if path is not None:
            rows.append((path, f"{path.stat().st_size / 1e6:.2f} MB"))
    if not rows:
        return ""
    body = "".join(
        f"<tr><td>{escape(str(p.relative_to(contents.root)))}</td><td>{escape(what)}</td></tr>"
        for p, what in rows
    )
    return f"<h2>Files</h2><table>{body}</table>"


def _document(root: Path, body: str) -> str:
    title = escape(f"geoseg report: {root.resolve().name}")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{CSS}</style></head><body>\n{body}\n</body></html>\n"
    )
