"""A tag's history as the status page draws it: time buckets from the local store, and the chart as SVG.

The store answers with at most ``MAX_BUCKETS`` buckets (``HistorySource`` in ``gateway.contracts``): per
bucket the mean, the lowest and highest value, the worst quality and how many points fell in it, so 24 h of
1 s data is one small answer and a spike still shows in the min/max band. The chart is drawn here, on the
server: an SVG with a UTC time axis, a value axis with the unit, the band where a bucket holds several
points, the mean as a line, and periods of UNCERTAIN or BAD quality shaded. No script library, no build.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from html import escape

from gateway.errors import GatewayError
from gateway.model import Quality


class HistoryUnavailable(GatewayError):
    """The store cannot answer now (unreadable, locked, gone): the page says so instead of failing."""


MAX_BUCKETS = 600
RANGES: dict[str, int] = {"15m": 15 * 60, "1h": 3600, "24h": 86400}
"""The ranges the page offers, in seconds."""

WIDTH, HEIGHT = 900, 320
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 14, 34
"""The plot area's margins in the SVG's own pixels (the page maps a drag to times with them)."""


@dataclass(frozen=True, slots=True)
class Bucket:
    start_ns: int
    mean: float | None
    """None: no numeric value in the bucket (only BAD points)."""
    low: float | None
    high: float | None
    quality: Quality
    """The worst quality of the bucket's points."""
    count: int


@dataclass(frozen=True, slots=True)
class History:
    source: str
    device: str
    tag: str
    unit: str | None
    since_ns: int
    until_ns: int
    width_ns: int
    """One bucket's width (the range over ``MAX_BUCKETS``; 1 s at least)."""
    buckets: tuple[Bucket, ...]
    numeric: bool = True
    """False when the tag's values are text or arrays: nothing to draw."""


