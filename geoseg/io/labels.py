"""Label sources aligned to a prediction grid: label rasters, colour-coded label images, PNGs,
and vector polygons rasterised window by window.

``evaluate`` and ``fit_mapping`` both need "the labels of exactly these pixels"; this module
answers that for any window of the target grid, so neither ever holds a whole scene.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geoseg.errors import BadInput
from geoseg.io.rasters import open_raster
from geoseg.paths import check_input

log = logging.getLogger(__name__)

#: ISPRS 2D labelling benchmark: label value → name, and the colour code of its label images
ISPRS_NAMES = {
    1: "impervious",
    2: "building",
    3: "low_vegetation",
    4: "tree",
    5: "car",
    6: "clutter",
}
ISPRS_COLOURS = {
    (255, 255, 255): 1,
    (0, 0, 255): 2,
    (0, 255, 255): 3,
    (0, 255, 0): 4,
    (255, 255, 0): 5,
    (255, 0, 0): 6,
}
#: ISPRS class name → label value (the tile store's ``label_classes``)
ISPRS_CLASSES = {name: value for value, name in ISPRS_NAMES.items()}

#: file suffixes read as vector labels / polygons (everything else is read as a raster)
VECTOR_SUFFIXES = (".geojson", ".json", ".gpkg", ".fgb", ".shp", ".parquet", ".geoparquet")


def is_building_mask(values: set[int]) -> bool:
    """A single-band label raster holding only 0 and 255 is a building mask: 255 = building.

    The one rule for such masks (Inria, Massachusetts, most building datasets), shared by tile,
    evaluate and map so a mask means "building" everywhere, never a class called 255.
    """
    return values <= {0, 255}


def raster_values(src) -> set[int]:
    """The distinct values of band 1 of an open raster, block by block (bounded memory)."""
    values: set[int] = set()
    for _, window in src.block_windows(1):
        values.update(int(v) for v in np.unique(src.read(1, window=window)))
    return values


def raster_classes(path: str | Path) -> dict[str, int]:
    """Class name → value of a label raster: ISPRS colours, a building mask, or its values."""
    from geoseg.io.rasters import open_raster

    with open_raster(path, param="--labels") as src:
        if src.count >= 3:
            return dict(ISPRS_CLASSES)
        values = raster_values(src)
    if is_building_mask(values):
        return {"building": 1}
    if max(values) > 255 or min(values) < 0:
        raise BadInput(f"{path} has label values outside 0..255", param="--labels")
    return {str(v): v for v in sorted(values) if v > 0}


def decode_colours(rgb: np.ndarray, colours: Mapping[tuple[int, int, int], int]) -> np.ndarray:
    """Colour-coded label image (3, H, W) → label values (H, W); unknown colours become 0."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[0] < 3:
        raise ValueError("colour-coded labels need 3 bands (R, G, B)")
    key = (rgb[0].astype(np.int64) << 16) | (rgb[1].astype(np.int64) << 8) | rgb[2]
    out = np.zeros(key.shape, np.uint8)
    for (r, g, b), value in colours.items():
        out[key == (r << 16 | g << 8 | b)] = value
    return out


def parse_names(text: str | None, *, param: str = "--names") -> dict[int, str]:
    """Parse ``1=building,2=road,3=tree`` into ``{1: "building", ...}`` (values 1..255).

    ``isprs`` names the six ISPRS benchmark classes (1 impervious ... 6 clutter).
    """
    if not text:
        return {}
    if text.strip().lower() == "isprs":
        return dict(ISPRS_NAMES)
    names: dict[int, str] = {}
    for item in text.split(","):
        value, sep, name = item.partition("=")
        try:
            number = int(value)
        except ValueError:
            number = -1
        if not sep or not name.strip() or not 1 <= number <= 255:
            raise BadInput(
                f"{item!r} is not VALUE=NAME with VALUE in 1..255 (e.g. 1=building,2=road)",
                param=param,
            )
        names[number] = name.strip()
    if len(set(names.values())) != len(names):
        raise BadInput("class names must be distinct", param=param)
    return names


@dataclass(frozen=True)
class Grid:
    """The pixel grid labels are read onto (CRS None for a non-georeferenced image)."""

    width: int
    height: int
    crs: object = None
    transform: object = None

    @classmethod
    def of(cls, dataset) -> Grid:
        georef = dataset.crs is not None
        return cls(
            dataset.width,
            dataset.height,
            dataset.crs if georef else None,
            dataset.transform if georef else None,
        )


