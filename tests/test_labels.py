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
