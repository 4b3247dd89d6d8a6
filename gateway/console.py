"""A live summary on the console while the gateway runs (``edge-gateway run --summary``; on by default for
the embedded default): devices, tags, values/s, quality, spool depth per sink.

On a terminal the block is redrawn in place every ``every`` seconds; otherwise (a pipe, a service log)
it is one plain line per period, so it stays readable in a journal.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from typing import TextIO

from gateway.model import Quality
from gateway.runtime import Runtime

MAX_DEVICE_LINES = 12


def _quality_counts(runtime: Runtime) -> Counter[Quality]:
    counts: Counter[Quality] = Counter()
    for tags in runtime.live.by_source.values():
        for s in tags.values():
            counts[s.quality] += 1
    return counts


def _uptime(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def render(runtime: Runtime, rate_in: float, rate_out: float, uptime: float, *, detail: bool) -> list[str]:
    devices = runtime.board.devices()
    states = Counter(d["state"] for d in devices)
    q = _quality_counts(runtime)
    sinks = runtime.sink_states()
    pending = sum(s.pending for s in sinks)
    per_sink = ", ".join(f"{s.name} {s.pending:,}{' FAILING' if s.failing else ''}" for s in sinks)
    dev_states = " · ".join(f"{n} {st}" for st, n in sorted(states.items()))
    lines = [
        f"edge-gateway · up {_uptime(uptime)} · Ctrl-C to stop",
        f"devices {len(devices)} ({dev_states or 'none'}) · tags {sum(q.values()):,} "
        f"({q[Quality.GOOD]:,} good · {q[Quality.UNCERTAIN]:,} uncertain · {q[Quality.BAD]:,} bad)",
        f"values/s in {rate_in:,.1f} · out {rate_out:,.1f} · spool {pending:,} pending ({per_sink or 'no sinks'})",
    ]
    if detail:
        width = max((len(d["source"]) + len(d["device"]) + 1 for d in devices), default=0)
        for d in devices[:MAX_DEVICE_LINES]:
            reason = f"  {d['reason']}" if d["reason"] else ""
            name = f"{d['source']}.{d['device']}"
            lines.append(f"  {name:<{width}}  {d['state']:<8} {d['tags']:>4} tags{reason}")
        if len(devices) > MAX_DEVICE_LINES:
            lines.append(f"  ... {len(devices) - MAX_DEVICE_LINES} more devices (http status page)")
    return lines


async def summary_loop(runtime: Runtime, out: TextIO = sys.stdout, every: float | None = None) -> None:
    tty = out.isatty()
    every = every if every is not None else (2.0 if tty else 5.0)
    await runtime.started.wait()
    start = time.monotonic()
    prev_in, prev_out = runtime.totals()
    prev_t = start
    drawn = 0
    wait = min(every, 2.0)  # the first one soon after start: "is anything coming in?"
    while True:
        await asyncio.sleep(wait)
        wait = every
        now = time.monotonic()
        total_in, total_out = runtime.totals()
        dt = max(now - prev_t, 1e-6)
        lines = render(runtime, (total_in - prev_in) / dt, (total_out - prev_out) / dt, now - start, detail=tty)
        prev_in, prev_out, prev_t = total_in, total_out, now
        if tty:
            # cursor up over the previous block, clear to the end of the screen, draw again
            out.write((f"\x1b[{drawn}F\x1b[J" if drawn else "") + "\n".join(lines) + "\n")
            drawn = len(lines)
        else:
            out.write("summary: " + " | ".join(lines[1:]) + "\n")
        out.flush()
