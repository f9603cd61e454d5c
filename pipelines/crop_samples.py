"""Cut the small real crops in tests/data/crops from the samples in shared/data.

Each crop is a window of a real scene written with its own georeferencing (window transform,
CRS, nodata, band descriptions), DEFLATE-compressed so the whole set stays a few hundred KB.
Run from the repository root: ``python pipelines/crop_samples.py [SHARED_DATA] [OUT]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import rasterio
from rasterio.windows import Window

#: output name → (sample path under shared/data, window as (col_off, row_off, width, height))
CROPS = {
    "vegas_mul8_uint8.tif": (
        "spacenet-vegas-img2144/MUL-PanSharpen_AOI_2_Vegas_img2144_uint8.tif",
        (200, 260, 96, 80),
    ),
    "vegas_rgb_uint16.tif": (
        "spacenet-vegas-img2144/RGB-PanSharpen_AOI_2_Vegas_img2144.tif",
        (200, 260, 96, 80),
    ),
    "shanghai_mul8_uint16.tif": (
        "spacenet-shanghai-mul/MUL_AOI_4_Shanghai_img1920.tif",
        (130, 130, 64, 48),
    ),
    "atlanta_pan_uint16.tif": ("spacenet-atlanta-pan/sample_geotiff.tif", (400, 400, 128, 96)),
    "naip_rgbn_uint8.tif": ("naip-rgbn-5m/m_4709963_se_14_1_20200831.tif", (400, 300, 96, 72)),
    "massachusetts_rgb_nodata255.tif": (
        "massachusetts-22978945/22978945_15.tif",
        (500, 400, 96, 80),
    ),
}
_RGBN = "spacenet-vegas-rgbn/SpaceNet_AOI_2_Las_Vegas-056155973080_01_P001-WV03-{}.tif"
for _band in "RGBN":
    CROPS[f"vegas_rgbn/vegas_rgbn-{_band}.tif"] = (_RGBN.format(_band), (150, 150, 80, 64))


def crop(src_path: Path, dst_path: Path, window: tuple[int, int, int, int]) -> None:
    """Copy ``window`` of ``src_path`` into a compressed GeoTIFF that keeps georeferencing."""
    with rasterio.open(src_path) as src:
        win = Window(*window)
        data = src.read(window=win)
        profile = src.profile.copy()
        profile.update(
            driver="GTiff",
            width=win.width,
            height=win.height,
            transform=src.window_transform(win),
            compress="deflate",
            predictor=2,
            tiled=False,
        )
        for key in ("blockxsize", "blockysize", "photometric"):
            profile.pop(key, None)
        dst_path.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(dst_path, "w", **profile) as dst:
            dst.write(data)
            for i, d in enumerate(src.descriptions, start=1):
                if d:
                    dst.set_band_description(i, d)


def main(shared: Path, out: Path) -> None:
    for name, (rel, window) in CROPS.items():
        crop(shared / rel, out / name, window)
        print(f"{out / name}: {(out / name).stat().st_size} bytes from {rel} window {window}")


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[1]
    shared = Path(sys.argv[1]) if len(sys.argv) > 1 else root.parent / "shared" / "data"
    main(shared, Path(sys.argv[2]) if len(sys.argv) > 2 else root / "tests" / "data" / "crops")
