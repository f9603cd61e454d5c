"""Dataset layouts: SpaceNet, Inria, Potsdam and band stacks, built from real crops."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import rasterio

from geoseg.errors import BadInput
from geoseg.io.layouts import find_scenes
from geoseg.tiles.writer import tile

GEOJSON = "geoseg/data/vegas_img2144/labels.geojson"


@pytest.fixture
def crops(data_dir):
    return data_dir / "crops"


def test_spacenet_root_pairs_images_and_labels_by_id(crops, tmp_path, data_dir):
    labels = data_dir.parent.parent / GEOJSON
    for aoi, ids in (("AOI_2_Vegas_Train", (2144, 2145)), ("AOI_4_Shanghai_Train", (7,))):
        city = aoi.rsplit("_", 1)[0]
        for folder in ("MUL-PanSharpen", "RGB-PanSharpen"):
            (tmp_path / aoi / folder).mkdir(parents=True)
        (tmp_path / aoi / "geojson" / "buildings").mkdir(parents=True)
        for n in ids:
            image_id = f"{city}_img{n}"
            shutil.copy(
                crops / "vegas_mul8_uint8.tif",
                tmp_path / aoi / "MUL-PanSharpen" / f"MUL-PanSharpen_{image_id}.tif",
            )
            shutil.copy(
                crops / "vegas_rgb_uint16.tif",
                tmp_path / aoi / "RGB-PanSharpen" / f"RGB-PanSharpen_{image_id}.tif",
            )
            if n != 2145:
                shutil.copy(
                    labels,
                    tmp_path / aoi / "geojson" / "buildings" / f"buildings_{image_id}.geojson",
                )
    scenes = find_scenes([tmp_path])
    assert [s.name for s in scenes] == [
        "AOI_2_Vegas_img2144",
        "AOI_2_Vegas_img2145",
        "AOI_4_Shanghai_img7",
    ]
    assert all("MUL-PanSharpen" in s.images[0] for s in scenes)  # multispectral preferred
    assert scenes[0].label.endswith("buildings_AOI_2_Vegas_img2144.geojson")
    assert scenes[1].label is None
    # one AOI folder works too, and the store gets labels
    store = tile(tmp_path / "AOI_4_Shanghai_Train", tmp_path / "s.zarr", tile_size=64, overlap=0)
    assert store.has_labels and len(store.sources) == 1 and store.bands == list(range(1, 9))


def test_inria_layout(crops, tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "gt").mkdir()
    shutil.copy(crops / "naip_rgbn_uint8.tif", tmp_path / "images" / "austin1.tif")
    with rasterio.open(crops / "naip_rgbn_uint8.tif") as src:
        profile = src.profile | {"count": 1, "nodata": None}
        gt = np.where(src.read(1) > 120, 255, 0).astype(np.uint8)
    with rasterio.open(tmp_path / "gt" / "austin1.tif", "w", **profile) as dst:
        dst.write(gt, 1)
    [scene] = find_scenes([tmp_path])
    assert scene.name == "austin1" and scene.label.endswith("gt/austin1.tif")
    store = tile(tmp_path, tmp_path / "s.zarr", tile_size=32, overlap=0)
    assert store.label_classes == {"building": 1}
    np.testing.assert_array_equal(store.read(0)["label"], gt[:32, :32] // 255)


def test_potsdam_layout_pairs_by_tile_id(crops, tmp_path):
    (tmp_path / "4_Ortho_RGBIR").mkdir()
    (tmp_path / "5_Labels_all").mkdir()
    for name in ("2_10", "3_11"):
        shutil.copy(
            crops / "naip_rgbn_uint8.tif",
            tmp_path / "4_Ortho_RGBIR" / f"top_potsdam_{name}_RGBIR.tif",
        )
    shutil.copy(
        crops / "vegas_rgb_uint16.tif", tmp_path / "5_Labels_all" / "top_potsdam_3_11_label.tif"
    )
    scenes = find_scenes([tmp_path])
    assert [s.name for s in scenes] == ["potsdam_2_10", "potsdam_3_11"]
    assert scenes[0].label is None and scenes[1].label.endswith("top_potsdam_3_11_label.tif")


def test_band_stack_is_one_scene_and_composites_are_skipped(crops, tmp_path):
    for f in (crops / "vegas_rgbn").iterdir():
        shutil.copy(f, tmp_path / f.name)
    shutil.copy(crops / "vegas_rgb_uint16.tif", tmp_path / "vegas_rgbn-RGB.tif")
    [scene] = find_scenes([tmp_path])
    assert scene.descriptions == ("red", "green", "blue", "nir")
    assert [p[-5] for p in scene.images] == ["R", "G", "B", "N"]
    # the same files named one by one give the same stack
    files = sorted(str(p) for p in tmp_path.glob("vegas_rgbn-?.tif"))
    assert find_scenes(files)[0].images == scene.images


def test_plain_inputs_and_errors(crops, tmp_path):
    scenes = find_scenes([crops / "naip_rgbn_uint8.tif", crops / "atlanta_pan_uint16.tif"])
    assert [s.name for s in scenes] == ["naip_rgbn_uint8", "atlanta_pan_uint16"]
    with pytest.raises(BadInput, match="contains no raster"):
        find_scenes([tmp_path])
    with pytest.raises(BadInput, match="does not exist"):
        find_scenes([tmp_path / "missing"])
    with pytest.raises(BadInput) as err:
        find_scenes([crops / "naip_rgbn_uint8.tif"], labels=tmp_path / "none.geojson")
    assert err.value.param == "--labels"
