"""Inline SVG charts drawn on the server: no script library, nothing fetched from a network.

Each function returns an SVG fragment; every text in it is escaped. Colours come from CSS
classes (``s0``..``s3``), so the console's stylesheet decides the look and the page keeps a
strict Content-Security-Policy (no inline styles, no inline scripts).
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence

__all__ = ["bucket_labels", "histogram_chart", "line_chart", "meter", "sparkbars"]

Point = tuple[float, float]


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _nice_max(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k at or above ``value`` (a readable axis top)."""
    if value <= 0:
        return 1.0
    magnitude = 10.0 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * magnitude >= value * (1 - 1e-12):
            return float(step * magnitude)
    return 10.0 * magnitude


def _num(value: float) -> str:
    if value >= 100 or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def bucket_labels(bounds_ms: Sequence[float]) -> list[str]:
    """Short labels for buckets over ``bounds_ms`` (the last one open-ended): ``≤0.5``,
    ``≤1s``, ``>10s``; milliseconds unless marked ``s``."""
    def unit(ms: float) -> str:
        return f"{ms / 1000:g}s" if ms >= 1000 else f"{ms:g}"
    labels = [f"≤{unit(b)}" for b in bounds_ms]
    if bounds_ms:
        labels.append(f">{unit(bounds_ms[-1])}")
    return labels


def line_chart(series: Sequence[tuple[str, Sequence[Point]]], *, t0: float, t1: float,
               width: int = 560, height: int = 170,
               fmt: Callable[[float], str] = _num, title: str = "") -> str:
    """Lines over time: ``series`` is ``(label, [(t, value), ...])``, drawn in order."""
    left, right, top, bottom = 52, 10, 10, 22
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for _, pts in series for _, v in pts]
    enough = any(len(pts) >= 2 for _, pts in series)
    y_max = _nice_max(max(values, default=0.0))
    span = max(t1 - t0, 1e-9)
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{_esc(title)}">']
    for frac in (0.0, 0.5, 1.0):
        y = top + plot_h * (1 - frac)
        parts.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y:.1f}" '
                     f'y2="{y:.1f}"/>')
        parts.append(f'<text class="axis" x="{left - 6}" y="{y + 4:.1f}" '
                     f'text-anchor="end">{_esc(fmt(y_max * frac))}</text>')
    ago = f"-{span:.0f} s" if span < 120 else f"-{span / 60:.0f} min"
    parts.append(f'<text class="axis" x="{left}" y="{height - 6}">{_esc(ago)}</text>')
    parts.append(f'<text class="axis" x="{width - right}" y="{height - 6}" '
                 'text-anchor="end">now</text>')
    if not enough:
        parts.append(f'<text class="empty" x="{left + plot_w / 2:.0f}" y="{top + plot_h / 2:.0f}"'
                     ' text-anchor="middle">collecting samples…</text>')
    for index, (label, pts) in enumerate(series):
        if len(pts) < 2:
            continue
        coords = " ".join(
            f"{left + plot_w * (t - t0) / span:.1f},{top + plot_h * (1 - v / y_max):.1f}"
            for t, v in pts)
        parts.append(f'<polyline class="line s{index % 4}" points="{coords}">'
                     f'<title>{_esc(label)}</title></polyline>')
    parts.append("</svg>")
    legend = "".join(f'<span class="key"><span class="swatch s{i % 4}"></span>{_esc(label)}'
                     f'</span>' for i, (label, _) in enumerate(series))
    return "".join(parts) + f'<div class="legend">{legend}</div>'


def histogram_chart(labels: Sequence[str], counts: Sequence[float], *, width: int = 560,
                    height: int = 160, title: str = "") -> str:
    """Vertical bars, one per bucket, with the count above each non-empty bar."""
    left, right, top, bottom = 8, 8, 18, 34
    n = max(len(counts), 1)
    plot_w, plot_h = width - left - right, height - top - bottom
    slot = plot_w / n
    peak = max(counts, default=0) or 1
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{_esc(title)}">',
             f'<line class="grid" x1="{left}" x2="{width - right}" y1="{top + plot_h}" '
             f'y2="{top + plot_h}"/>']
    for i, (label, count) in enumerate(zip(labels, counts, strict=False)):
        h = plot_h * (count / peak)
        x = left + slot * i + slot * 0.12
        w = slot * 0.76
        parts.append(f'<rect class="bar" x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{w:.1f}" '
                     f'height="{h:.1f}"><title>{_esc(label)}: {_esc(_num(count))}</title></rect>')
        if count:
            parts.append(f'<text class="count" x="{x + w / 2:.1f}" y="{top + plot_h - h - 4:.1f}"'
                         f' text-anchor="middle">{_esc(_num(count))}</text>')
        parts.append(f'<text class="axis" x="{x + w / 2:.1f}" y="{height - 18}" '
                     f'text-anchor="middle">{_esc(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def sparkbars(counts: Sequence[float], labels: Sequence[str] = (), *, width: int = 120,
              height: int = 24) -> str:
    """A small bar strip for a table cell (e.g. one fingerprint's latency histogram)."""
    n = max(len(counts), 1)
    peak = max(counts, default=0) or 1
    slot = width / n
    parts = [f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" '
             f'height="{height}">']
    for i, count in enumerate(counts):
        h = max(height * count / peak, 1.0 if count else 0.0)
        label = labels[i] if i < len(labels) else f"bucket {i}"
        parts.append(f'<rect class="bar" x="{slot * i + 0.5:.1f}" y="{height - h:.1f}" '
                     f'width="{max(slot - 1, 1):.1f}" height="{h:.1f}"><title>{_esc(label)}: '
                     f'{_esc(_num(count))}</title></rect>')
    parts.append("</svg>")
    return "".join(parts)


def meter(fraction: float | None, *, width: int = 100) -> str:
    """A horizontal fill bar for 0..1 (over 1 is drawn full and marked ``over``)."""
    if fraction is None:
        return ""
    frac = max(0.0, fraction)
    cls = "over" if frac >= 0.9 else "fill"
    return (f'<svg class="meter" viewBox="0 0 {width} 6" preserveAspectRatio="none">'
            f'<rect class="track" width="{width}" height="6"/>'
            f'<rect class="{cls}" width="{min(frac, 1.0) * width:.1f}" height="6"/></svg>')
