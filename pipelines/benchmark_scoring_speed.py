"""Wall time of ``geoseg.evaluate.score`` on 100k synthetic building polygons.

Builds, under a temporary folder (not committed), a truth/proposal pair of N buildings each:
rotated rectangles of 20–200 m² on a jittered grid; every proposal is its building moved and
resized at random (about two thirds stay above IoU 0.5), 10 % of buildings are missed and as
many spurious proposals added, confidences random. Two layouts are scored:

1. SpaceNet CSV (pixel coordinates), N / 1000 images of 1000 buildings each;
2. one GeoPackage pair in EPSG:32611 (a single 100k-polygon "image"), proposals reprojected
   to EPSG:4326 so the CRS path is timed too.

Each run reports wall and CPU time of the whole ``score`` call (read, reproject, match,
count) and the counts; the matcher alone is also timed.
Run: ``python pipelines/benchmark_scoring_speed.py [--n 100000]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from geoseg.evaluate import score
from geoseg.evaluate.spacenet import match_greedy


def buildings(n: int, rng: np.random.Generator, spacing: float = 30.0) -> np.ndarray:
    """``n`` rotated rectangles on a jittered square grid, ``spacing`` apart."""
    side = int(np.ceil(np.sqrt(n)))
    idx = np.arange(n)
    cx = (idx % side) * spacing + rng.uniform(-3, 3, n)
    cy = (idx // side) * spacing + rng.uniform(-3, 3, n)
    w, h = rng.uniform(4, 15, n), rng.uniform(5, 14, n)
    angle = rng.uniform(0, np.pi, n)
    corners = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]])
    x = corners[None, :, 0] * w[:, None]
    y = corners[None, :, 1] * h[:, None]
    cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]
    xs, ys = cx[:, None] + x * cos - y * sin, cy[:, None] + x * sin + y * cos
    rings = np.stack([xs, ys], axis=-1)
    return shapely.polygons(np.concatenate([rings, rings[:, :1]], axis=1))


def proposals(truth: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    n = len(truth)
    keep = rng.random(n) > 0.1
    moved = np.array(
        [
            shapely.affinity.translate(shapely.affinity.scale(g, s, s), dx, dy)
            for g, s, dx, dy in zip(
                truth[keep],
                rng.uniform(0.8, 1.25, keep.sum()),
                rng.normal(0, 1.5, keep.sum()),
                rng.normal(0, 1.5, keep.sum()),
                strict=True,
            )
        ]
    )
    extra = shapely.buffer(
        shapely.points(rng.uniform(0, np.sqrt(n) * 30, (n - keep.sum(), 2))), 3.0, quad_segs=2
    )
    geoms = np.concatenate([moved, extra])
    return geoms, rng.random(len(geoms))


def timed(fn, *args, **kwargs):
    """``(result, "wall s / CPU s")``: CPU time is the steadier number on a shared machine."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, f"{time.perf_counter() - start:.2f} s wall / {time.process_time() - cpu:.2f} s CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="buildings (and ~proposals)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    truth = buildings(args.n, rng)
    props, conf = proposals(truth, rng)
    print(f"{len(truth)} truth polygons, {len(props)} proposals")

    (matched, _), t_match = timed(match_greedy, props, conf, truth)
    print(f"match_greedy alone: {t_match}, TP {(matched >= 0).sum()}")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        per_image = 1000
        origin = shapely.bounds(truth)[:, :2].min(axis=0)

        def rows(geoms, image_of, confidence=None):
            frame = pd.DataFrame(
                {
                    "ImageId": [f"AOI_9_Bench_img{i}" for i in image_of],
                    "BuildingId": np.arange(len(geoms)),
                    "PolygonWKT_Pix": shapely.to_wkt(
                        shapely.transform(geoms, lambda xy: (xy - origin) / 0.3),
                        rounding_precision=2,
                    ),
                }
            )
            if confidence is not None:
                frame["Confidence"] = confidence
            return frame

        # images by grid block of truth; proposals take their nearest truth's image
        t_img = np.arange(len(truth)) // per_image
        nearest = shapely.STRtree(truth).query_nearest(
            props, return_distance=False, all_matches=False
        )
        p_img = t_img[nearest[1][np.argsort(nearest[0])]]
        rows(truth, t_img).to_csv(tmp / "truth.csv", index=False)
        rows(props, p_img, conf).to_csv(tmp / "pred.csv", index=False)
        r, t_csv = timed(score, tmp / "pred.csv", tmp / "truth.csv", min_area=0)
        print(
            f"CSV, {len(np.unique(t_img))} images: score {t_csv} -> TP {r.total['tp']} "
            f"FP {r.total['fp']} FN {r.total['fn']} F1 {r.total['f1']:.4f}"
        )

        shifted = shapely.transform(props, lambda xy: xy + [500000.0, 4000000.0])
        gpd.GeoDataFrame({"confidence": conf}, geometry=shifted, crs="EPSG:32611").to_crs(
            "EPSG:4326"
        ).to_file(tmp / "pred.gpkg")
        gpd.GeoDataFrame(
            geometry=shapely.transform(truth, lambda xy: xy + [500000.0, 4000000.0]),
            crs="EPSG:32611",
        ).to_file(tmp / "truth.gpkg")
        r, t_gpkg = timed(score, tmp / "pred.gpkg", tmp / "truth.gpkg", min_area=0)
        print(
            f"GeoPackage (pred EPSG:4326 vs truth EPSG:32611): score {t_gpkg} -> TP "
            f"{r.total['tp']} FP {r.total['fp']} FN {r.total['fn']} F1 {r.total['f1']:.4f}"
        )


if __name__ == "__main__":
    main()
