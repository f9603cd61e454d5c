"""Building truth for the leave-scene-out benchmark: one reader for any TRUTH, and the tile draw.

Whatever the truth is — polygons in any vector format and CRS, or a mask raster on any grid —
it becomes two things on the image's own pixel grid:

- ``mask``: uint8 (H, W), 1 = building, 0 = not building, 255 = unknown (a nodata other than 0
  declared on a mask, or outside the mask raster); and
- ``polygons``: building polygons in the image's CRS, clipped to the image footprint, written
  to a GeoPackage that :func:`geoseg.evaluate.score` reads.

A nodata of 0 declared on a {0, 1} mask (the Quebec tiles) is ignored: 0 is the background
there, not a hole. A non-georeferenced image (PNG, or any raster without a CRS) is staged as a
GeoTIFF on a stand-in metric grid of 1 unit per pixel (EPSG:32632, origin 500000 E 5000000 N),
so areas are in px² and every geoseg function works unchanged; its truth must then be a mask of
the same size, or polygons in pixel coordinates (x = column, y = row) without a CRS.

Errors in the inputs raise :class:`BadTruth` / :class:`BadImage` (the CLI turns them into one
line naming the argument and exit 2).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("building_truth")

TILE = 64  # labelled tile edge, px
N_TILES = 16  # labelled tiles per draw
UNKNOWN = 255  # mask value of pixels whose truth is unknown
#: the stand-in grid of non-georeferenced images: 1 m per pixel, so m² == px²
PIXEL_CRS = "EPSG:32632"
PIXEL_ORIGIN = (500000.0, 5000000.0)


class BadArgument(ValueError):
    """A user input that cannot be used; ``param`` names the argument (exit 2)."""

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


@dataclasses.dataclass
class Scene:
    """An image staged for the benchmark, with its truth on the image grid.

    Attributes:
        image: the raster every geoseg function reads (the input, or a GeoTIFF copy of a
            non-georeferenced input).
        name: the scene name (the input's stem).
        georeferenced: False when the input had no CRS (areas then in px², not m²).
        pixel_size: square root of a pixel's area in m² at the image centre (1.0 px when
            not georeferenced).
        min_area: SpaceNet's 20 px² in the unit :func:`geoseg.evaluate.score` uses (m²).
        mask: truth on the image grid (1 building, 0 not, 255 unknown).
        valid: image pixels with data (the image's own nodata).
        truth_path: the clipped building polygons (GeoPackage, image CRS).
        n_truth: truth polygons (before the minimum area).
    """

    image: Path
    name: str
    georeferenced: bool
    pixel_size: float
    min_area: float
    mask: np.ndarray
    valid: np.ndarray
    truth_path: Path
    n_truth: int


# --- image -----------------------------------------------------------------------------------


def _open(path: Path, param: str):
    import rasterio
    from rasterio.errors import RasterioIOError

    if not Path(path).exists() and "://" not in str(path) and not str(path).startswith("/vsi"):
        raise BadArgument(f"{path} does not exist", param)
    try:
        return rasterio.open(path)
    except RasterioIOError as exc:
        raise BadArgument(f"{path} is not a readable raster ({exc})", param) from exc


def stage_image(image: Path, folder: Path) -> tuple[Path, bool]:
    """The raster to work on: ``image`` itself, or a GeoTIFF copy on the stand-in pixel grid."""
    import rasterio
    from rasterio.transform import from_origin

    with _open(image, "IMAGE") as src:
        if src.crs is not None:
            return Path(image), True
        profile, data = src.profile, src.read()
        descriptions = src.descriptions
    out = folder / f"{Path(image).stem}.tif"
    profile.update(driver="GTiff", crs=PIXEL_CRS, transform=from_origin(*PIXEL_ORIGIN, 1.0, 1.0))
    for key in ("blockxsize", "blockysize", "tiled", "compress", "interleave", "photometric"):
        profile.pop(key, None)
    tmp = out.with_suffix(".tmp.tif")
    with rasterio.open(tmp, "w", **profile) as dst:
        dst.write(data)
        for band, text in enumerate(descriptions, start=1):
            if text:
                dst.set_band_description(band, text)
    tmp.replace(out)
    return out, False


def pixel_size_m(image: Path) -> float:
    """Square root of the area of the centre pixel in m² (measured in UTM when geographic)."""
    import geopandas as gpd
    import rasterio
    from rasterio.transform import xy
    from shapely.geometry import box

    with rasterio.open(image) as src:
        t, crs = src.transform, src.crs
        x, y = xy(t, src.height // 2, src.width // 2, offset="ul")
    pixel = gpd.GeoSeries([box(x, y + t.e, x + t.a, y).normalize()], crs=crs)
    if crs.is_geographic:
        pixel = pixel.to_crs(pixel.estimate_utm_crs())
    return float(np.sqrt(pixel.area.iloc[0]))


def valid_pixels(image: Path, bands: list[int]) -> np.ndarray:
    """Pixels with data: not every selected band equal to the declared nodata (geoseg's rule).

    Read in strips of rows, so a large multiband scene never sits in memory whole.
    """
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(image) as src:
        valid = np.ones((src.height, src.width), bool)
        if src.nodata is None:
            return valid
        step = max(1, 2**24 // max(1, src.width * len(bands)))
        for row in range(0, src.height, step):
            h = min(step, src.height - row)
            data = src.read(bands, window=Window(0, row, src.width, h))
            valid[row : row + h] = ~np.all(data == src.nodata, axis=0)
        return valid


# --- truth -----------------------------------------------------------------------------------


def parse_filter(text: str | None) -> tuple[str, str] | None:
    """``COL=VAL`` → (column, value); None when not given."""
    if text is None:
        return None
    col, sep, val = text.partition("=")
    if not sep or not col.strip():
        raise BadArgument(f"{text!r} is not COL=VAL (e.g. Niveau_2=Building)", "--truth-filter")
    return col.strip(), val.strip()


def _matches(series, value: str):
    """Rows of ``series`` equal to ``value``: numerically when both are numbers, else as text."""
    import pandas as pd

    try:
        number = float(value)
        numeric = pd.to_numeric(series, errors="coerce")
        if numeric.notna().any():
            return (numeric == number).to_numpy()
    except ValueError:
        pass
    return (series.astype(str).str.strip() == value).to_numpy()


def is_raster(path: Path) -> bool:
    """True for a file GDAL opens as a raster (masks); vector files are read with pyogrio."""
    import rasterio
    from rasterio.errors import RasterioIOError

    if Path(path).suffix.lower() in (
        ".geojson",
        ".json",
        ".gpkg",
        ".shp",
        ".fgb",
        ".parquet",
        ".kml",
        ".gml",
        ".csv",
        ".sqlite",
    ):
        return False
    try:
        with rasterio.open(path) as src:
            return src.count >= 1 and src.width > 0
    except RasterioIOError:
        return False


def mask_from_raster(truth: Path, image: Path, flt: tuple[str, str] | None, same_grid: bool):
    """A mask raster on the image grid: non-zero (or ``== VAL`` with a filter) is building.

    The declared nodata is honoured only when it is not 0: on a {0, 1} mask a nodata of 0 is the
    background (a common export default), never a hole. A different grid is resampled (nearest).
    """
    import rasterio
    from rasterio.warp import Resampling, reproject

    with rasterio.open(image) as img:
        shape, transform, crs = (img.height, img.width), img.transform, img.crs
    with _open(truth, "TRUTH") as src:
        if src.crs is None and not same_grid and (src.height, src.width) != shape:
            raise BadArgument(
                f"{truth} has no CRS and is not the size of IMAGE; give a georeferenced mask "
                "or polygons",
                "TRUTH",
            )
        if src.crs is None and not same_grid:
            log.warning("%s has no CRS; reading it on IMAGE's grid (same size)", truth)
        if src.crs is None or same_grid:
            if (src.height, src.width) != shape:
                raise BadArgument(
                    f"{truth} is {src.height}×{src.width} px but IMAGE is "
                    f"{shape[0]}×{shape[1]} px; give a mask on the image grid",
                    "TRUTH",
                )
            band = src.read(1)
            inside = np.ones(shape, bool)
        else:
            band = np.zeros(shape, src.dtypes[0])
            inside = np.zeros(shape, np.uint8)
            reproject(
                src.read(1),
                band,
                src_transform=src.transform,
                src_crs=src.crs,
                dst_transform=transform,
                dst_crs=crs,
                resampling=Resampling.nearest,
            )
            reproject(
                np.ones(src.shape, np.uint8),
                inside,
                src_transform=src.transform,
                src_crs=src.crs,
                dst_transform=transform,
                dst_crs=crs,
                resampling=Resampling.nearest,
            )
            inside = inside.astype(bool)
        nodata = src.nodata
    unknown = ~inside
    if nodata is not None and nodata != 0 and not np.isnan(nodata):
        unknown |= band == nodata
    if flt is not None:
        try:
            value = float(flt[1])
        except ValueError as exc:
            raise BadArgument(
                f"a mask raster is filtered by a pixel value (value=2), not {flt[1]!r}",
                "--truth-filter",
            ) from exc
        building = band == value
    else:
        building = band != 0
    mask = np.where(unknown, UNKNOWN, building.astype(np.uint8)).astype(np.uint8)
    return mask


def polygons_from_mask(mask: np.ndarray, image: Path):
    """Building polygons of a mask (4-connected components), in the image's CRS."""
    import geopandas as gpd
    import rasterio
    from rasterio.features import shapes
    from shapely.geometry import shape

    with rasterio.open(image) as src:
        transform, crs = src.transform, src.crs
    building = (mask == 1).astype(np.uint8)
    geoms = [
        shape(g)
        for g, v in shapes(building, mask=building.astype(bool), transform=transform)
        if v == 1
    ]
    return gpd.GeoDataFrame({"building": np.ones(len(geoms), int)}, geometry=geoms, crs=crs)


def polygons_from_vector(truth: Path, image: Path, flt, georeferenced: bool):
    """Building polygons of a vector file: filtered, in the image's CRS, clipped to it."""
    import geopandas as gpd
    import rasterio
    import shapely
    from shapely.affinity import affine_transform
    from shapely.geometry import box

    try:
        gdf = gpd.read_file(truth)
    except Exception as exc:  # pyogrio raises several types for unreadable files
        raise BadArgument(
            f"{truth} is neither a raster nor a readable vector file ({exc})", "TRUTH"
        ) from exc
    if flt is not None:
        col, val = flt
        if col not in gdf.columns:
            cols = ", ".join(c for c in gdf.columns if c != "geometry") or "none"
            raise BadArgument(f"{truth} has no column {col!r} (columns: {cols})", "--truth-filter")
        keep = _matches(gdf[col], val)
        if not keep.any():
            values = ", ".join(sorted({str(v) for v in gdf[col].unique()})[:12])
            raise BadArgument(
                f"no feature of {truth} has {col}={val} (values: {values})", "--truth-filter"
            )
        gdf = gdf[keep]
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]
    gdf = gdf[gdf.geom_type.isin(["Polygon", "MultiPolygon"])]
    with rasterio.open(image) as src:
        crs, bounds, t = src.crs, src.bounds, src.transform
        size = src.width, src.height
    if not georeferenced:
        # pixel coordinates (x = column, y = row); GeoJSON readers report EPSG:4326 for any file
        x0, y0, x1, y1 = gdf.total_bounds if len(gdf) else (0, 0, 0, 0)
        in_pixels = x0 >= -1 and y0 >= -1 and x1 <= size[0] + 1 and y1 <= size[1] + 1
        if gdf.crs is not None and not (gdf.crs.to_epsg() == 4326 and in_pixels):
            raise BadArgument(
                f"{truth} has a CRS but IMAGE is not georeferenced; give polygons in pixel "
                "coordinates (x = column, y = row) or a mask",
                "TRUTH",
            )
        matrix = [t.a, t.b, t.d, t.e, t.c, t.f]  # onto the stand-in grid of the staged image
        gdf = gdf.set_geometry([affine_transform(g, matrix) for g in gdf.geometry], crs=crs)
    elif gdf.crs is None:
        log.warning("%s has no CRS; assuming the image's (%s)", truth, crs)
        gdf = gdf.set_crs(crs)
    else:
        gdf = gdf.to_crs(crs)
    geoms = shapely.make_valid(shapely.force_2d(gdf.geometry.values.to_numpy()))
    geoms = shapely.intersection(geoms, box(*bounds))
    # keep the polygonal part of each clipped geometry (clipping can leave lines and points)
    polys = []
    for g in geoms:
        if g.geom_type == "GeometryCollection":
            g = shapely.union_all(
                [p for p in g.geoms if p.geom_type in ("Polygon", "MultiPolygon")]
            )
        if not g.is_empty and g.geom_type in ("Polygon", "MultiPolygon") and g.area > 0:
            polys.append(g)
    return gpd.GeoDataFrame({"building": np.ones(len(polys), int)}, geometry=polys, crs=crs)


def rasterize_polygons(gdf, image: Path) -> np.ndarray:
    """Building mask of polygons on the image grid (pixel centres inside)."""
    import rasterio
    from rasterio.features import rasterize

    with rasterio.open(image) as src:
        shape, transform = (src.height, src.width), src.transform
    if not len(gdf):
        return np.zeros(shape, np.uint8)
    return rasterize(
        ((g, 1) for g in gdf.geometry), out_shape=shape, transform=transform, dtype="uint8"
    )


def read_truth(truth: Path, image: Path, flt, *, georeferenced: bool, raw_image: Path):
    """``(mask, polygons)`` of TRUTH on the grid of the staged ``image`` (see the module doc)."""
    if "://" not in str(truth) and not Path(truth).exists():
        raise BadArgument(f"{truth} does not exist", "TRUTH")
    if is_raster(truth):
        mask = mask_from_raster(truth, image, flt, same_grid=not georeferenced)
        gdf = polygons_from_mask(mask, image)
    else:
        gdf = polygons_from_vector(truth, image, flt, georeferenced)
        mask = rasterize_polygons(gdf, image)
    return mask, gdf


def stage(image: Path, truth: Path, folder: Path, *, bands: list[int], flt=None) -> Scene:
    """Stage IMAGE and TRUTH into ``folder`` (``inputs/``); see :class:`Scene`."""
    import rasterio

    folder = Path(folder) / "inputs"
    folder.mkdir(parents=True, exist_ok=True)
    staged, georef = stage_image(image, folder)
    mask, gdf = read_truth(truth, staged, flt, georeferenced=georef, raw_image=image)
    if not (mask == 1).any():
        raise BadArgument(f"{truth} holds no building inside IMAGE's footprint", "TRUTH")
    truth_path = folder / "truth_buildings.gpkg"
    tmp = folder / "truth_buildings.tmp.gpkg"
    tmp.unlink(missing_ok=True)
    gdf.to_file(tmp, driver="GPKG", layer="truth_buildings")
    tmp.replace(truth_path)
    with rasterio.open(staged) as src:
        profile = dict(
            driver="GTiff",
            width=src.width,
            height=src.height,
            count=1,
            dtype="uint8",
            crs=src.crs,
            transform=src.transform,
            nodata=UNKNOWN,
            compress="deflate",
        )
    with rasterio.open(folder / "truth_mask.tif", "w", **profile) as dst:
        dst.write(mask, 1)
    size = pixel_size_m(staged) if georef else 1.0
    return Scene(
        image=staged,
        name=Path(image).stem,
        georeferenced=georef,
        pixel_size=size,
        min_area=20.0 * size * size,
        mask=mask,
        valid=valid_pixels(staged, bands),
        truth_path=truth_path,
        n_truth=len(gdf),
    )


# --- the tile draw ---------------------------------------------------------------------------


def candidate_tiles(mask: np.ndarray, tile: int = TILE) -> list[tuple[int, int]]:
    """Top-left (row, col) of the full ``tile``² tiles of the grid anchored at (0, 0) that hold
    at least one building pixel, in raster order."""
    h, w = mask.shape
    out = []
    for r in range(0, h - tile + 1, tile):
        for c in range(0, w - tile + 1, tile):
            if (mask[r : r + tile, c : c + tile] == 1).any():
                out.append((r, c))
    return out


def draw_tiles(mask: np.ndarray, seed: int, n: int = N_TILES, tile: int = TILE):
    """``n`` candidate tiles drawn without replacement with ``numpy.random.default_rng(seed)``
    (all of them when there are fewer), in raster order."""
    cands = candidate_tiles(mask, tile)
    if len(cands) <= n:
        return cands
    picked = np.random.default_rng(seed).choice(len(cands), n, replace=False)
    return [cands[i] for i in sorted(picked)]


def label_raster(mask: np.ndarray, tiles, image: Path, path: Path, tile: int = TILE) -> Path:
    """The draw as a label raster on the image grid: 0 unlabelled (outside the tiles or truth
    unknown), 1 background, 2 building inside the tiles."""
    import rasterio

    labels = np.zeros(mask.shape, np.uint8)
    for r, c in tiles:
        part = mask[r : r + tile, c : c + tile]
        labels[r : r + tile, c : c + tile] = np.where(part == UNKNOWN, 0, part + 1)
    with rasterio.open(image) as src:
        profile = dict(
            driver="GTiff",
            width=src.width,
            height=src.height,
            count=1,
            dtype="uint8",
            crs=src.crs,
            transform=src.transform,
            compress="deflate",
        )
    tmp = path.with_suffix(".tmp.tif")
    with rasterio.open(tmp, "w", **profile) as dst:
        dst.write(labels, 1)
    tmp.replace(path)
    return path


def pixel_iou(pred: np.ndarray, scene: Scene) -> dict[str, Any]:
    """Building IoU of a 0/1 prediction against the truth mask over pixels with data and known
    truth (the whole image, not only the labelled tiles)."""
    region = scene.valid & (scene.mask != UNKNOWN)
    p, t = (pred == 1) & region, (scene.mask == 1) & region
    union = int((p | t).sum())
    return {
        "iou": float((p & t).sum() / union) if union else 0.0,
        "pixels_pred": int(p.sum()),
        "pixels_true": int(t.sum()),
    }
