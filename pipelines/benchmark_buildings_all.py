"""The building benchmark on every labelled scene of ../shared/data: table and F1 chart.

    python pipelines/benchmark_buildings_all.py --out bench/buildings

runs ``pipelines/benchmark_buildings.py`` (one subprocess per scene, the same command a user
runs on a held-out scene) on each scene below, then rewrites the section between
``<!-- building-benchmark:start -->`` and ``<!-- building-benchmark:end -->`` of
docs/results.md and the chart docs/buildings_f1.png. Each scene × method result is cached as
``<out>/<scene>/<method>.json``: a rerun only does what is missing or stale (run with another
METHODS entry than the current one, e.g. after ``default`` changed; ``--redo`` recomputes,
``--report-only`` only rebuilds the section and chart). ``--scenes`` / ``--methods`` pick a
subset.

Scenes and how their truth is staged (``<out>/staged/``):

- vegas: SpaceNet 2 MUL-PanSharpen uint8, bands red, green, blue, NIR1 (5, 3, 2, 7);
  labels.geojson filtered ``label=1`` (the complete building footprints).
- massachusetts: RGB 1 m with its declared nodata=255 kept as declared (no pixel of the scene
  is 255 in all three bands, so it masks nothing); the OSM building GeoPackage.
- atlanta: SpaceNet 4 pan uint16 (nodata 0); geotiff_labels.geojson.
- quebec1, quebec2: RGB 0.3 m / 0.15 m; the {0, 1} masks that declare nodata=0 (background).
- newbrunswick1, newbrunswick2: the two Baker Lake crops; the GeoPackage filtered
  ``Niveau_2=Building``.
- tanzania: the Zanzibar drone crop (7.75 cm); the footprints GeoJSON (every condition).
- loveda0, loveda1, potsdam, vaihingen: PNGs without georeferencing (areas in px²); the class
  PNG turned into a mask: class 2 (building) → 1, the "no-data"/"ignore" class 0 → unknown
  (nodata 255, left out of the pixel IoU), everything else → 0.
- rio (recall only): SpaceNet 1 Rio chips img50-img57 (the contiguous strip of chips with
  labels; img58 has none), mosaicked on one grid with their masks; the labels are known to be
  incomplete, so only recall is meaningful.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_buildings import ABLATIONS, ALL_METHODS, KNOWN_METHODS, spec_of  # noqa: E402

log = logging.getLogger("benchmark_buildings_all")

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("GEOSEG_DATA", ROOT.parent / "shared" / "data"))
START, END = "<!-- building-benchmark:start -->", "<!-- building-benchmark:end -->"
HEADING = "## Building benchmark (leave-scene-out)"
RECALL_ONLY = {"rio"}
COMMAND = "python pipelines/benchmark_buildings_all.py --out bench/buildings"

#: scene → (image, truth, extra arguments); ``staged:`` paths are made by :func:`stage`
SCENES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "vegas": (
        "spacenet-vegas-img2144/MUL-PanSharpen_AOI_2_Vegas_img2144_uint8.tif",
        "spacenet-vegas-img2144/labels.geojson",
        ("--truth-filter", "label=1", "--bands", "5,3,2,7"),
    ),
    "massachusetts": (
        "massachusetts-22978945/22978945_15.tif",
        "massachusetts-22978945/22978945_15.gpkg",
        (),
    ),
    "atlanta": (
        "spacenet-atlanta-pan/sample_geotiff.tif",
        "spacenet-atlanta-pan/geotiff_labels.geojson",
        (),
    ),
    "quebec1": ("quebec-aerial/tiled_image_1.tif", "quebec-aerial/tiled_label_1.tif", ()),
    "quebec2": ("quebec-aerial/tiled_image_2.tif", "quebec-aerial/tiled_label_2.tif", ()),
    "newbrunswick1": (
        "new-brunswick-aerial/23322E759967N_clipped_1m_1of2.tif",
        "new-brunswick-aerial/BakerLake_2017_clipped.gpkg",
        ("--truth-filter", "Niveau_2=Building"),
    ),
    "newbrunswick2": (
        "new-brunswick-aerial/23322E759967N_clipped_1m_2of2.tif",
        "new-brunswick-aerial/BakerLake_2017_clipped.gpkg",
        ("--truth-filter", "Niveau_2=Building"),
    ),
    "tanzania": (
        "tanzania-drone/tanzania_sample.tif",
        "tanzania-drone/tanzania_sample_buildings.geojson",
        (),
    ),
    "loveda0": ("loveda-crops/0.png", "staged:loveda0_mask.tif", ()),
    "loveda1": ("loveda-crops/1.png", "staged:loveda1_mask.tif", ()),
    "potsdam": ("isprs-crops/potsdam_2_10_rgb_512.png", "staged:potsdam_mask.tif", ()),
    "vaihingen": ("isprs-crops/vaihingen_area1_irrg_512.png", "staged:vaihingen_mask.tif", ()),
    "rio": ("staged:rio_mosaic.tif", "staged:rio_mask.tif", ()),
}
CLASS_PNGS = {
    "loveda0": "loveda-crops/0_label.png",
    "loveda1": "loveda-crops/1_label.png",
    "potsdam": "isprs-crops/potsdam_2_10_label_512.png",
    "vaihingen": "isprs-crops/vaihingen_area1_label_512.png",
}
RIO_CHIPS = [f"3band_013022223130_Public_img{i}.tif" for i in range(50, 58)]


# --- staging ----------------------------------------------------------------------------------


def stage(name: str, folder: Path) -> tuple[Path, Path]:
    """The scene's IMAGE and TRUTH paths, writing the staged ones into ``folder`` once."""
    image, truth, _ = SCENES[name]
    folder.mkdir(parents=True, exist_ok=True)
    if name in CLASS_PNGS:
        _class_mask(DATA / CLASS_PNGS[name], folder / truth.removeprefix("staged:"))
    if name == "rio":
        _rio_mosaic(folder)
    return tuple(
        folder / p.removeprefix("staged:") if p.startswith("staged:") else DATA / p
        for p in (image, truth)
    )


