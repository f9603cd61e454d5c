"""``geoseg report``: one self-contained HTML page, checked the way a reader sees it.

A crop of the real bundled SpaceNet Vegas scene goes through tile → k-means → predict (with a
building class) → score (with error layers); the report of that folder is then rendered by a
real headless Chromium, and the screenshot must show drawn maps, not a blank page.
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from geoseg.cli import main

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
CHROMIUM = next(filter(None, map(shutil.which, BROWSERS)), None)
EMBEDDED = ("data:image/png;base64,", "data:image/svg+xml;base64,")


def geoseg(capsys, *args) -> tuple[int, str]:
    """Run the real entry point (exit codes as a shell sees them); (code, stderr)."""
    with pytest.raises(SystemExit) as exit_:
        main(["-q", *map(str, args)])
    return exit_.value.code, capsys.readouterr().err


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A run + prediction + score folder made from a 160 x 128 crop of the Vegas sample."""
    import rasterio
    from rasterio.windows import Window

    from geoseg.demo import sample_paths
    from geoseg.evaluate.spacenet import score
    from geoseg.predict.raster import predict
    from geoseg.tiles.writer import tile
    from geoseg.train.loop import train

    root = tmp_path_factory.mktemp("report")
    image, labels = sample_paths()
    crop = root / "crop.tif"
    with rasterio.open(image) as src:
        window = Window(100, 200, 128, 160)
        profile = src.profile | {
            "width": 128,
            "height": 160,
            "transform": src.window_transform(window),
        }
        with rasterio.open(crop, "w", **profile) as dst:
            dst.write(src.read(window=window))
    store = tile([crop], root / "tiles.zarr", bands="red,green,blue,nir1", tile_size=64, overlap=0)
    ckpt = train(store, root / "run", method="kmeans", overrides=["n_clusters=5"], device="cpu")
    written = predict(crop, ckpt, root / "out", classes={"building": [0, 1]}, device="cpu")
    result = score(written["building:vector"], labels, truth_filter="label=1", min_area=1.0)
    result.write_layers(root / "out" / "score_layers.gpkg")
    return root, result.total


def _images(html: str) -> list[str]:
    return re.findall(r'<img[^>]*\ssrc="([^"]+)"', html)


def test_report_embeds_every_image_and_shows_the_score(folder, capsys):
    root, total = folder
    code, err = geoseg(capsys, "report", root, "--overwrite")
    assert code == 0, err
    html = (root / "report.html").read_text()
    sources = _images(html)
    # image, clusters, building, error map, quicklook, and at least the loss curve
    assert len(sources) >= 6
    assert all(
        s.startswith(("data:image/png;base64,", "data:image/svg+xml;base64,")) for s in sources
    )
    assert not re.search(r'(src|href)="(?!data:)', html), "the page links a file"
    for title in ("Error map", "Image (red, green, blue)", "Clusters:", "Class:", "loss"):
        assert title in html
    assert "m</text>" not in html  # scale bars are drawn in the PNGs, not left as SVG text
    row = re.search(r"<th>F1</th></tr><tr>(.*?)</tr>", html).group(1)
    cells = re.findall(r"<td>([^<]*)</td>", row)
    assert [int(c) for c in cells[:3]] == [total["tp"], total["fp"], total["fn"]]
    assert float(cells[5]) == pytest.approx(total["f1"], abs=5e-5)


def test_error_map_draws_each_layer_in_its_colour(folder, capsys):
    from PIL import Image

    from geoseg.report.errormap import LAYER_COLOURS

    root, total = folder
    assert geoseg(capsys, "report", root, "-o", root / "e.html", "--overwrite")[0] == 0
    html = (root / "e.html").read_text()
    uri = re.search(r'alt="Error map" src="data:image/png;base64,([^"]+)"', html).group(1)
    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri))).convert("RGB"))
    for name, colour in LAYER_COLOURS.items():
        drawn = (pixels == colour).all(axis=-1).sum()
        assert (drawn > 0) == (total[name] > 0), (name, drawn, total[name])


@pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("GEOSEG_REQUIRE_BROWSER"),
    reason="no chromium on PATH (apt-get install chromium)",
)
def test_report_renders_in_headless_chromium(folder, tmp_path, capsys):
    from PIL import Image

    if CHROMIUM is None:  # GEOSEG_REQUIRE_BROWSER=1 (CI): a missing browser fails
        pytest.fail("no chromium on PATH; install it with `apt-get install -y chromium`")
    root, _ = folder
    page = tmp_path / "page.html"
    assert geoseg(capsys, "report", root, "-o", page)[0] == 0
    shot = tmp_path / "shot.png"
    run = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1200,1600",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.exists(), run.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3)
    not_white = (pixels < 240).any(axis=1).mean()
    colours = len(np.unique(pixels, axis=0))
    # a blank or unstyled page is >95% white with a handful of text greys
    assert not_white > 0.2, f"only {not_white:.0%} of the page is drawn"
    assert colours > 1000, f"{colours} colours: the embedded images did not render"


def test_report_refuses_a_folder_without_geoseg_outputs(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("nothing here")
    code, err = geoseg(capsys, "report", tmp_path)
    assert code == 2
    assert err.startswith("Error: DIR:") and "geoseg train, predict" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "report.html").exists()


def test_report_refuses_to_overwrite_without_the_flag(folder, capsys):
    root, _ = folder
    target = root / "again.html"
    target.write_text("keep me")
    code, err = geoseg(capsys, "report", root, "-o", target)
    assert code == 2 and "--overwrite" in err
    assert target.read_text() == "keep me"
