"""Stage every full GeoTIFF sample of shared/data into a tile store and print a table.

A smoke run of ``geoseg.tiles.tile`` on all the real imagery geoseg is tested against (the
sensors, dtypes, CRSs and nodata conventions differ per sample), with the labels that come
with each sample. Stores go to a temporary folder that is removed at the end.
Run: ``python pipelines/stage_shared_samples.py [SHARED_DATA]``.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from geoseg.info import describe
from geoseg.tiles.writer import tile

#: name → (inputs relative to shared/data, labels or None)
SAMPLES = {
    "vegas MUL 8b uint8": (
        ["spacenet-vegas-img2144/MUL-PanSharpen_AOI_2_Vegas_img2144_uint8.tif"],
        "spacenet-vegas-img2144/labels.geojson",
    ),
    "vegas RGB 3b uint16": (
        ["spacenet-vegas-img2144/RGB-PanSharpen_AOI_2_Vegas_img2144.tif"],
        None,
    ),
    "vegas R/G/B/N files": (
        ["spacenet-vegas-rgbn"],
        "spacenet-vegas-rgbn/SpaceNet_AOI_2_Las_Vegas-056155973080_01_P001-WV03.gpkg",
    ),
    "atlanta PAN uint16": (
        ["spacenet-atlanta-pan/sample_geotiff.tif"],
        "spacenet-atlanta-pan/geotiff_labels.geojson",
    ),
    "rio 15 chips RGB": (["spacenet-rio/3band"], None),
    "shanghai MUL 8b uint16": (["spacenet-shanghai-mul/MUL_AOI_4_Shanghai_img1920.tif"], None),
    "shanghai PAN uint16": (["spacenet-shanghai-mul/PAN_AOI_4_Shanghai_img1920.tif"], None),
    "massachusetts RGB nodata=255": (
        ["massachusetts-22978945/22978945_15.tif"],
        "massachusetts-22978945/22978945_15.gpkg",
    ),
    "naip RGBN 5 m": (["naip-rgbn-5m/m_4709963_se_14_1_20200831.tif"], None),
}


def main(shared: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix="geoseg-stage-"))
    print(
        "| sample | sources | size | bands | dtype | CRS | tiles | valid % | labels | mean b1 | s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    try:
        for i, (name, (inputs, labels)) in enumerate(SAMPLES.items()):
            start = time.perf_counter()
            store = tile(
                [shared / p for p in inputs],
                work / f"{i}.zarr",
                labels=shared / labels if labels else None,
                tile_size=256,
                overlap=32,
            )
            seconds = time.perf_counter() - start
            info = describe(work / f"{i}.zarr")
            first = store.sources[0]
            valid = store.origin[:, 3].sum() / (store.n_tiles * store.tile_size**2)
            labelled = (
                int(sum((store.label[j] > 0).sum() for j in range(store.n_tiles)))
                if store.has_labels
                else 0
            )
            print(
                f"| {name} | {len(store.sources)} | {first['width']}x{first['height']} "
                f"| {','.join(store.band_names)} | {info['dtype']} | {','.join(info['crs'])} "
                f"| {store.n_tiles} | {100 * valid:.0f} | {labelled} px | "
                f"{store.stats['mean'][0]:.1f} | {seconds:.1f} |"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[1]
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else root.parent / "shared" / "data")