def _class_mask(png: Path, out: Path) -> None:
    """Class PNG → mask on the same (non-georeferenced) grid: 2 → 1, 0 → 255 (nodata), else 0."""
    import rasterio
    from PIL import Image

    if out.exists():
        return
    lab = np.asarray(Image.open(png))
    mask = np.where(lab == 0, 255, lab == 2).astype(np.uint8)
    tmp = out.with_suffix(".tmp.tif")
    profile = dict(
        driver="GTiff",
        width=mask.shape[1],
        height=mask.shape[0],
        count=1,
        dtype="uint8",
        nodata=255,
    )
    with rasterio.open(tmp, "w", **profile) as dst:
        dst.write(mask, 1)
    tmp.replace(out)


def _rio_mosaic(folder: Path) -> None:
    """The Rio chips img50-57 and their 0/255 masks merged onto one grid (nearest)."""
    import rasterio
    from rasterio.merge import merge

    for sub, out in (("3band", "rio_mosaic.tif"), ("building_mask_vis", "rio_mask.tif")):
        path = folder / out
        if path.exists():
            continue
        sources = [rasterio.open(DATA / "spacenet-rio" / sub / c) for c in RIO_CHIPS]
        try:
            data, transform = merge(sources, nodata=0 if sub == "3band" else None)
            profile = sources[0].profile
        finally:
            for s in sources:
                s.close()
        # gaps between the slightly shifted chips: nodata in the image, background in the mask
        profile.update(
            driver="GTiff",
            width=data.shape[2],
            height=data.shape[1],
            transform=transform,
            nodata=0 if sub == "3band" else None,
        )
        tmp = path.with_suffix(".tmp.tif")
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(data)
        tmp.replace(path)


