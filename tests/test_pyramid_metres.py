"""The feature pyramid in metres: its pixel scales derived from the tile store's ground pixel
size at training, kept in the checkpoint so predict uses exactly them; old checkpoints and
stores without georeferencing keep the pixel scales.

On bundled real crops: WorldView-3 Vegas (EPSG:4326, 0.27 m) and an ISPRS Potsdam PNG.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geoseg.checkpoint import Checkpoint, build_from_spec
from geoseg.heads.fit import ground_pixel_size
from geoseg.heads.model import HeadedModel
from geoseg.models import pyramid as pyr
from geoseg.tiles.store import open_store
from geoseg.tiles.writer import tile
from geoseg.train.loop import train

#: k-means on the pyramid, in metres, small enough for seconds
TINY = (
    "n_clusters=4",
    "seed=0",
    "data.crop_size=32",
    "baseline.pyramid=true",
    "baseline.pyramid_metres=true",
    "baseline.samples=2000",
    "baseline.n_init=1",
)


def test_scales_follow_the_ground_pixel_size_within_an_octave():
    assert pyr.scales_for(None) == pyr.default_scales()  # no CRS: the pixel scales
    assert pyr.scales_for(pyr.REFERENCE_GSD) == pyr.default_scales()
    half = pyr.scales_for(1.0)  # 1 m: half the pixels for the same metres
    assert half["sigmas"] == [s / 2 for s in pyr.SIGMAS]
    assert half["tophat_sizes"] == [3, 5, 11, 21]
    # clamped: 10 m imagery keeps distinct scales, a drone scene does not blow up compute
    assert pyr.scales_for(10.0) == half
    fine = pyr.scales_for(0.0775)
    assert max(fine["tophat_sizes"]) == 81 and fine["sigmas"][-1] == 32.0
    for s in (pyr.scales_for(p) for p in (0.05, 0.27, 0.3, 0.75, 2.0)):
        assert all(w % 2 == 1 and w >= 3 for w in s["tophat_sizes"])
        assert len(set(s["tophat_sizes"])) == len(pyr.TOPHAT_SIZES)
    with pytest.raises(ValueError, match="tophat_sizes"):
        pyr.pyramid(torch.zeros(1, 3, 16, 16), {**pyr.default_scales(), "tophat_sizes": [5]})


def _train(image, tmp_path, *, bands=None):
    store = tmp_path / "store.zarr"
    tile([image], store, tile_size=64, overlap=0, bands=bands)
    best = train(store, tmp_path / "run", method="kmeans", overrides=TINY)
    return open_store(store), Checkpoint.load(best)


def test_training_sizes_the_pyramid_from_the_store_and_the_checkpoint_keeps_it(data_dir, tmp_path):
    image = data_dir / "crops" / "vegas_mul8_uint8.tif"
    store, ckpt = _train(image, tmp_path, bands=[5, 3, 2])
    scales = ckpt["model"]["model_cfg"]["pyramid_scales"]
    # 0.27 m (measured as the head measures a raster): today's windows x 0.5 / 0.27, the
    # largest 41 px -> 77 px (about 20 m either way)
    assert scales == pyr.scales_for(ground_pixel_size(image))
    assert scales["tophat_sizes"] == [9, 21, 39, 77]
    model = ckpt.build_model().eval()
    x = torch.from_numpy(np.asarray(store.image[0], np.float32))[None] / 255.0
    with torch.no_grad():
        got = model.features(x)
        assert torch.equal(got, pyr.pyramid(x, scales))
        assert not torch.allclose(got, pyr.pyramid(x))  # in pixels the features differ
        # a few-label head on this model reads the base's own pyramid, not the pixel one
        head = HeadedModel(model, {"bias": 0.0, "cluster_heads": [0]})
        _, fp = head._base(x)
        assert torch.equal(fp, got)
    # a checkpoint from before the option (no scales in its spec) keeps the pixel scales
    spec = {**ckpt["model"], "model_cfg": dict(ckpt["model"]["model_cfg"])}
    del spec["model_cfg"]["pyramid_scales"]
    old = build_from_spec(spec)
    assert old.pyramid_scales is None
    with torch.no_grad():
        assert torch.equal(old.features(x), pyr.pyramid(x))


def test_a_store_without_georeferencing_keeps_the_pixel_scales(data_dir, tmp_path):
    _, ckpt = _train(data_dir / "isprs" / "potsdam_2_10_rgb_512.png", tmp_path)
    assert ckpt["model"]["model_cfg"]["pyramid_scales"] == pyr.default_scales()
