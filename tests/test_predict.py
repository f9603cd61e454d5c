"""Tiled prediction: block-size invariance (no seams), checks before work, atomic outputs, CLI."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner
from make_fixtures import synthetic_scene

from geoseg.checkpoint import Checkpoint, build_from_spec
from geoseg.cli import group, main
from geoseg.errors import BadInput, OutputExists
from geoseg.io.bands import BandSpec
from geoseg.predict.blend import blend_block
from geoseg.predict.raster import predict
from geoseg.predict.segment import predict_array
from geoseg.tiles.grid import blend_weight, block_edges, plan_blocks, tile_origins


def tiny_checkpoint(path, *, bands=(1, 2, 3, 4), k=5, tile=32, seed=0, mapping=None):
    """A seeded untrained Kanezaki net (3x3 convs: real spatial context) as a checkpoint."""
    torch.manual_seed(seed)
    spec = {
        "method": "kanezaki",
        "model_cfg": {"layers": 2},
        "in_channels": len(bands),
        "n_clusters": [k],
    }
    net = build_from_spec(spec)
    n = len(bands)
    norm = {"mean": [120.0] * n, "std": [50.0] * n, "p2": [5.0] * n, "p98": [250.0] * n}
    spec_bands = BandSpec.of(bands, [f"b{i}" for i in bands], norm)
    ckpt = Checkpoint.new(
        net, method="kanezaki", spec=spec, bands=spec_bands, crop_size=tile, mapping=mapping
    )
    return ckpt.save(path)


@pytest.fixture
def scene(make_raster):
    image, _ = synthetic_scene(150, 190, seed=3)
    return make_raster("scene.tif", image)


@pytest.fixture
def ckpt(tmp_path):
    return tiny_checkpoint(tmp_path / "m.pt")


def read(path):
    with rasterio.open(path) as src:
        return src.read()


# --- window math -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("h", "w", "tile", "overlap", "block"),
    [(150, 190, 32, 4, 64), (20, 300, 32, 8, 50), (97, 97, 16, 0, 40), (64, 64, 64, 16, 1000)],
)
def test_blocks_partition_the_scene_and_hold_every_touching_tile(h, w, tile, overlap, block):
    cover = np.zeros((h, w), int)
    rows, cols = tile_origins(h, tile, overlap), tile_origins(w, tile, overlap)
    for b in plan_blocks(h, w, tile=tile, overlap=overlap, block=block):
        cover[b.rows[0] : b.rows[1], b.cols[0] : b.cols[1]] += 1
        touching = [
            (int(r), int(c))
            for r in rows
            for c in cols
            if r < b.rows[1] and r + tile > b.rows[0] and c < b.cols[1] and c + tile > b.cols[0]
        ]
        assert list(b.tiles) == touching
        assert b.read_rows[0] <= b.rows[0] and b.read_rows[1] >= b.rows[1]
        assert b.read_rows[1] <= h and b.read_cols[1] <= w
    assert (cover == 1).all()
    assert rows[-1] + tile >= h and (h < tile or rows[-1] + tile == h)


@pytest.mark.parametrize("length", [1536, 1153, 2048, 4096, 8192, 300, 33])
def test_blocks_share_an_axis_evenly_never_above_the_block_size(length):
    """Blocks run in parallel: a short last block left the largest to run alone (1536² in
    1024 px blocks was 1152 + 384 per axis; 1153 px ended in a 1 px block)."""
    tile, overlap, block = 256, 32, 1024
    stride = tile - overlap
    edges = block_edges(length, tile, overlap, block)
    assert edges[0][0] == 0 and edges[-1][1] == length
    assert all(a[1] == b[0] for a, b in zip(edges, edges[1:], strict=False))
    step = round(block / stride) * stride
    inner = [b - a for a, b in edges[:-1]]
    assert all(size <= step + overlap for size in inner)
    assert all((a - overlap) % stride == 0 for a, _ in edges[1:])  # borders inside a tile
    sizes = [b - a for a, b in edges]
    # counts differ by one stride, and the last block ends where the axis does (< 1 stride short)
    assert max(sizes) - min(sizes) < 2 * stride + overlap or len(edges) == 1


def test_blend_weight_is_separable_positive_and_flat_inside():
    w = blend_weight(32, 8)
    assert w.min() > 0 and w[8:24, 8:24].min() == 1.0
    np.testing.assert_allclose(w, np.outer(w[16], w[:, 16]), rtol=1e-6)


# --- seams -----------------------------------------------------------------------------------


def _context_segment(x: np.ndarray) -> np.ndarray:
    """A deterministic net with spatial context: zero-padded 5x5 box means of the bands, softmax.

    Zero padding makes a pixel's output depend on where it sits in its tile, which is exactly
    what produces seams when blocks do not reproduce the global tile grid.
    """
    pad = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    box = sum(pad[:, :, i : i + x.shape[2], j : j + x.shape[3]] for i in range(5) for j in range(5))
    logits = np.concatenate([box, -box.sum(1, keepdims=True)], axis=1) / 5
    e = np.exp(logits - logits.max(1, keepdims=True))
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


def _blend_scene(x, tile, overlap, block, batch_size):
    h, w = x.shape[1:]
    out = np.full((4, h, w), np.nan, np.float32)
    for b in plan_blocks(h, w, tile=tile, overlap=overlap, block=block):
        xs = x[:, b.read_rows[0] : b.read_rows[1], b.read_cols[0] : b.read_cols[1]]
        out[:, b.rows[0] : b.rows[1], b.cols[0] : b.cols[1]] = blend_block(
            b, xs, _context_segment, tile=tile, overlap=overlap, batch_size=batch_size, n_classes=4
        )
    return out


def test_blend_is_identical_whatever_the_block_size():
    x = np.random.default_rng(0).normal(size=(3, 130, 170)).astype(np.float32)
    whole = _blend_scene(x, 32, 8, 10_000, batch_size=64)
    for block, batch in ((24, 1), (60, 3), (100, 7)):
        parts = _blend_scene(x, 32, 8, block, batch_size=batch)
        # same tiles, same weights, same summation order: bit-identical, not merely close
        np.testing.assert_array_equal(parts, whole)
    np.testing.assert_allclose(whole.sum(0), 1, atol=1e-5)


def test_predict_has_no_seams_between_blocks(tmp_path, scene, ckpt):
    """One block vs many small blocks with the real model: same class map, up to float ties."""
    one = predict(scene, ckpt, tmp_path / "one", block_size=4096, probabilities=True)
    many = predict(scene, ckpt, tmp_path / "many", block_size=64, batch_size=3)
    a, b = read(one["clusters"])[0], read(many["clusters"])[0]
    differ = a != b
    probs = np.sort(read(one["probabilities"]), axis=0)
    gap = probs[-1] - probs[-2]
    print(f"seams: {differ.sum()} of {a.size} pixels differ; their top-2 gaps: {gap[differ]}")
    # torch may sum a conv in a different order for another batch composition, so an exact tie
    # can flip; anything else would be a seam.
    assert differ.mean() < 1e-3
    assert (gap[differ] < 2e-3).all()  # float16 storage of the probabilities


def test_distributed_scheduler_gives_the_same_map(tmp_path, scene, ckpt):
    """Blocks computed on a dask.distributed cluster come back and are written by the client."""
    distributed = pytest.importorskip("distributed")
    local = predict(scene, ckpt, tmp_path / "local", block_size=64)["clusters"]
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    ) as cluster:
        remote = predict(
            scene, ckpt, tmp_path / "remote", block_size=64, scheduler=cluster.scheduler_address
        )["clusters"]
    np.testing.assert_array_equal(read(local), read(remote))


# --- inputs checked before any work ----------------------------------------------------------


def test_band_mismatch_is_refused_naming_both_counts(tmp_path, make_raster, ckpt):
    image, _ = synthetic_scene(40, 40)
    rgb = make_raster("rgb.tif", image[:3])
    with pytest.raises(BadInput, match=r"3 bands.*expects 4") as err:
        predict(rgb, ckpt, tmp_path / "out")
    assert err.value.param == "RASTER"
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_trained_band_indices_are_selected_from_a_wider_raster(tmp_path, make_raster):
    image, _ = synthetic_scene(40, 48)
    wide = make_raster("wide.tif", np.concatenate([image, image[::-1]]))
    m = tiny_checkpoint(tmp_path / "m.pt", bands=(5, 6, 7, 8))
    ref = tiny_checkpoint(tmp_path / "r.pt", bands=(1, 2, 3, 4))
    a = predict(wide, m, tmp_path / "a")["clusters"]
    b = predict(make_raster("rev.tif", image[::-1].copy()), ref, tmp_path / "b")["clusters"]
    np.testing.assert_array_equal(read(a), read(b))


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [({"classes": {"building": [9]}}, "--class"), ({"tile_size": 32, "overlap": 20}, "--overlap")],
)
def test_bad_options_are_refused(tmp_path, scene, ckpt, kwargs, param):
    with pytest.raises(BadInput) as err:
        predict(scene, ckpt, tmp_path, **kwargs)
    assert err.value.param == param


def test_existing_outputs_are_refused_then_replaced(tmp_path, scene, ckpt):
    paths = predict(scene, ckpt, tmp_path)
    before = paths["clusters"].stat().st_mtime_ns
    with pytest.raises(OutputExists, match="--overwrite"):
        predict(scene, ckpt, tmp_path)
    assert paths["clusters"].stat().st_mtime_ns == before
    predict(scene, ckpt, tmp_path, overwrite=True)
    assert paths["clusters"].stat().st_mtime_ns != before


def test_a_failure_mid_scene_leaves_no_partial_output(tmp_path, scene, ckpt):
    """A corrupt tile deep in the file fails one block; nothing half-written may remain."""
    old = predict(scene, ckpt, tmp_path / "out")["clusters"]
    old_bytes = old.read_bytes()
    image, _ = synthetic_scene(256, 256, seed=4)
    broken = tmp_path / "broken.tif"
    profile = dict(
        driver="GTiff",
        width=256,
        height=256,
        count=4,
        dtype="uint8",
        crs="EPSG:32611",
        transform=rasterio.transform.from_origin(5e5, 4e6, 1, 1),
        tiled=True,
        blockxsize=64,
        blockysize=64,
        compress="deflate",
    )
    with rasterio.open(broken, "w", **profile) as dst:
        dst.write(image)
    with rasterio.open(broken) as src:
        offset = int(src.get_tag_item("BLOCK_OFFSET_3_3", "TIFF", bidx=1))
    with open(broken, "r+b") as f:
        f.seek(offset)
        f.write(b"\xff" * 32)
    broken = broken.rename(tmp_path / "scene.tif")  # same output names as the earlier run
    with pytest.raises(Exception):  # noqa: B017 - GDAL's decode error, whatever its class
        predict(broken, ckpt, tmp_path / "out", block_size=64, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        ["scene_clusters.tif", "scene_clusters.qml"]
    )
    assert old.read_bytes() == old_bytes


# --- predict_array ---------------------------------------------------------------------------


def test_predict_array_shape_and_probabilities(ckpt):
    image, _ = synthetic_scene(50, 70)
    valid = np.ones((50, 70), bool)
    valid[:, :5] = False
    probs = predict_array(ckpt, image, valid, tile_size=32, overlap=4, device="cpu")
    assert probs.shape == (5, 50, 70) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(0), 1, atol=1e-5)


def test_tta_makes_the_prediction_rotation_equivariant(ckpt):
    """The 8-view average commutes with rot90 exactly; a single random conv net does not."""
    image, _ = synthetic_scene(32, 32, seed=5)
    turned = np.rot90(image, 1, axes=(1, 2)).copy()
    kw = dict(tile_size=32, overlap=0, device="cpu")
    plain = predict_array(ckpt, image, **kw)
    tta = predict_array(ckpt, image, tta=True, **kw)
    tta_turned = predict_array(ckpt, turned, tta=True, **kw)
    np.testing.assert_allclose(np.rot90(tta, 1, axes=(1, 2)), tta_turned, atol=1e-5)
    assert not np.allclose(np.rot90(plain, 1, axes=(1, 2)), predict_array(ckpt, turned, **kw))


# --- mapped classes and the CLI --------------------------------------------------------------


def test_class_option_writes_class_raster_and_polygons(tmp_path, scene, ckpt):
    res = CliRunner().invoke(
        group,
        [
            "-q",
            "predict",
            str(scene),
            "-m",
            str(ckpt),
            "-o",
            str(tmp_path / "o"),
            "--class",
            "building=1,2",
            "--tile-size",
            "48",
            "--overlap",
            "8",
        ],
    )
    assert res.exit_code == 0, res.output
    clusters = read(tmp_path / "o" / "scene_clusters.tif")[0]
    building = read(tmp_path / "o" / "scene_building.tif")[0]
    np.testing.assert_array_equal(building == 1, np.isin(clusters, [1, 2]))
    import geopandas

    polygons = geopandas.read_file(tmp_path / "o" / "scene_buildings.gpkg")
    assert len(polygons) > 0 and (polygons["class"] == "building").all()
    # score = mean class probability inside the polygon: the class won there, so above 1/K
    assert polygons["score"].between(1 / 5, 1).all()
    assert (tmp_path / "o" / "scene_building.qml").exists()
    assert not [p.name for p in (tmp_path / "o").iterdir() if p.name.startswith(".")]


def test_polygon_options_clean_the_class_polygons(tmp_path, scene, ckpt):
    import geopandas

    base = [
        "-q",
        "predict",
        str(scene),
        "-m",
        str(ckpt),
        "--class",
        "building=1,2",
        "--tile-size",
        "48",
        "--overlap",
        "8",
    ]
    raw = CliRunner().invoke(group, [*base, "-o", str(tmp_path / "raw")])
    assert raw.exit_code == 0, raw.output
    polygons = geopandas.read_file(tmp_path / "raw" / "scene_buildings.gpkg")
    cut = float(polygons["area_m2"].median())
    assert (polygons["area_m2"] < cut).any() and (polygons["area_m2"] >= cut).any()
    clean = CliRunner().invoke(
        group, [*base, "-o", str(tmp_path / "clean"), "--min-area", str(cut), "--fill-holes"]
    )
    assert clean.exit_code == 0, clean.output
    kept = geopandas.read_file(tmp_path / "clean" / "scene_buildings.gpkg")
    assert len(kept) == (polygons["area_m2"] >= cut).sum()
    assert (kept.geometry.interiors.map(len) == 0).all()


def test_nodata_override(tmp_path, fixtures, ckpt):
    # rgbn_nodata: 20 left columns are 0 in every band, and the file declares nodata 0
    base = [
        "-q",
        "predict",
        str(fixtures["rgbn_nodata"]),
        "-m",
        str(ckpt),
        "--tile-size",
        "48",
        "--overlap",
        "8",
    ]
    assert CliRunner().invoke(group, [*base, "-o", str(tmp_path / "a")]).exit_code == 0
    ignored = CliRunner().invoke(group, [*base, "-o", str(tmp_path / "b"), "--nodata", "none"])
    assert ignored.exit_code == 0, ignored.output
    with rasterio.open(tmp_path / "a" / "rgbn_nodata_clusters.tif") as src:
        declared, nodata = src.read(1), src.nodata
    overridden = read(tmp_path / "b" / "rgbn_nodata_clusters.tif")[0]
    assert (declared[:, :20] == nodata).all() and (declared[:, 20:] != nodata).all()
    assert (overridden != nodata).all()
    # columns 48+ lie only in tiles that never saw the nodata strip: identical either way
    np.testing.assert_array_equal(overridden[:, 48:], declared[:, 48:])


def test_checkpoint_mapping_is_used_without_class_option(tmp_path, scene):
    mapping = {"head": 0, "method": "majority", "classes": {"road": [0]}, "class_ids": {"road": 1}}
    m = tiny_checkpoint(tmp_path / "m.pt", mapping=mapping)
    paths = predict(scene, m, tmp_path / "o")
    assert paths["road"].name == "scene_road.tif" and paths["road:vector"].exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["missing.tif"], "RASTER: missing.tif does not exist"),
        (["notes.txt"], "not a raster"),
        (["scene.tif", "--model", "notes.txt"], "not a geoseg checkpoint"),
        (["rgb.tif"], "3 bands but the model expects 4"),
        (["scene.tif", "--class", "building"], "NAME=ID"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(
    tmp_path, scene, ckpt, make_raster, monkeypatch, capsys, args, fragment
):
    """Through ``geoseg.cli.main`` (the console entry point) in-process: exit code and message."""
    (tmp_path / "notes.txt").write_text("not a raster")
    make_raster("rgb.tif", synthetic_scene(40, 40)[0][:3])
    monkeypatch.chdir(tmp_path)
    argv = ["-q", "predict", *args, "-o", "out"]
    if "--model" not in args:
        argv += ["-m", str(ckpt)]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert fragment in err and len(err.strip().splitlines()) == 1


def test_console_script_exit_code(tmp_path, make_raster, ckpt):
    """One real subprocess: the installed ``geoseg`` entry point refuses a band mismatch."""
    rgb = make_raster("rgb.tif", synthetic_scene(40, 40)[0][:3])
    cmd = ["geoseg", "-q", "predict", str(rgb), "-m", str(ckpt), "-o", str(tmp_path / "o")]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.strip().startswith("Error: RASTER:") and "expects 4" in res.stderr