# --- running ----------------------------------------------------------------------------------


def stale(path: Path, method: str) -> bool:
    """A result to (re)compute: missing, or run with another spec than the method's current one
    (e.g. the ``default`` entry changed since)."""
    if not path.exists():
        return True
    return json.loads(path.read_text()).get("spec") != spec_of(method)


def run_scene(name: str, methods: list[str], out: Path, redo: bool) -> bool:
    """Run benchmark_buildings.py on one scene for the methods not cached; True when it ran ok."""
    folder = out / name
    todo = [m for m in methods if redo or stale(folder / f"{m}.json", m)]
    if not todo:
        log.info("%s: cached (%s)", name, ", ".join(methods))
        return True
    image, truth = stage(name, out / "staged")
    cmd = [
        sys.executable,
        str(ROOT / "pipelines" / "benchmark_buildings.py"),
        str(image),
        str(truth),
        *SCENES[name][2],
        "--methods",
        ",".join(todo),
        "--out",
        str(folder),
    ]
    log.info("%s: %s", name, " ".join(cmd))
    with open(out / f"{name}.log", "a") as logfile:
        done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=logfile)
    if done.returncode:
        log.error("%s exited %d; see %s", name, done.returncode, out / f"{name}.log")
    return done.returncode == 0


def load(out: Path, scenes: list[str], methods: list[str]) -> dict[str, dict[str, dict]]:
    """Cached records run with the methods' current specs: scene → method → JSON object."""
    rows: dict[str, dict[str, dict]] = {}
    for s in scenes:
        for m in methods:
            path = out / s / f"{m}.json"
            if path.exists() and not stale(path, m):  # results of an older spec: left out
                rows.setdefault(s, {})[m] = json.loads(path.read_text())
    return rows


# --- report -----------------------------------------------------------------------------------


def _spread(rec: dict[str, Any], key: str) -> str:
    """``mean (min–max)`` of a metric over the draws, or the error."""
    if rec.get("error") or rec["mean"].get(key) is None:
        return "error"
    vals = [d[key] for d in rec["draws"] if d.get(key) is not None]
    return f"{np.mean(vals):.2f} ({min(vals):.2f}–{max(vals):.2f})"


