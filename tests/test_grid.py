"""geoseg.tiles.grid: one tile grid for tile, predict and map, with its defaults in the library."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from geoseg.cli import group
from geoseg.errors import BadInput
from geoseg.tiles.grid import TileGrid, plan_blocks, tile_origins, tile_windows
from geoseg.tiles.store import open_store
from geoseg.tiles.writer import tile


def test_tiling_defaults_live_in_the_library():
    assert TileGrid.for_tiling() == TileGrid(256, 32)
    assert TileGrid.for_tiling(64) == TileGrid(64, 16)  # a quarter of a small tile
    assert TileGrid.for_tiling(64, 0) == TileGrid(64, 0)
    with pytest.raises(BadInput, match="smaller than the tile size"):
        TileGrid.for_tiling(32, 32)


def test_prediction_grid_rules():
    assert TileGrid.for_prediction(64) == TileGrid(64, 8)
    with pytest.raises(BadInput) as err:
        TileGrid.for_prediction(50, multiple=32)
    assert err.value.param == "--tile-size" and "use 64" in str(err.value)
    with pytest.raises(BadInput) as err:
        TileGrid.for_prediction(64, 40)
    assert err.value.param == "--overlap"


def test_store_and_prediction_tiles_are_the_same_windows():
    """The blocks of predict cover exactly the tiles of a store with the same size/overlap."""
    grid = TileGrid(48, 8)
    h, w = 130, 97
    rows, cols = tile_origins(h, 48, 8), tile_origins(w, 48, 8)
    assert [(int(r), int(c)) for r in rows for c in cols] == grid.windows(h, w)
    tiles = {t for b in grid.blocks(h, w, 60) for t in b.tiles}
    assert tiles == set(tile_windows(h, w, 48, 8))
    assert grid.blocks(h, w, 60) == plan_blocks(h, w, tile=48, overlap=8, block=60)
    assert grid.weight().shape == (48, 48) and np.all(grid.weight() > 0)


def test_cli_and_library_make_the_same_store(fixtures, tmp_path):
    """`geoseg tile --tile-size 64` and `tile(tile_size=64)` agree (the CLI had its own default)."""
    cli_out, lib_out = tmp_path / "cli.zarr", tmp_path / "lib.zarr"
    result = CliRunner().invoke(
        group, ["-q", "tile", str(fixtures["rgbn"]), "-o", str(cli_out), "--tile-size", "64"]
    )
    assert result.exit_code == 0, result.output
    tile([fixtures["rgbn"]], lib_out, tile_size=64)
    a, b = open_store(cli_out), open_store(lib_out)
    assert a.overlap == b.overlap == 16
    assert a.n_tiles == b.n_tiles
    np.testing.assert_array_equal(a.origin, b.origin)


def test_a_tile_carries_its_georeferencing(fixtures, tmp_path):
    """store.read(i) gives the tile's transform and CRS: its pixels map back onto the source."""
    import rasterio
    from rasterio.windows import Window

    store = tile([fixtures["rgbn"]], tmp_path / "s.zarr", tile_size=32, overlap=8)
    with rasterio.open(fixtures["rgbn"]) as src:
        for i in (0, store.n_tiles - 1):
            t = store.read(i)
            _, row, col, _ = (int(v) for v in t["origin"])
            assert t["transform"] == src.window_transform(Window(col, row, 32, 32))
            assert rasterio.crs.CRS.from_wkt(t["crs"]) == src.crs
            x, y = t["transform"] * (0.5, 0.5)
            np.testing.assert_array_equal(
                t["image"][:, 0, 0], src.read(window=Window(col, row, 1, 1))[:, 0, 0]
            )
            assert src.index(x, y) == (row, col)
