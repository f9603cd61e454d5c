"""Training curves from a run's ``metrics.csv``, drawn as small SVG line charts.

SVG needs no plotting library and stays sharp at any zoom. One chart per metric that has
numbers (loss, mutual information, entropy, clusters used, and the label metrics when the
store had labels); one line per split and head, so train and validation can be compared.
"""

from __future__ import annotations

import csv
import math
from html import escape
from pathlib import Path

#: metrics.csv column → chart title (the order charts appear in)
METRICS = {
    "loss": "loss",
    "mi": "mutual information between views (nats)",
    "entropy": "cluster entropy (nats; log K = every cluster used)",
    "clusters_used": "clusters used",
    "hungarian_acc": "Hungarian accuracy (monitoring labels)",
    "miou": "mIoU (monitoring labels)",
}
#: line colours, distinguishable for the common colour-vision deficiencies (Okabe-Ito)
COLOURS = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#000000")
WIDTH, HEIGHT, MARGIN = 440, 230, 58


def read_series(path: str | Path) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """``{metric: {"train main": [(step, value), ...], ...}}`` for every numeric metric."""
    with Path(path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    heads = {r.get("head", "") for r in rows}
    out: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for metric in METRICS:
        for row in rows:
            value = _number(row.get(metric))
            step = _number(row.get("step"))
            if value is None or step is None:
                continue
            name = row.get("split", "") + (f" {row.get('head', '')}" if len(heads) > 1 else "")
            out.setdefault(metric, {}).setdefault(name.strip() or metric, []).append((step, value))
    return out


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def line_chart(title: str, series: dict[str, list[tuple[float, float]]]) -> str:
    """A self-contained SVG: axes with min/max ticks, one polyline per series, a legend."""
    points = [p for line in series.values() for p in line]
    x_lo, x_hi = min(p[0] for p in points), max(p[0] for p in points)
    y_lo, y_hi = min(p[1] for p in points), max(p[1] for p in points)
    if y_hi == y_lo:
        y_lo, y_hi = y_lo - 0.5, y_hi + 0.5
    x_hi = x_hi if x_hi > x_lo else x_lo + 1
    plot_w, plot_h = WIDTH - 2 * MARGIN, HEIGHT - 2 * MARGIN

    def xy(x: float, y: float) -> str:
        px = MARGIN + (x - x_lo) / (x_hi - x_lo) * plot_w
        py = MARGIN + (1 - (y - y_lo) / (y_hi - y_lo)) * plot_h
        return f"{px:.1f},{py:.1f}"

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{MARGIN}" y="18" font-size="12" font-weight="bold">{escape(title)}</text>',
        f'<rect x="{MARGIN}" y="{MARGIN}" width="{plot_w}" height="{plot_h}" fill="none" '
        'stroke="#999"/>',
        f'<text x="{MARGIN - 4}" y="{MARGIN + 4}" text-anchor="end">{y_hi:.3g}</text>',
        f'<text x="{MARGIN - 4}" y="{MARGIN + plot_h}" text-anchor="end">{y_lo:.3g}</text>',
        f'<text x="{MARGIN}" y="{MARGIN + plot_h + 14}">{x_lo:g}</text>',
        f'<text x="{MARGIN + plot_w}" y="{MARGIN + plot_h + 14}" text-anchor="end">{x_hi:g}</text>',
        f'<text x="{MARGIN + plot_w / 2}" y="{MARGIN + plot_h + 14}" text-anchor="middle">'
        "step</text>",
    ]
    for i, (name, line) in enumerate(sorted(series.items())):
        colour = COLOURS[i % len(COLOURS)]
        coords = " ".join(xy(x, y) for x, y in sorted(line))
        parts.append(
            f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="1.6"/>'
        )
        if len(line) == 1:
            cx, cy = xy(*line[0]).split(",")
            parts.append(f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{colour}"/>')
        lx = MARGIN + i * 90
        parts.append(
            f'<rect x="{lx}" y="{HEIGHT - 14}" width="12" height="3" fill="{colour}"/>'
            f'<text x="{lx + 16}" y="{HEIGHT - 10}">{escape(name)}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


def training_charts(path: str | Path) -> list[tuple[str, str]]:
    """``[(title, svg), ...]`` for the metrics of ``metrics.csv`` that hold numbers."""
    series = read_series(path)
    return [(METRICS[m], line_chart(METRICS[m], series[m])) for m in METRICS if m in series]
