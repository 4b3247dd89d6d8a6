"""Small SVG line charts written by hand (no plotting dependency): a grid of panels sharing one x axis.

Each panel has one or more series (points joined by lines, with markers) and optional horizontal target
lines; the x axis is logarithmic when the x values span more than a decade (the e2e sweep: 500..50,000 tags).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")
_W, _H = 360, 230  # one panel
_L, _R, _T, _B = 62, 14, 30, 40  # margins inside a panel


@dataclass
class Series:
    label: str
    points: list[tuple[float, float]]  # NaN y values are left out


@dataclass
class Panel:
    title: str
    series: list[Series]
    targets: list[tuple[str, float]] = field(default_factory=list)  # (label, y)


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 2) if first + i * step <= hi + step / 2]


def _fmt(v: float) -> str:
    if abs(v) >= 1000:
        return f"{v / 1000:g}k"
    return f"{v:g}"


def svg_panels(title: str, panels: list[Panel], x_label: str, x_ticks: list[float], columns: int = 2) -> str:
    """The SVG document: ``panels`` in a grid of ``columns``, each plotted against the shared ``x_ticks``."""
    xs = [x for p in panels for s in p.series for x, _ in s.points] + list(x_ticks)
    x_lo, x_hi = min(xs), max(xs)
    log_x = x_lo > 0 and x_hi / x_lo > 10
    if log_x:
        x_lo, x_hi = math.log10(x_lo) - 0.08, math.log10(x_hi) + 0.08
    elif x_hi == x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    rows = math.ceil(len(panels) / columns)
    width, height = columns * _W, rows * _H + 34
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">'
           f'{escape(title)}</text>']
    for i, panel in enumerate(panels):
        ox, oy = (i % columns) * _W, 34 + (i // columns) * _H
        out.append(_panel(panel, ox, oy, (x_lo, x_hi), log_x, x_label, x_ticks))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _panel(panel: Panel, ox: float, oy: float, xr: tuple[float, float], log_x: bool, x_label: str,
           x_ticks: list[float]) -> str:
    pw, ph = _W - _L - _R, _H - _T - _B
    ys = [y for s in panel.series for _, y in s.points if not math.isnan(y)] + [t for _, t in panel.targets]
    y_hi = max(ys, default=1.0) * 1.1 or 1.0
    y_ticks = _nice_ticks(0.0, y_hi)
    y_hi = max(y_ticks[-1], y_hi)

    def px(x: float) -> float:
        v = math.log10(x) if log_x else x
        return ox + _L + (v - xr[0]) / (xr[1] - xr[0]) * pw

    def py(y: float) -> float:
        return oy + _T + ph - y / y_hi * ph

    parts = [f'<text x="{ox + _W / 2}" y="{oy + 16}" text-anchor="middle" font-weight="bold">'
             f'{escape(panel.title)}</text>',
             f'<rect x="{ox + _L}" y="{oy + _T}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>']
    for t in y_ticks:
        if t > y_hi:
            continue
        y = py(t)
        parts.append(f'<line x1="{ox + _L}" y1="{y:.1f}" x2="{ox + _L + pw}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{ox + _L - 4}" y="{y + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    for t in x_ticks:
        x = px(t)
        parts.append(f'<line x1="{x:.1f}" y1="{oy + _T}" x2="{x:.1f}" y2="{oy + _T + ph}" stroke="#eee"/>')
        parts.append(f'<text x="{x:.1f}" y="{oy + _T + ph + 14}" text-anchor="middle">{_fmt(t)}</text>')
    parts.append(f'<text x="{ox + _L + pw / 2}" y="{oy + _H - 8}" text-anchor="middle" fill="#444">'
                 f'{escape(x_label)}</text>')
    for label, t in panel.targets:
        y = py(t)
        parts.append(f'<line x1="{ox + _L}" y1="{y:.1f}" x2="{ox + _L + pw}" y2="{y:.1f}" stroke="#e377c2" '
                     f'stroke-dasharray="5,3"/>')
        parts.append(f'<text x="{ox + _L + pw - 3}" y="{y - 3:.1f}" text-anchor="end" fill="#e377c2">'
                     f'{escape(label)}</text>')
    for k, s in enumerate(panel.series):
        colour = _COLOURS[k % len(_COLOURS)]
        pts = [(px(x), py(y)) for x, y in s.points if not math.isnan(y)]
        if len(pts) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>' for x, y in pts)
        if len(panel.series) > 1:
            ly = oy + _T + 12 + 13 * k
            parts.append(f'<rect x="{ox + _L + 6}" y="{ly - 8}" width="10" height="3" fill="{colour}"/>')
            parts.append(f'<text x="{ox + _L + 20}" y="{ly - 3}" fill="{colour}">{escape(s.label)}</text>')
    return "\n".join(parts)
