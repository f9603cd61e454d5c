"""tile and predict give the same result on a dask.distributed cluster as on local threads.

The cluster uses real worker processes, so this also proves the block tasks pickle (file
paths and small parameters travel, never open datasets or scene-sized arrays).
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None
    ) as c:
        yield c.scheduler_address


def test_tile_and_predict_on_a_cluster_equal_local_threads(fixtures, tmp_path, cluster):
    from geoseg.predict.raster import predict
    from geoseg.tiles.store import open_store
    from geoseg.tiles.writer import tile
    from geoseg.train.loop import train

    local = tile([fixtures["rgbn"]], tmp_path / "local.zarr", tile_size=48, overlap=8)
    remote = tile(
        [fixtures["rgbn"]], tmp_path / "remote.zarr", tile_size=48, overlap=8, scheduler=cluster
    )
    remote = open_store(remote.url)
    assert remote.n_tiles == local.n_tiles > 1
    np.testing.assert_array_equal(remote.image[:], local.image[:])
    np.testing.assert_array_equal(remote.valid[:], local.valid[:])
    for key in local.stats:
        np.testing.assert_array_equal(remote.stats[key], local.stats[key])

    ckpt = train(local, tmp_path / "run", method="kmeans", overrides=["n_clusters=4"], device="cpu")
    common = dict(tile_size=32, overlap=8, block_size=64, device="cpu")
    a = predict(fixtures["rgbn"], ckpt, tmp_path / "threads", **common)
    b = predict(fixtures["rgbn"], ckpt, tmp_path / "cluster", scheduler=cluster, **common)
    with rasterio.open(a["clusters"]) as ra, rasterio.open(b["clusters"]) as rb:
        assert ra.width * ra.height > common["block_size"] ** 2  # several blocks
        np.testing.assert_array_equal(ra.read(1), rb.read(1))
        assert ra.crs == rb.crs and ra.transform == rb.transform
