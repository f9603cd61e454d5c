"""Superpixels in ground units: the same region size in m² at any resolution, carried by the
head's record so predict uses what the fit used; old records keep the pixel parameters.

On the bundled SpaceNet Vegas scene (real WorldView-3 pixels and footprints).
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from test_mapping import kmeans_checkpoint

from geoseg.checkpoint import Checkpoint
from geoseg.demo import sample_paths
from geoseg.evaluate import fit_mapping
from geoseg.heads.fit import ground_pixel_size
from geoseg.heads.model import HeadedModel
from geoseg.io.bands import normalize
from geoseg.refine import superpixels as sp


def _vegas(size: int = 256) -> tuple[np.ndarray, float]:
    """A normalised (3, size, size) crop of the bundled scene and its pixel size (m)."""
    image, _ = sample_paths()
    with rasterio.open(image) as src:
        x = src.read([5, 3, 2], window=((0, size), (0, size))).astype(np.float32)
    x = (x - x.mean(axis=(1, 2), keepdims=True)) / x.std(axis=(1, 2), keepdims=True)
    return x, ground_pixel_size(image)


def _mean_region_m2(x: np.ndarray, pixel_size: float, **params) -> float:
    labels = sp.segments(x, **params)
    return labels.size / (labels.max() + 1) * pixel_size**2


def test_ground_pixel_size_measures_geographic_rasters_in_metres(data_dir):
    image, _ = sample_paths()  # EPSG:4326, 2.7e-6 degrees
    assert ground_pixel_size(image) == pytest.approx(0.27, abs=0.01)
    # a PNG has no CRS: no pixel size, so its head keeps the pixel parameters
    assert ground_pixel_size(data_dir / "isprs" / "potsdam_2_10_rgb_512.png") is None


def test_ground_pixel_size_of_a_local_crs(data_dir, tmp_path):
    """An engineering CRS has no way to WGS 84: its metre axes are used, not an error."""
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    with rasterio.open(data_dir / "crops" / "vegas_mul8_uint8.tif") as src:
        data, profile = src.read(), src.profile
    local = 'LOCAL_CS["site grid",UNIT["metre",1],AXIS["Easting",EAST],AXIS["Northing",NORTH]]'
    profile.update(crs=CRS.from_wkt(local), transform=from_origin(0, 100, 0.3, 0.3))
    with rasterio.open(tmp_path / "local.tif", "w", **profile) as dst:
        dst.write(data)
    assert ground_pixel_size(tmp_path / "local.tif") == pytest.approx(0.3)


def test_params_for_keeps_the_region_size_in_metres_across_resolutions():
    x, px = _vegas()
    coarse = x.reshape(3, 128, 2, 128, 2).mean(axis=(2, 4))  # the same ground at 2 × px
    # in metres: about the same ground size of region at both resolutions ...
    fine_m = _mean_region_m2(x, px, **sp.params_for(px))
    coarse_m = _mean_region_m2(coarse, 2 * px, **sp.params_for(2 * px))
    # ... in pixels: regions of the coarse image cover several times the ground
    fine_px = _mean_region_m2(x, px)
    coarse_px = _mean_region_m2(coarse, 2 * px)
    # (measured: 1.1 and 0.7 m² in metres; 6.7 and 19 m² in pixels)
    assert max(fine_m, coarse_m) / min(fine_m, coarse_m) < 1.8
    assert coarse_px / fine_px > 2.5
    # unknown pixel size (a PNG): the pixel parameters, as every head fitted before
    assert sp.params_for(None) == {"scale": sp.SCALE, "sigma": sp.SIGMA, "min_size": sp.MIN_SIZE}
    assert sp.params_for(0.5)["min_size"] == 1 and sp.params_for(0.0775)["min_size"] == 42


def test_head_carries_metric_superpixels_and_old_records_keep_pixel_ones(tmp_path):
    image, labels = sample_paths()
    ckpt_path = kmeans_checkpoint(tmp_path / "best.pt", tile=64)
    out = tmp_path / "mapped.pt"
    fit_mapping(
        ckpt_path,
        labels=labels,
        image=image,
        head="mlp",
        tile_size=64,
        max_tiles=4,
        names={1: "building", 2: "road", 3: "tree"},
        output=out,
    )
    record = torch.load(out, map_location="cpu", weights_only=True)["fewshot"]
    assert record["pixel_size"] == pytest.approx(0.27, abs=0.01)
    assert record["superpixel_params"] == sp.params_for(record["pixel_size"])
    ckpt = Checkpoint.load(out)
    base = Checkpoint({**ckpt, "fewshot": None}).build_model()
    with rasterio.open(image) as src:
        data = src.read(list(ckpt["bands"]), window=((0, 96), (0, 96))).astype(np.float32)
    x = torch.from_numpy(normalize(data, ckpt["norm"]).astype(np.float32))[None]
    model = HeadedModel(base, record).eval()
    old = HeadedModel(
        base, {k: v for k, v in record.items() if k not in ("pixel_size", "superpixel_params")}
    ).eval()
    with torch.inference_mode():
        _, raw = model.probability(x, refined=False)
        _, metric = model.probability(x)
        _, legacy = old.probability(x)
    raw, img = raw[0].numpy(), x[0].numpy()
    assert np.allclose(metric[0].numpy(), sp.refine(raw, img, **record["superpixel_params"]))
    assert np.allclose(legacy[0].numpy(), sp.refine(raw, img))
    assert not np.allclose(metric[0].numpy(), legacy[0].numpy())
