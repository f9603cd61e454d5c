"""Property-based tests (hypothesis) of the math every large run relies on: the tile grid,
the blending weights, blockwise vectorisation and the SpaceNet score.

Each property is checked on many generated cases instead of a handful of hand-picked ones;
``deadline=None`` because the 2-core test machine is shared and timing is not the point.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasterio.features import shapes as rio_shapes
from rasterio.transform import from_origin

from geoseg.evaluate.spacenet import match_greedy, prf
from geoseg.predict.blend import blend_block
from geoseg.tiles.grid import blend_weight, plan_blocks, ramp, tile_origins, tile_windows

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def grids(draw, max_side=300):
    tile = draw(st.integers(8, 64))
    overlap = draw(st.integers(0, tile // 2))
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    return h, w, tile, overlap


# --- the tile store's window grid -----------------------------------------------------------


@FAST
@given(grids())
def test_tile_windows_cover_every_pixel_inside_the_raster(g):
    h, w, tile, overlap = g
    if overlap >= tile:
        return
    wins = tile_windows(h, w, tile, overlap)
    cover = np.zeros((h, w), bool)
    for r, c in wins:
        assert r >= 0 and c >= 0
        # a window never starts past the raster, and never reads past it unless it must
        assert r + tile <= max(h, tile) and c + tile <= max(w, tile)
        cover[r : r + tile, c : c + tile] = True
    assert cover.all()
    assert len(set(wins)) == len(wins)
    rows = sorted({r for r, _ in wins})
    # consecutive windows never step further than the stride (no gaps, no skipped overlap)
    assert all(b - a <= tile - overlap for a, b in zip(rows, rows[1:], strict=False))


@FAST
@given(grids())
def test_predict_tile_origins_agree_with_the_store_grid(g):
    """tile and predict cut a scene the same way (one grid, two users)."""
    h, w, tile, overlap = g
    if overlap >= tile:
        return
    rows, cols = tile_origins(h, tile, overlap), tile_origins(w, tile, overlap)
    assert [(int(r), int(c)) for r in rows for c in cols] == tile_windows(h, w, tile, overlap)


# --- blending -------------------------------------------------------------------------------


@FAST
@given(st.integers(2, 128).flatmap(lambda t: st.tuples(st.just(t), st.integers(0, t // 2))))
def test_ramp_is_positive_bounded_symmetric(t_o):
    tile, overlap = t_o
    r = ramp(tile, overlap)
    assert (r > 0).all() and (r <= 1).all()
    np.testing.assert_allclose(r, r[::-1])
    w = blend_weight(tile, overlap)
    np.testing.assert_allclose(w, np.outer(r, r).astype(np.float32))


@FAST
@given(st.integers(4, 64).flatmap(lambda t: st.tuples(st.just(t), st.integers(1, t // 2))))
def test_neighbouring_ramps_sum_to_one_across_the_overlap(t_o):
    """sin² rise + its mirror = 1: two tiles sharing ``overlap`` pixels form a partition of
    unity there, so blending a constant gives the constant even before normalisation.
    """
    tile, overlap = t_o
    r = ramp(tile, overlap)
    np.testing.assert_allclose(r[tile - overlap :] + r[:overlap], 1.0, atol=1e-12)


def _constant_segment(k):
    def segment(x):
        b, _, h, w = x.shape
        p = np.arange(1, k + 1, dtype=np.float32)
        return np.broadcast_to((p / p.sum())[None, :, None, None], (b, k, h, w)).copy()

    return segment


def _position_segment(x):
    """A deterministic 'model' with context: softmax of local means (as tests/test_predict)."""
    pad = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    box = sum(pad[:, :, i : i + x.shape[2], j : j + x.shape[3]] for i in range(3) for j in range(3))
    logits = np.concatenate([box, -box.sum(1, keepdims=True)], axis=1) / 3
    e = np.exp(logits - logits.max(1, keepdims=True))
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


def _blend(x, tile, overlap, block, segment, k, valid=None):
    h, w = x.shape[1:]
    out = np.full((k, h, w), np.nan, np.float32)
    for b in plan_blocks(h, w, tile=tile, overlap=overlap, block=block):
        rs, cs = slice(*b.read_rows), slice(*b.read_cols)
        out[:, slice(*b.rows), slice(*b.cols)] = blend_block(
            b,
            x[:, rs, cs],
            segment,
            tile=tile,
            overlap=overlap,
            batch_size=5,
            n_classes=k,
            valid=None if valid is None else valid[rs, cs],
        )
    return out


@FAST
@given(grids(max_side=120), st.integers(16, 200))
def test_blending_is_a_partition_of_unity(g, block):
    """Constant tile probabilities come out unchanged everywhere: weights sum to one."""
    h, w, tile, overlap = g
    x = np.zeros((1, h, w), np.float32)
    out = _blend(x, tile, overlap, block, _constant_segment(3), 3)
    p = np.array([1, 2, 3], np.float32) / 6
    np.testing.assert_allclose(out, np.broadcast_to(p[:, None, None], out.shape), rtol=1e-5)


@FAST
@given(grids(max_side=110), st.integers(16, 200), st.integers(0, 2**32 - 1))
def test_blending_does_not_depend_on_the_block_size(g, block, seed):
    h, w, tile, overlap = g
    x = np.random.default_rng(seed).normal(size=(2, h, w)).astype(np.float32)
    whole = _blend(x, tile, overlap, 10**6, _position_segment, 3)
    parts = _blend(x, tile, overlap, block, _position_segment, 3)
    np.testing.assert_array_equal(parts, whole)
    np.testing.assert_allclose(whole.sum(0), 1, atol=1e-5)


# --- blockwise vectorisation ------------------------------------------------------------------


def _write_classes(path, a, nodata=255):
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=a.shape[1],
        height=a.shape[0],
        count=1,
        dtype="uint8",
        crs="EPSG:32611",
        transform=from_origin(500000, 4000000, 0.5, 0.5),
        nodata=nodata,
    ) as dst:
        dst.write(a[None])
    return path


def _reference_area_by_class(a, nodata=255):
    tr = from_origin(500000, 4000000, 0.5, 0.5)
    out: dict[int, float] = {}
    for geom, v in rio_shapes(a, mask=a != nodata, transform=tr, connectivity=4):
        out[int(v)] = out.get(int(v), 0.0) + shapely.geometry.shape(geom).area
    return out


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    st.integers(3, 40),
    st.integers(3, 40),
    st.integers(3, 17),
    st.integers(0, 2**32 - 1),
    st.integers(2, 4),
)
def test_vectorize_by_blocks_equals_the_whole_raster(tmp_path, h, w, block, seed, k):
    from geoseg.vector.vectorize import vectorize

    rng = np.random.default_rng(seed)
    a = rng.integers(0, k, (h, w)).astype(np.uint8)
    a[rng.random(a.shape) < 0.1] = 255
    path = _write_classes(tmp_path / f"v{seed}_{block}.tif", a)
    whole = vectorize(path, block_size=4096)
    parts = vectorize(path, block_size=block)
    assert len(parts) == len(whole)
    assert parts.geometry.is_valid.all()
    ref = _reference_area_by_class(a)
    for cls, area in ref.items():
        got = parts[parts.cluster == cls].area.sum()
        assert got == pytest.approx(area, rel=1e-9)

    def key(g):
        return sorted(
            (int(c), round(x.area, 6), round(x.length, 6))
            for c, x in zip(g.cluster, g.geometry, strict=True)
        )

    assert key(parts) == key(whole)


# --- the SpaceNet score ---------------------------------------------------------------------


@st.composite
def boxes(draw, n_max=12):
    n = draw(st.integers(0, n_max))
    out = []
    for _ in range(n):
        x, y = draw(st.integers(0, 60)), draw(st.integers(0, 60))
        wx, wy = draw(st.integers(2, 12)), draw(st.integers(2, 12))
        out.append(shapely.box(x, y, x + wx, y + wy))
    return np.array(out, dtype=object)


@FAST
@given(boxes(), boxes(), st.sampled_from([0.0, 0.25, 0.5, 0.75]), st.randoms())
def test_score_invariants(pred, truth, iou, rnd):
    conf = np.array([rnd.random() for _ in pred])
    matched, best = match_greedy(pred, conf, truth, iou_threshold=iou)
    tp = int((matched >= 0).sum())
    fp, fn = len(pred) - tp, len(truth) - tp
    # a truth polygon is matched at most once, and only above the threshold
    hits = matched[matched >= 0]
    assert len(set(hits.tolist())) == tp
    assert (best[matched >= 0] > iou).all()
    p, r, f1 = prf(tp, fp, fn)
    assert 0 <= p <= 1 and 0 <= r <= 1 and 0 <= f1 <= 1
    assert min(p, r) - 1e-12 <= f1 <= max(p, r) + 1e-12
    # the truth and its own copy agree perfectly (distinct boxes only: duplicates may swap)
    uniq = np.array(list({g.wkt: g for g in truth}.values()), dtype=object)
    m, _ = match_greedy(uniq, np.ones(len(uniq)), uniq, iou_threshold=iou)
    assert prf(int((m >= 0).sum()), int((m < 0).sum()), int((m < 0).sum()))[2] == 1.0


@FAST
@given(boxes(), boxes(), st.integers(-1000, 1000), st.integers(-1000, 1000))
def test_score_does_not_depend_on_where_the_scene_is(pred, truth, dx, dy):
    """Moving proposals and truth together changes nothing (integer shifts: exact areas)."""
    import shapely.affinity as aff

    conf = np.linspace(1, 0, len(pred))
    a, ia = match_greedy(pred, conf, truth, iou_threshold=0.5)
    move = np.vectorize(lambda g: aff.translate(g, dx, dy), otypes=[object])
    b, ib = match_greedy(
        move(pred) if len(pred) else pred,
        conf,
        move(truth) if len(truth) else truth,
        iou_threshold=0.5,
    )
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(ia, ib, atol=1e-12)
