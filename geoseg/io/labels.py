"""The one label reader, and the label rules it applies, for tile, evaluate, map and score.

Every stage needs "the labels of exactly these pixels" of some grid (a scene being tiled, a
prediction being scored); :class:`LabelReader` answers that for any window of the grid, so
none ever holds a whole scene, and all of them read a file the same way:

- a single-band raster of only 0 and 255 is a building mask: 255 = building = 1
  (:func:`is_building_mask`), never a class called 255;
- a three-band raster is an ISPRS colour code (:data:`ISPRS_COLOURS`); unknown colours are 0;
- other rasters hold class ids 0..255, their nodata is 0 = unlabelled;
- vector polygons are burnt window by window: those under the window's four-corner footprint
  (a rotated grid's window is not its two-corner box), reprojected to the grid, read once per
  full-width band of rows so a row of windows costs one read;
  a numeric column holds class ids, a text column class names (numbered 1..n in sorted
  order, or by the tile store's ``label_classes``), no column means every polygon is 1.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geoseg.errors import BadInput
from geoseg.io.rasters import open_raster, read_window
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


@functools.lru_cache(maxsize=64)
def _file_values(path: str, stamp: tuple) -> frozenset[int]:
    with open_raster(path, param="--labels") as src:
        return frozenset(raster_values(src))


def file_values(path: str | Path) -> frozenset[int]:
    """:func:`raster_values` of a label file, scanned once per file version: the tiler opens
    one reader per strip of a scene, and each must not rescan the whole label raster."""
    text = str(path)
    try:
        stat = Path(text).stat()
        stamp: tuple = (stat.st_mtime_ns, stat.st_size)
    except OSError:  # a URL or /vsi path: cached by name
        stamp = ()
    return _file_values(text, stamp)


def raster_classes(path: str | Path) -> dict[str, int]:
    """Class name → value of a label raster: ISPRS colours, a building mask, or its values."""
    with open_raster(path, param="--labels") as src:
        if src.count >= 3:
            return dict(ISPRS_CLASSES)
        nodata = src.nodata
    values = file_values(path)
    if is_building_mask(values):
        return {"building": 1}
    values = values - {nodata}  # nodata reads as 0 = unlabelled (LabelReader.read)
    if max(values, default=0) > 255 or min(values, default=0) < 0:
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


def is_vector(path: str | Path) -> bool:
    """Whether a labels path is read as vector polygons (else as a raster)."""
    return Path(str(path)).suffix.lower() in VECTOR_SUFFIXES


#: attribute names taken as a vector file's class column by :func:`class_column`
CLASS_COLUMNS = ("label", "class", "class_id", "classname", "category")


def class_column(path: str | Path) -> str | None:
    """The class column of a vector labels file (``label``, ``class``, ...), or ``None``.

    The tile store picks it automatically; evaluate and map take ``--column`` instead.
    """
    if not is_vector(path):
        return None
    import pyogrio

    lower = {c.lower(): c for c in pyogrio.read_info(str(path))["fields"]}
    return next((lower[c] for c in CLASS_COLUMNS if c in lower), None)


def _several_classes_column(path: str) -> str | None:
    """The class column (:func:`class_column`) of vector labels when it holds two or more
    classes, else ``None`` (every polygon is one class, named building).

    Without it, a labels file of buildings, roads and trees read with no ``--column`` burnt
    every polygon as building: a head fitted on it learnt roads and trees as buildings (Vegas:
    F1 0.33 instead of 0.82), silently. A column with one value (Massachusetts' ``class`` = 1
    on every footprint) keeps the one-class reading and its ``building`` name.
    """
    column = class_column(path)
    if column is None:
        return None
    import pyogrio

    values = pyogrio.read_dataframe(path, columns=[column], read_geometry=False)[column]
    found = {v for v in values.dropna().tolist() if v not in (0, "")}
    if len(found) < 2:
        return None
    log.info(
        "%s: classes from its column %r (%s); --column chooses another",
        Path(path).name,
        column,
        ", ".join(sorted(map(str, found))[:8]),
    )
    return column


def label_classes(paths: Sequence[str]) -> dict[str, int]:
    """Class name → id over labels files, as stored in the tile store's ``label_classes``.

    Vector labels take ids from a numeric class column (:func:`class_column`), number string
    classes 1..K in sorted order, or give every polygon 1. Three-band label rasters are ISPRS
    colour codes; a 0/255 mask is one class; other single-band rasters keep their values.
    """
    import pyogrio

    classes: dict[str, int] = {}
    names: set[str] = set()
    for path in paths:
        if is_vector(path):
            column = class_column(path)
            if column is None:
                stem = Path(path).stem.lower()
                classes["building" if "build" in stem else "foreground"] = 1
                continue
            values = pyogrio.read_dataframe(path, columns=[column], read_geometry=False)[column]
            if values.dtype.kind in "iuf":
                classes.update({str(int(v)): int(v) for v in values.dropna().unique() if v > 0})
            else:
                names.update(str(v) for v in values.dropna().unique())
            continue
        classes.update(raster_classes(path))
    classes.update({name: i for i, name in enumerate(sorted(names), start=1 + len(classes))})
    return classes


def _footprint(transform, shape: tuple[int, int]) -> tuple[float, float, float, float]:
    """The bounding box of a (rows, cols) window from all four corners: on a rotated grid two
    corners give a box that misses parts of the window (2.3 % of labelled pixels were dropped)."""
    corners = [transform * (c, r) for c in (0, shape[1]) for r in (0, shape[0])]
    xs, ys = zip(*corners, strict=True)
    return min(xs), min(ys), max(xs), max(ys)


@dataclass(frozen=True)
class Grid:
    """The pixel grid labels are read onto (CRS None for a non-georeferenced image)."""

    width: int
    height: int
    crs: object = None
    transform: object = None

    @classmethod
    def of(cls, dataset) -> Grid:
        """The grid of an open rasterio dataset (a non-georeferenced one keeps its pixel
        transform, so vector labels in pixel coordinates still land)."""
        return cls(dataset.width, dataset.height, dataset.crs, dataset.transform)


class LabelReader:
    """Labels of any window of a target :class:`Grid` (0 = unlabelled), plus class names.

    Args:
        path: label raster (GeoTIFF, PNG; 1 band of values or 3 bands ISPRS colours) or vector
            file (read window by window, reprojected to the grid's CRS).
        grid: the grid windows are read on (a scene being tiled, a prediction being scored).
        column: attribute holding each polygon's class (numbers, or names); ``None``: the
            file's class column if it holds several classes, else every polygon is 1
            (building). Ignored for rasters.
        classes: class name → id for a text ``column`` (the tile store's ``label_classes``);
            by default the column's names are numbered 1..n in sorted order.
        fill: value of pixels outside every polygon (0 = unlabelled).
        names: value → name overrides.
        reproject: a georeferenced label raster on another grid is warped onto this one
            (nearest); without it such a raster is refused, naming the mismatch.
        param: the argument named in errors.

    Raises:
        BadInput: a label raster off the grid, a vector file without CRS or without
            ``column``, or class values outside 1..255.
    """

    def __init__(
        self,
        path: str | Path,
        grid: Grid,
        *,
        column: str | None = None,
        classes: Mapping[str, int] | None = None,
        fill: int = 0,
        names: Mapping[int, str] | None = None,
        reproject: bool = False,
        param: str = "--labels",
    ):
        self.path, self.grid, self.fill, self.param = Path(str(path)), grid, int(fill), param
        self.text = str(path)  # URLs and /vsi paths stay as given
        self._stack = ExitStack()
        self.names: dict[int, str] = {}
        self._src = None
        if is_vector(self.text):
            self._open_vector(column, classes)
        else:
            self._open_raster(reproject)
        if self.fill and self.fill not in self.names:
            self.names[self.fill] = "background"
        self.names.update(names or {})

    # --- vector labels ------------------------------------------------------------------

    def _open_vector(self, column, classes):
        import pyogrio

        if "://" not in self.text and not self.text.startswith("/vsi"):
            check_input(self.path, param=self.param)
        info = pyogrio.read_info(self.text)
        self._vector_crs = info["crs"]
        if self._vector_crs is None and self.grid.crs is not None:
            raise BadInput(
                f"{self.path.name} has no CRS; set it (e.g. ogr2ogr -a_srs)", param=self.param
            )
        if self._vector_crs is not None and self.grid.crs is None:
            raise BadInput(
                "vector labels need a georeferenced image; give a GeoTIFF with a CRS",
                param=self.param,
            )
        if column is None:
            column = _several_classes_column(self.text)
        self._column = column
        self._classes: dict[str, int] = {}
        self._loaded = None  # (rows and columns of the band read, its polygons): see _band
        if column is None:
            self.names = {1: "building"}
            return
        if column not in info["fields"]:
            cols = ", ".join(info["fields"])
            raise BadInput(
                f"{self.path.name} has no column {column!r}; columns: {cols}", param="--column"
            )
        values = pyogrio.read_dataframe(self.text, columns=[column], read_geometry=False)[column]
        if values.dtype.kind in "iuf":
            numbers = values.dropna()  # 0 / empty: an unlabelled polygon, not burnt
            if len(numbers) and (numbers.min() < 0 or numbers.max() > 255):
                raise BadInput(
                    f"column {column!r} values must be class ids within 1..255 (0: unlabelled)",
                    param="--column",
                )
            return
        if classes is None:
            # class names in the column: values 1..n in name order, the names kept
            found = sorted({str(v) for v in values.dropna()})
            if len(found) > 254:
                raise BadInput(
                    f"column {column!r} holds {len(found)} names; at most 254", param="--column"
                )
            classes = {name: i for i, name in enumerate(found, start=1)}
        self._classes = dict(classes)
        self.names = {i: name for name, i in self._classes.items()}

    def _rasterize(self, window) -> np.ndarray:
        import shapely
        from rasterio.features import rasterize
        from rasterio.windows import transform

        shape = (int(window.height), int(window.width))
        t = transform(window, self.grid.transform)
        geoms, values, tree = self._band(window)
        hits = np.sort(tree.query(shapely.box(*_footprint(t, shape)))) if len(geoms) else []
        if not len(hits):
            return np.full(shape, self.fill, np.uint8)
        shapes = zip(geoms[hits], values[hits].tolist(), strict=True)  # file order kept
        return rasterize(shapes, out_shape=shape, transform=t, fill=self.fill, dtype="uint8")

    def _band(self, window):
        """The polygons of the band of grid rows ``window`` lies in, read once per band.

        Windows come row after row (a strip of tiles, a strip of a prediction, tiles in
        row-major order), so reading the full-width band of the window's rows serves every
        window of that row from one read, while memory stays bounded by one band's polygons.
        """
        import pyogrio
        import shapely
        from rasterio.warp import transform_bounds
        from rasterio.windows import Window, transform

        r0, r1 = int(window.row_off), int(window.row_off + window.height)
        c0 = min(0, int(window.col_off))
        c1 = max(self.grid.width, int(window.col_off + window.width))
        if self._loaded is not None:
            (b0, b1, bc0, bc1), loaded = self._loaded
            if b0 <= r0 and r1 <= b1 and bc0 <= c0 and c1 <= bc1:
                return loaded
        band = Window(c0, r0, c1 - c0, r1 - r0)
        shape = (int(band.height), int(band.width))
        box = _footprint(transform(band, self.grid.transform), shape)
        if self._vector_crs and self.grid.crs:
            box = transform_bounds(self.grid.crs, self._vector_crs, *box, densify_pts=21)
        columns = [self._column] if self._column else []
        frame = pyogrio.read_dataframe(self.text, bbox=box, columns=columns)
        if not frame.empty and frame.crs is not None and self.grid.crs is not None:
            frame = frame.to_crs(self.grid.crs)
        if self._column is None:
            values = np.ones(len(frame), np.int64)
        elif frame[self._column].dtype.kind in "iuf":
            values = frame[self._column].fillna(0).astype(np.int64).to_numpy()
        else:
            values = frame[self._column].map(lambda v: self._classes.get(str(v), 0)).to_numpy()
        geoms = frame.geometry.values.to_numpy() if len(frame) else np.empty(0, object)
        keep = ~shapely.is_missing(geoms) & ~shapely.is_empty(geoms) & (values > 0)
        geoms, values = geoms[keep], values[keep].astype(np.int64)
        loaded = (geoms, values, shapely.STRtree(geoms))
        self._loaded = ((r0, r1, c0, c1), loaded)
        return loaded

    # --- label rasters ------------------------------------------------------------------

    def _open_raster(self, reproject: bool):
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT

        src = self._stack.enter_context(open_raster(self.text, param=self.param))
        self._nodata = src.nodata
        self._colours = src.count >= 3
        self._mask = not self._colours and is_building_mask(file_values(self.text))
        if self._colours:
            self.names = dict(ISPRS_NAMES)
        elif self._mask:
            self.names = {1: "building"}
        georef = src.crs is not None and self.grid.crs is not None
        same_size = (src.width, src.height) == (self.grid.width, self.grid.height)
        what = self._mismatch(src)
        if what is None or (reproject and not georef and same_size):
            pass  # on the grid (or a non-georeferenced image of the same size)
        elif reproject and georef:
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
            log.info("labels reprojected onto the grid (nearest)")
        elif not same_size:
            self.close()
            rule = (
                "without georeferencing they must match"
                if reproject
                else "label rasters must share the image grid"
            )
            raise BadInput(
                f"{self.text} is {src.width}x{src.height} but the image is "
                f"{self.grid.width}x{self.grid.height}; {rule}",
                param=self.param,
            )
        else:
            self.close()
            raise BadInput(
                f"{self.text}: {what}; resample it onto the image grid first (e.g. gdalwarp "
                "with the image's -t_srs, -te and -ts, -r near)",
                param=self.param,
            )
        self._src = src

    def _mismatch(self, src) -> str | None:
        """How a label raster is off the grid (None: on it)."""
        grid = self.grid
        if (src.width, src.height) != (grid.width, grid.height):
            return "its size differs from the image's"
        # same size is not the same grid: a shifted or reprojected mask labels other ground
        if src.crs is not None and grid.crs is not None and src.crs != grid.crs:
            return f"its CRS {src.crs.to_string()} differs from the image's {grid.crs.to_string()}"
        if (src.crs is None) != (grid.crs is None):
            return "one of the label raster and the image has no CRS"
        if not src.transform.almost_equals(grid.transform):
            return f"its transform {tuple(src.transform)[:6]} differs from the image's " + str(
                tuple(grid.transform)[:6]
            )
        return None

    # --- reading ------------------------------------------------------------------------

    def read(self, window) -> np.ndarray:
        """Labels (H, W) uint8 of ``window`` (a rasterio Window) of the grid; 0 = unlabelled
        (also outside the label raster)."""
        if self._src is None:
            return self._rasterize(window)
        if self._colours:
            data, _ = read_window(self._src, window, (1, 2, 3), "none")
            return decode_colours(data, ISPRS_COLOURS)
        data = read_window(self._src, window, (1,), "none")[0][0]
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

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> LabelReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