def bucket_width(since_ns: int, until_ns: int, buckets: int = MAX_BUCKETS) -> int:
    return max(1_000_000_000, -(-(until_ns - since_ns) // buckets))


def _nice_step(span: float, target: int) -> float:
    """A step of 1, 2 or 5 times a power of ten giving about ``target`` ticks over ``span``."""
    raw = span / max(1, target)
    power = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    for m in (1, 2, 5, 10):
        if m * power >= raw:
            return m * power
    return 10 * power


_TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


def _fmt(v: float) -> str:
    return f"{v:.6g}"


def render_svg(h: History) -> str:
    """The chart of ``h`` (``WIDTH`` x ``HEIGHT``), times in UTC."""
    pw, ph = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    span_ns = max(1, h.until_ns - h.since_ns)

    def x(t_ns: int) -> float:
        return LEFT + pw * (t_ns - h.since_ns) / span_ns

    # the range and the plot's margins ride along, so the page maps a drag across the plot to times (zoom)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" '
             f'height="{HEIGHT}" font-family="system-ui, sans-serif" font-size="11" class="history" '
             f'data-since="{h.since_ns // 1_000_000}" data-until="{h.until_ns // 1_000_000}" data-left="{LEFT}" '
             f'data-right="{RIGHT}" data-points="{sum(b.count for b in h.buckets)}">',
             f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="#fff" stroke="#d0d7de"/>']
    values = [v for b in h.buckets for v in (b.low, b.high) if v is not None]
    # quality shading first, under everything: one rectangle per bucket that was not all good
    for b in h.buckets:
        if b.quality is not Quality.GOOD:
            color = "#ffebe9" if b.quality is Quality.BAD else "#fff8c5"
            x0, x1 = x(b.start_ns), x(b.start_ns + h.width_ns)
            parts.append(f'<rect class="q-{b.quality.label}" x="{x0:.1f}" y="{TOP}" width="{max(1.0, x1 - x0):.1f}" '
                         f'height="{ph}" fill="{color}"/>')
    # time axis: UTC ticks at a round step
    span_s = span_ns / 1e9
    step = next((s for s in _TIME_STEPS if span_s / s <= 8), 86400)
    first = math.ceil(h.since_ns / 1e9 / step) * step
    t = first
    while t * 1e9 <= h.until_ns:
        xt = x(int(t * 1e9))
        label = time.strftime("%H:%M:%S" if step < 60 else "%H:%M", time.gmtime(t))
        parts.append(f'<line x1="{xt:.1f}" y1="{TOP}" x2="{xt:.1f}" y2="{TOP + ph}" stroke="#eaeef2"/>'
                     f'<text class="t-tick" x="{xt:.1f}" y="{TOP + ph + 14}" text-anchor="middle">{label}</text>')
        t += step
    parts.append(f'<text x="{LEFT + pw}" y="{HEIGHT - 4}" text-anchor="end" fill="#57606a">time (UTC)</text>')
    if not h.numeric or not values:
        why = "text or array values: nothing to chart" if not h.numeric else "no values in this range"
        parts.append(f'<text class="empty" x="{LEFT + pw / 2}" y="{TOP + ph / 2}" text-anchor="middle" '
                     f'fill="#57606a">{escape(why)}</text></svg>')
        return "".join(parts)
    lo, hi = min(values), max(values)
    if hi == lo:
        lo, hi = lo - 1, hi + 1
    vstep = _nice_step(hi - lo, 5)
    lo, hi = math.floor(lo / vstep) * vstep, math.ceil(hi / vstep) * vstep

    def y(v: float) -> float:
        return TOP + ph - ph * (v - lo) / (hi - lo)

    v = lo
    while v <= hi + vstep / 2:
        yv = y(v)
        parts.append(f'<line x1="{LEFT}" y1="{yv:.1f}" x2="{LEFT + pw}" y2="{yv:.1f}" stroke="#eaeef2"/>'
                     f'<text class="v-tick" x="{LEFT - 6}" y="{yv + 4:.1f}" text-anchor="end">{_fmt(v)}</text>')
        v += vstep
    unit = escape(h.unit or "")
    parts.append(f'<text class="unit" x="12" y="{TOP + ph / 2}" text-anchor="middle" fill="#57606a" '
                 f'transform="rotate(-90 12 {TOP + ph / 2})">{unit}</text>')
    # min/max band where a bucket holds several points, then the mean as a line (broken where no value)
    band_top: list[str] = []
    band_bottom: list[str] = []
    line: list[str] = []
    segments: list[str] = []
    for b in h.buckets:
        if b.mean is None or b.low is None or b.high is None:
            if line:
                segments.append(" ".join(line))
                line = []
            continue
        xm = x(b.start_ns + h.width_ns // 2)
        line.append(f"{xm:.1f},{y(b.mean):.1f}")
        if b.count > 1:
            band_top.append(f"{xm:.1f},{y(b.high):.1f}")
            band_bottom.append(f"{xm:.1f},{y(b.low):.1f}")
    if line:
        segments.append(" ".join(line))
    if len(band_top) > 1:
        parts.append(f'<polygon class="band" points="{" ".join(band_top + band_bottom[::-1])}" '
                     f'fill="#0969da" fill-opacity="0.18" stroke="none"/>')
    elif band_top:  # one bucket: its range as a bar
        top, bottom = band_top[0].split(","), band_bottom[0].split(",")
        parts.append(f'<line class="band" x1="{top[0]}" y1="{top[1]}" x2="{top[0]}" y2="{bottom[1]}" stroke="#0969da" '
                     f'stroke-opacity="0.35" stroke-width="4"/>')
    for seg in segments:
        if " " in seg:
            parts.append(f'<polyline class="mean" points="{seg}" fill="none" stroke="#0969da" stroke-width="1.5"/>')
        else:
            cx, cy = seg.split(",")
            parts.append(f'<circle class="mean" cx="{cx}" cy="{cy}" r="2" fill="#0969da"/>')
    parts.append("</svg>")
    return "".join(parts)
