"""Small inline-SVG charts for offline HTML pages: bars, lines, a confusion matrix.

Hand-written rather than a plotting library: the report must be one file that
renders with no network and no JavaScript, and these three shapes are all it needs.
"""

from __future__ import annotations

import html
from collections import Counter
from typing import Any

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd")


def escape(text: Any) -> str:
    return html.escape(str(text))


def _svg(width: float, height: float, title: str, parts: list[str], subtitle: str = "") -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}"><title>{escape(title)}</title>'
            + _text(width / 2, 16, title, "middle", 'class="t"')
            + (_text(width / 2, 32, subtitle, "middle") if subtitle else "")
            + "".join(parts) + "</svg>")


def _text(x: float, y: float, text: str, anchor: str = "start", extra: str = "") -> str:
    shown = text if len(text) <= 44 else text[:43] + "…"     # full text in the tooltip
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" {extra}>{escape(shown)}'
            f"<title>{escape(text)}</title></text>")


def _legend(x: float, y: float, names: list[str]) -> list[str]:
    return [f'<rect x="{x}" y="{y + 16 * i - 9}" width="10" height="10" '
            f'fill="{PALETTE[i % len(PALETTE)]}"/>' + _text(x + 14, y + 16 * i, name)
            for i, name in enumerate(names)]


def bar_chart(title: str, rows: list[str], series: dict[str, list], vmax: float = 0.0) -> str:
    """Horizontal bars: one group per row, one bar per series (None: no bar)."""
    vmax = vmax or max((v for vs in series.values() for v in vs if v is not None),
                       default=1.0) or 1.0
    left, width, bar = 270, 260, 14
    group = bar * len(series) + 6
    parts = []
    for i, row in enumerate(rows):
        y = 28 + i * group
        parts.append(_text(left - 6, y + group / 2, row, "end"))
        for j, value in enumerate(vs[i] for vs in series.values()):
            if value is not None:
                w = width * max(value, 0) / vmax
                parts.append(f'<rect x="{left}" y="{y + j * bar}" width="{w:.1f}" '
                             f'height="{bar - 2}" fill="{PALETTE[j % len(PALETTE)]}"/>'
                             + _text(left + w + 4, y + j * bar + bar - 4, f"{value:.3f}"))
    bottom = 40 + group * len(rows)
    if len(series) > 1:
        parts += _legend(left, bottom + 4, list(series))
        bottom += 16 * len(series)
    return _svg(left + width + 60, bottom + 8, title, parts)


def line_chart(title: str, series: dict[str, list[float]]) -> str:
    """One line per series over epochs 1..n (dvclive's step 0 is epoch 1)."""
    values = [v for vs in series.values() for v in vs]
    if not values:
        return ""
    lo, hi = min(values), max(values)
    lo, hi = (lo - 0.5, hi + 0.5) if hi == lo else (lo, hi)
    epochs = max(len(vs) for vs in series.values())
    left, top, width, height = 50, 30, 300, 170

    def xy(i: int, v: float) -> tuple[float, float]:
        return left + width * i / max(epochs - 1, 1), top + height * (hi - v) / (hi - lo)
    parts = [f'<rect x="{left}" y="{top}" width="{width}" height="{height}" fill="none" '
             'stroke="#999"/>', _text(left + width / 2, top + height + 28, "epoch", "middle")]
    parts += [_text(left - 4, xy(0, v)[1] + 4, f"{v:.3g}", "end") for v in (lo, (lo + hi) / 2, hi)]
    parts += [_text(xy(i, lo)[0], top + height + 14, str(i + 1), "middle") for i in range(epochs)]
    for j, vs in enumerate(series.values()):
        color, points = PALETTE[j % len(PALETTE)], [xy(i, v) for i, v in enumerate(vs)]
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="'
                     + " ".join(f"{x:.1f},{y:.1f}" for x, y in points) + '"/>')
        parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>' for x, y in points]
    parts += _legend(left, top + height + 48, list(series))
    return _svg(left + width + 30, top + height + 48 + 16 * len(series), title, parts)


def heatmap(title: str, subtitle: str, labels: list[str], pairs: list[tuple[str, str]]) -> str:
    """Confusion matrix: a row per actual label, a column per predicted one, counts in cells."""
    labels = list(dict.fromkeys([*labels, *(label for pair in pairs for label in pair)]))
    counts = Counter(pairs)
    most = max(counts.values(), default=1)
    left, top, cell = 120, 56, 36
    parts = [_text(left + cell * len(labels) / 2, top - 6, "predicted →", "middle")]
    for r, actual in enumerate(labels):
        parts.append(_text(left - 6, top + cell * r + cell / 2 + 4, actual, "end"))
        for c, predicted in enumerate(labels):
            n, x, y = counts.get((actual, predicted), 0), left + cell * c, top + cell * r
            parts.append(f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" stroke="#fff" '
                         f'fill="rgba(31,119,180,{0.08 + 0.92 * n / most:.3f})"/>'
                         + _text(x + cell / 2, y + cell / 2 + 4, str(n), "middle",
                                 'fill="#fff"' if n > most / 2 else ""))
    for c, predicted in enumerate(labels):
        x, y = left + cell * c + cell / 2, top + cell * len(labels) + 8
        parts.append(_text(x, y, predicted, "end", f'transform="rotate(-45 {x} {y})"'))
    return _svg(max(left + cell * len(labels) + 20, 300), top + cell * len(labels) + 90,
                title, parts, subtitle)
