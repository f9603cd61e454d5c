"""geoseg.io.labels: the one label reader's rules, the same for tile, evaluate and map."""

from __future__ import annotations

import numpy as np
import rasterio
from rasterio.windows import Window

from geoseg.io.labels import Grid, LabelReader, is_building_mask, label_classes


def test_a_0_255_mask_means_building_for_tile_and_evaluate(make_raster):
    """tile named it "building" while evaluate called it "class_255": now one rule."""
    mask = np.zeros((1, 40, 30), np.uint8)
    mask[0, 5:20, 3:12] = 255
    path = make_raster("mask.tif", mask)
    assert is_building_mask({0, 255}) and not is_building_mask({0, 1, 255})
    assert label_classes([str(path)]) == {"building": 1}  # what tile stores
    with rasterio.open(path) as src:
        source = LabelReader(path, Grid.of(src))
    labels = source.read(Window(0, 0, 30, 40))
    source.close()
    assert source.names == {1: "building"}  # what evaluate and map name
    np.testing.assert_array_equal(labels, (mask[0] == 255).astype(np.uint8))


def test_other_values_stay_class_ids(make_raster):
    lab = np.zeros((1, 20, 20), np.uint8)
    lab[0, :10] = 2
    lab[0, 10:, :5] = 7
    path = make_raster("classes.tif", lab)
    assert label_classes([str(path)]) == {"2": 2, "7": 7}
    with rasterio.open(path) as src:
        source = LabelReader(path, Grid.of(src))
    np.testing.assert_array_equal(source.read(Window(0, 0, 20, 20)), lab[0])
    source.close()


def test_nodata_of_a_class_raster_is_unlabelled_in_the_store_and_the_reader(make_raster):
    """A class raster's nodata is neither a stored class nor a label value."""
    lab = np.zeros((1, 20, 20), np.uint8)
    lab[0, :5] = 3
    lab[0, 15:] = 99  # declared nodata
    path = make_raster("nodata.tif", lab, nodata=99)
    assert label_classes([str(path)]) == {"3": 3}
    with rasterio.open(path) as src, LabelReader(path, Grid.of(src)) as reader:
        read = reader.read(Window(0, 0, 20, 20))
    np.testing.assert_array_equal(read, np.where(lab[0] == 99, 0, lab[0]))


def _polygons(path, crs="EPSG:32611"):
    import geopandas as gpd
    import shapely

    x0, y0 = 500000.0, 4000000.0  # make_raster's origin, 0.5 m pixels
    frame = gpd.GeoDataFrame(
        {"class": ["road", "house", "tree"]},
        geometry=[
            shapely.box(x0 + 1, y0 - 4, x0 + 9, y0 - 1),
            shapely.box(x0 + 2, y0 - 9, x0 + 6, y0 - 5),
            shapely.box(x0 + 5, y0 - 3, x0 + 8, y0 - 2),  # drawn last: wins over road
        ],
        crs="EPSG:32611",
    ).to_crs(crs)
    frame.to_file(path)
    return path


def test_a_text_class_column_gets_the_same_ids_in_tile_and_evaluate(make_raster, tmp_path):
    """tile numbers names through the store's label_classes, evaluate by sorted name: for one
    file both give house 1, road 2, tree 3, and every window reads the same labels."""
    path = _polygons(tmp_path / "classes.gpkg", crs="EPSG:4326")  # reprojected per window
    image = make_raster("image.tif", np.zeros((1, 24, 24), np.uint8))
    classes = label_classes([str(path)])
    assert classes == {"house": 1, "road": 2, "tree": 3}
    with rasterio.open(image) as src:
        grid = Grid.of(src)
    with (
        LabelReader(path, grid, column="class", classes=classes) as tile,
        LabelReader(path, grid, column="class", reproject=True) as evaluate,
    ):
        assert evaluate.names == {1: "house", 2: "road", 3: "tree"}
        whole = tile.read(Window(0, 0, 24, 24))
        assert set(np.unique(whole)) == {0, 1, 2, 3}
        assert whole[4, 12] == 3 and whole[4, 4] == 2  # the tree drawn over the road
        for window in (Window(0, 0, 24, 24), Window(8, 4, 8, 8), Window(20, 20, 8, 8)):
            a, b = tile.read(window), evaluate.read(window)
            np.testing.assert_array_equal(a, b)
            # a window is the same pixels of the whole grid (zeros beyond its edge)
            r, c = int(window.row_off), int(window.col_off)
            part = whole[r : r + 8, c : c + 8] if window.width == 8 else whole
            np.testing.assert_array_equal(a[: part.shape[0], : part.shape[1]], part)


def test_vector_labels_need_a_crs_on_both_sides(make_raster, tmp_path):
    import pytest

    from geoseg.errors import BadInput

    path = _polygons(tmp_path / "l.gpkg")
    plain = tmp_path / "plain.png"
    with rasterio.open(plain, "w", driver="PNG", width=8, height=8, count=1, dtype="uint8") as dst:
        dst.write(np.zeros((1, 8, 8), np.uint8))
    with rasterio.open(plain) as src, pytest.raises(BadInput, match="georeferenced") as err:
        LabelReader(path, Grid.of(src))
    assert err.value.param == "--labels"


def test_without_column_a_file_of_several_classes_is_read_by_class(make_raster, tmp_path):
    """No --column: a labels file of houses, roads and trees is read by its class column (it
    once burnt every polygon as building, so roads and trees trained the building head); one
    class in the column (Massachusetts: class = 1 everywhere) keeps the one-class reading."""
    import geopandas as gpd

    path = _polygons(tmp_path / "classes.gpkg")
    image = make_raster("image.tif", np.zeros((1, 24, 24), np.uint8))
    with rasterio.open(image) as src:
        grid = Grid.of(src)
    with LabelReader(path, grid) as auto, LabelReader(path, grid, column="class") as given:
        assert auto.names == given.names == {1: "house", 2: "road", 3: "tree"}
        window = Window(0, 0, 24, 24)
        np.testing.assert_array_equal(auto.read(window), given.read(window))
    one = gpd.read_file(path).assign(**{"class": 1})
    one.to_file(tmp_path / "one.gpkg")
    with LabelReader(tmp_path / "one.gpkg", grid) as reader:
        assert reader.names == {1: "building"}
        assert set(np.unique(reader.read(Window(0, 0, 24, 24)))) == {0, 1}