def markdown(rows: dict[str, dict[str, dict]], methods: list[str], chart: str) -> str:
    """The section between the markers: protocol, F1 and IoU tables, details, mean row."""
    scored = [s for s in rows if s not in RECALL_ONLY]
    budgets = {m: rec["budget"] for r in rows.values() for m, rec in r.items()}
    commits = sorted({rec["commit"] for r in rows.values() for rec in r.values()})
    loads = [rec.get("load_avg", 0) for r in rows.values() for rec in r.values()]
    lines = [
        f"Produced by `{COMMAND}` (cached per scene × method in `bench/buildings/<scene>/"
        "<method>.json`; `--redo` recomputes, `--report-only` rebuilds this section and the "
        f"chart). One scene by hand: `python pipelines/benchmark_buildings.py IMAGE TRUTH "
        f"[--bands] [--truth-filter COL=VAL] --out DIR --json FILE`. geoseg commits "
        f"{', '.join(commits)}; {os.cpu_count()} CPU cores shared with other agents' jobs "
        f"(1-minute load average {min(loads, default=0):.1f}–{max(loads, default=0):.1f} "
        "when the methods started, so the seconds are inflated and noisy).",
        "",
        "**Protocol** (pipelines/benchmark_buildings.py): each method trains on the scene "
        "without labels; 16 labelled 64×64 tiles are drawn among the full tiles of the grid "
        "anchored at (0, 0) that hold a building, three draws (seeds 0, 1, 2), and name the "
        "clusters (`geoseg.evaluate.fit_mapping`, fit_mapping's default method unless the "
        "entry says otherwise) or fit the peer; a draw whose mapping names no building cluster "
        "scores F1 0. Predict on the whole scene, then SpaceNet F1 (IoU > 0.5, polygons under "
        "20 px² dropped, in m² at the scene's pixel size; truth clipped to the image footprint) "
        "and pixel building IoU over the whole image. Cells: mean over the three draws "
        "(min–max).",
        "",
        "**Budgets**: "
        + "; ".join(f"`{m}`: {_budget_text(m, b)}" for m, b in budgets.items())
        + ".",
        "",
        f"![F1 per scene and method]({chart})",
        "",
        "### SpaceNet F1",
        "",
    ]
    complete = {s: rows[s] for s in scored}
    lines += _table(complete, methods, "f1", scored)
    lines += ["", "### Building IoU (pixels)", ""]
    lines += _table(complete, methods, "iou", scored)
    if RECALL_ONLY & set(rows):
        lines += ["", "### Recall only (incomplete labels)", ""]
        lines += _table({s: rows[s] for s in RECALL_ONLY if s in rows}, methods, "recall", [])
    lines += [
        "",
        "### Details",
        "",
        "| scene | px | method | P | R | TP/FP/FN (mean) | train s | predict s/draw | "
        "wall s | error |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s, recs in rows.items():
        for m in methods:
            r = recs.get(m)
            if r is None:
                continue
            mean = r["mean"]
            tfp = (
                "–"
                if mean.get("tp") is None
                else f"{mean['tp']:.1f}/{mean['fp']:.1f}/{mean['fn']:.1f}"
            )
            px = f"{r['pixel_size']:.3g} {r['units']}"
            lines.append(
                f"| {s} | {px} | {m} | {_f(mean.get('precision'))} | {_f(mean.get('recall'))} "
                f"| {tfp} | {_f(r.get('train_s'), 1)} | {_f(r.get('predict_s'), 1)} | "
                f"{_f(r.get('wall_s'), 0)} | {(r.get('error') or '')[:80]} |"
            )
    total = sum(r.get("wall_s") or 0 for recs in rows.values() for r in recs.values())
    per_scene = {s: sum(r.get("wall_s") or 0 for r in recs.values()) for s, recs in rows.items()}
    lines += [
        "",
        f"Wall time: {total / 60:.1f} min in all; per scene (methods run): "
        + ", ".join(f"{s} {v / 60:.1f} min ({len(rows[s])})" for s, v in per_scene.items())
        + ".",
    ]
    return "\n".join(lines) + "\n"


def _budget_text(method: str, budget: dict[str, Any]) -> str:
    if method == "rf":
        f = budget.get("forest", {})
        return (
            f"{f.get('n_estimators')} trees, min leaf {f.get('min_samples_leaf')}, "
            f"≤ {budget.get('max_samples')} training pixels, σ {budget.get('scales')}"
        )
    keep = [
        o
        for o in budget.get("overrides", [])
        if not o.startswith(
            (
                "schedule.eval",
                "schedule.log",
                "schedule.checkpoint",
                "schedule.steps_per",
                "data.min_valid",
            )
        )
    ]
    extra = f", map {budget['map']}" if budget.get("map") else ""
    extra += f", predict {budget['predict']}" if budget.get("predict") else ""
    return f"{budget.get('train_method')} {' '.join(keep)}{extra}"


def _f(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _table(rows, methods, key: str, scored: list[str]) -> list[str]:
    """Scene × method table of ``key``, with a mean-over-scenes row over ``scored`` scenes."""
    shown = [m for m in methods if any(m in r for r in rows.values())]
    out = ["| scene | " + " | ".join(shown) + " |", "|---|" + "---|" * len(shown)]
    for s, recs in rows.items():
        out.append(
            f"| {s} | "
            + " | ".join(_spread(recs[m], key) if m in recs else "–" for m in shown)
            + " |"
        )
    if scored:
        cells = []
        for m in shown:
            vals = [rows[s][m]["mean"].get(key) for s in scored if m in rows[s]]
            vals = [0.0 if v is None else v for v in vals]  # a failed method counts as 0
            n = len(vals)
            cells.append(f"**{np.mean(vals):.3f}** ({n})" if vals else "–")
        out.append("| **mean over scenes** (n) | " + " | ".join(cells) + " |")
        common = [s for s in scored if all(m in rows[s] for m in shown)]
        if 0 < len(common) < len(scored):  # means over different scene sets do not compare
            cells = [
                f"{np.mean([rows[s][m]['mean'].get(key) or 0.0 for s in common]):.3f}"
                for m in shown
            ]
            label = f"mean over the {len(common)} scenes every method ran on"
            out.append(f"| {label} | " + " | ".join(cells) + " |")
    return out


def ablation(rows: dict[str, dict[str, dict]]) -> str:
    """The ablation table: ``default`` and each variant that removes one component, on the
    scenes where every variant ran (the same scenes, draws and training for all)."""
    methods = ["default", *ABLATIONS]
    # every scene where default and some variant ran; a variant missing on some scenes gets
    # its own "mean over the scenes every method ran on" row (see _table)
    scenes = {
        s: r
        for s, r in rows.items()
        if s not in RECALL_ONLY and "default" in r and any(m in r for m in ABLATIONS)
    }
    if not scenes:
        return ""
    lines = [
        "",
        "### Ablation of `default`",
        "",
        "Each column removes one component of `default` (same scenes, draws and unsupervised "
        "training): `default-naming` names the k-means clusters by IoU instead of fitting a "
        "head; `default-linear` uses a logistic-regression head instead of the one-hidden-layer "
        "head; `default-no-superpixels` skips the superpixel averaging; `default-no-clusters` "
        "feeds the head the feature pyramid only, not the cluster probabilities; "
        "`default-no-cleanup` keeps specks under 10 m² and holes; `default-superpixels-px` sets "
        "the superpixels' parameters in pixels whatever the resolution (default sets them in "
        "metres from the scene's pixel size; a scene without georeferencing, like the PNGs, "
        "keeps the pixel ones); `default-pyramid-m` sizes the feature pyramid's blurs and "
        "top-hats in metres from the tile store's pixel size (`baseline.pyramid_metres`: the "
        "pixel scales at 0.5 m, factor clamped to 0.5–2; tried, not adopted; 0.5 m scenes and "
        "PNGs train exactly as `default`); `default-cv-threshold` chooses the head's threshold "
        "on out-of-fold probabilities (4 folds of labelled tiles, each scored by a head fitted "
        'without it; `calibration="folds"`; tried, not adopted). Produced by the same command '
        "with `--methods " + ",".join(ABLATIONS) + "` (then `--report-only`).",
        "",
        "SpaceNet F1, mean (min–max) over the three draws:",
        "",
    ]
    lines += _table(scenes, methods, "f1", list(scenes))
    lines += ["", "Building IoU:", ""]
    lines += _table(scenes, methods, "iou", list(scenes))
    return "\n".join(lines) + "\n"


def write_section(results: Path, text: str) -> None:
    """Replace the text between the markers (append heading + markers if missing), atomically."""
    old = results.read_text() if results.exists() else "# Results\n"
    block = f"{START}\n{text}{END}"
    if START in old and END in old:
        new = old[: old.index(START)] + block + old[old.index(END) + len(END) :]
    else:
        new = old.rstrip("\n") + f"\n\n{HEADING}\n\n{block}\n"
    tmp = results.with_name(f".{results.name}.tmp")
    tmp.write_text(new)
    os.replace(tmp, results)


def chart(rows: dict[str, dict[str, dict]], methods: list[str], path: Path) -> None:
    """Grouped bar chart of mean F1 per scene (groups) and method (bars), drawn with Pillow
    (matplotlib is not a geoseg dependency); whiskers span the three draws."""
    from PIL import Image, ImageDraw, ImageFont

    scenes = list(rows)
    shown = [m for m in methods if any(m in r for r in rows.values())]
    colours = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
    ]
    bar, gap, left, top, plot_h = 9, 14, 60, 40, 300
    group = bar * len(shown) + gap
    width = max(left + group * max(1, len(scenes)) + 20, 40 + 95 * len(shown), 620)
    img = Image.new("RGB", (width, top + plot_h + 110), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    y0 = top + plot_h
    for tick in np.linspace(0, 1, 6):
        y = y0 - tick * plot_h
        d.line([(left - 4, y), (width - 10, y)], fill=(225, 225, 225))
        d.text((8, y - 6), f"{tick:.1f}", fill="black", font=font)
    d.line([(left, top), (left, y0), (width - 10, y0)], fill="black")
    d.text(
        (left, 8),
        "SpaceNet F1 per scene and method (mean of 3 tile draws; whiskers: "
        "min-max; rio: recall, labels incomplete)",
        fill="black",
        font=font,
    )
    for i, s in enumerate(scenes):
        x = left + gap // 2 + i * group
        key = "recall" if s in RECALL_ONLY else "f1"
        for j, m in enumerate(shown):
            rec = rows[s].get(m)
            if rec is None or rec["mean"].get(key) is None:
                continue
            vals = [dd[key] for dd in rec["draws"] if dd.get(key) is not None]
            x0 = x + j * bar
            d.rectangle(
                [x0, y0 - np.mean(vals) * plot_h, x0 + bar - 2, y0],
                fill=colours[methods.index(m) % len(colours)],
            )
            cx = x0 + (bar - 2) / 2
            d.line([(cx, y0 - min(vals) * plot_h), (cx, y0 - max(vals) * plot_h)], fill="black")
        label = Image.new("RGBA", (90, 12), (255, 255, 255, 0))
        ImageDraw.Draw(label).text((0, 0), s, fill="black", font=font)
        label = label.rotate(-45, expand=True)
        img.paste(label, (int(x), y0 + 4), label)
    for j, m in enumerate(shown):
        lx = left + j * 95
        d.rectangle([lx, y0 + 92, lx + 10, y0 + 102], fill=colours[methods.index(m) % len(colours)])
        d.text((lx + 14, y0 + 91), m, fill="black", font=font)
    tmp = path.with_name(f".{path.name}.tmp.png")
    img.save(tmp)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", default=",".join(SCENES))
    parser.add_argument("--methods", default=",".join(ALL_METHODS))
    parser.add_argument("--out", type=Path, required=True, help="cache and working folder")
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "results.md")
    parser.add_argument("--chart", type=Path, default=ROOT / "docs" / "buildings_f1.png")
    parser.add_argument("--redo", action="store_true", help="recompute cached results")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    scenes = [s for s in args.scenes.split(",") if s]
    methods = [m for m in args.methods.split(",") if m]
    bad = [s for s in scenes if s not in SCENES] + [m for m in methods if m not in KNOWN_METHODS]
    if bad:
        parser.error(
            f"unknown scene/method {bad[0]!r}; choose from {', '.join(SCENES)} / "
            f"{', '.join(ALL_METHODS)}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    failed = []
    for s in [] if args.report_only else scenes:
        if not run_scene(s, methods, args.out, args.redo):
            failed.append(s)
    rows = load(args.out, list(SCENES), list(ALL_METHODS))
    if rows:
        rel = os.path.relpath(args.chart, args.results.parent)
        text = markdown(rows, list(ALL_METHODS), rel)
        text += ablation(load(args.out, list(SCENES), ["default", *ABLATIONS]))
        write_section(args.results, text)
        chart(rows, list(ALL_METHODS), args.chart)
        print(text)
    if failed:
        log.error("failed scenes: %s", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