class LabelSource:
    """Labels of any window of a target :class:`Grid` (0 = unlabelled), plus class names.

    Args:
        path: label raster (GeoTIFF, PNG; 1 band of values or 3 bands ISPRS colours) or vector
            file (polygons burnt with ``column``'s integer values, or 1 without a column; a
            text column holds class names, numbered 1..n in sorted order).
        grid: the prediction grid.
        column: attribute holding the class value of each polygon.
        fill: value of pixels outside every polygon (0 = unlabelled).
        names: value → name overrides.
    """

    def __init__(self, path, grid: Grid, *, column=None, fill=0, names=None, param="LABELS"):
        self.path, self.grid, self.fill, self.param = Path(path), grid, int(fill), param
        self._stack = ExitStack()
        self.names: dict[int, str] = {}
        self._colours = False
        if self.path.suffix.lower() in VECTOR_SUFFIXES:
            self._open_vector(column)
        else:
            self._open_raster()
        if self.fill and self.fill not in self.names:
            self.names[self.fill] = "background"
        self.names.update(names or {})

    def _open_vector(self, column):
        import geopandas as gpd
        import shapely

        check_input(self.path, param=self.param)
        if self.grid.crs is None:
            raise BadInput("vector labels need a georeferenced prediction raster", param=self.param)
        frame = gpd.read_file(self.path)
        if frame.crs is None:
            raise BadInput(
                f"{self.path.name} has no CRS; set it (e.g. ogr2ogr -a_srs)", param=self.param
            )
        frame = frame[~frame.geometry.is_empty & frame.geometry.notna()].to_crs(self.grid.crs)
        if column is None:
            values = np.ones(len(frame), np.uint8)
            self.names = {1: "building"}
        elif column not in frame.columns:
            cols = ", ".join(c for c in frame.columns if c != "geometry")
            raise BadInput(
                f"{self.path.name} has no column {column!r}; columns: {cols}", param="--column"
            )
        else:
            values = np.asarray(frame[column])
            if not np.issubdtype(values.dtype, np.number):
                # class names in the column: values 1..n in name order, the names kept
                classes = sorted({str(v) for v in values})
                if len(classes) > 254:
                    raise BadInput(
                        f"column {column!r} holds {len(classes)} names; at most 254",
                        param="--column",
                    )
                self.names = {i: name for i, name in enumerate(classes, start=1)}
                values = np.searchsorted(classes, values.astype(str)) + 1
            values = values.astype(np.int64)
            if values.min(initial=1) < 1 or values.max(initial=1) > 255:
                raise BadInput(f"column {column!r} values must be within 1..255", param="--column")
        self._geoms = shapely.make_valid(frame.geometry.values.to_numpy())
        self._values = values.astype(np.uint8)
        self._tree = shapely.STRtree(self._geoms)
        self._vector = True

    def _open_raster(self):
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT

        self._vector = False
        src = self._stack.enter_context(open_raster(self.path, param=self.param))
        self._nodata = src.nodata
        self._colours = src.count >= 3
        self._mask = not self._colours and is_building_mask(raster_values(src))
        if self._colours:
            self.names = dict(ISPRS_NAMES)
        elif self._mask:
            self.names = {1: "building"}
        georef = src.crs is not None and self.grid.crs is not None
        same = (src.width, src.height) == (self.grid.width, self.grid.height)
        if georef and not (
            same and src.crs == self.grid.crs and src.transform.almost_equals(self.grid.transform)
        ):
            src = self._stack.enter_context(
                WarpedVRT(
                    src,
                    crs=self.grid.crs,
                    transform=self.grid.transform,
                    width=self.grid.width,
                    height=self.grid.height,
                    resampling=Resampling.nearest,
                    nodata=src.nodata or 0,
                )
            )
            log.info("labels reprojected onto the prediction grid (nearest)")
        elif not georef and not same:
            raise BadInput(
                f"{self.path.name} is {src.width}x{src.height} but the prediction is "
                f"{self.grid.width}x{self.grid.height}; without georeferencing they must match",
                param=self.param,
            )
        self._src = src

    def read(self, window) -> np.ndarray:
        """Labels (H, W) uint8 of ``window`` (a rasterio Window) of the grid; 0 = unlabelled."""
        if self._vector:
            return self._rasterize(window)
        if self._colours:
            return decode_colours(self._src.read((1, 2, 3), window=window), ISPRS_COLOURS)
        data = self._src.read(1, window=window)
        if self._mask:
            return (data == 255).astype(np.uint8)
        out = data.astype(np.int64)
        if self._nodata is not None:
            out[data == self._nodata] = 0
        if out.max(initial=0) > 255 or out.min(initial=0) < 0:
            raise BadInput(
                f"{self.path.name} holds values outside 0..255; labels are class ids",
                param=self.param,
            )
        return out.astype(np.uint8)

    def _rasterize(self, window) -> np.ndarray:
        import shapely
        from rasterio.features import rasterize
        from rasterio.windows import bounds, transform

        shape = (int(window.height), int(window.width))
        hits = self._tree.query(shapely.box(*bounds(window, self.grid.transform)))
        if not len(hits):
            return np.full(shape, self.fill, np.uint8)
        return rasterize(
            zip(self._geoms[np.sort(hits)], self._values[np.sort(hits)], strict=True),
            out_shape=shape,
            transform=transform(window, self.grid.transform),
            fill=self.fill,
            dtype="uint8",
        )

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> LabelSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
