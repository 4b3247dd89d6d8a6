"""A live summary on the console while the gateway runs (``edge-gateway run --summary``; on by default
on a terminal): devices, tags, values/s, quality, spool depth per sink.

On a terminal the block is redrawn in place every ``every`` seconds at the bottom of the screen, and log
lines written to the same terminal go through ``LiveBlock.stream`` so they appear above it instead of
being erased by the next redraw; otherwise (a pipe, a service log) it is one plain line per period, so it
stays readable in a journal.
"""

from __future__ import annotations

import asyncio
import io
import sys
import threading
import time
from collections import Counter
from typing import TextIO, cast

from gateway.model import Quality
from gateway.runtime import Runtime

MAX_DEVICE_LINES = 12


class LiveBlock:
    """The block of lines kept at the bottom of a terminal. Text written through ``stream`` (the log)
    goes above it: the block is erased, the text written, the block drawn again. Thread-safe: the MQTT
    network thread logs too."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._lines: list[str] = []
        self._drawn = 0
        self._lock = threading.Lock()

    def draw(self, lines: list[str]) -> None:
        with self._lock:
            self._erase()
            self._lines = lines
            self._paint()
            self.out.flush()

    def write_above(self, text: str) -> None:
        with self._lock:
            self._erase()
            self.out.write(text)
            if text and not text.endswith("\n"):
                self.out.write("\n")
            self._paint()
            self.out.flush()

    def stream(self) -> TextIO:
        return cast(TextIO, _Above(self))

    def _erase(self) -> None:
        if self._drawn:
            self.out.write(f"\x1b[{self._drawn}F\x1b[J")  # up to the block's first line, clear to the end
            self._drawn = 0

    def _paint(self) -> None:
        if self._lines:
            self.out.write("\n".join(self._lines) + "\n")
            self._drawn = len(self._lines)


class _Above(io.TextIOBase):
    """A text stream whose lines appear above a ``LiveBlock`` (a logging handler's stream)."""

    def __init__(self, block: LiveBlock) -> None:
        self._block = block
        self._partial = ""

    def write(self, text: str) -> int:
        self._partial += text
        if "\n" in self._partial:
            done, _, self._partial = self._partial.rpartition("\n")
            self._block.write_above(done + "\n")
        return len(text)

    def isatty(self) -> bool:
        return self._block.out.isatty()


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


async def summary_loop(runtime: Runtime, out: TextIO = sys.stdout, every: float | None = None,
                       block: LiveBlock | None = None) -> None:
    tty = out.isatty()
    if tty and block is None:
        block = LiveBlock(out)
    every = every if every is not None else (2.0 if tty else 5.0)
    await runtime.started.wait()
    start = time.monotonic()
    prev_in, prev_out = runtime.totals()
    prev_t = start
    wait = min(every, 2.0)  # the first one soon after start: "is anything coming in?"
    while True:
        await asyncio.sleep(wait)
        wait = every
        now = time.monotonic()
        total_in, total_out = runtime.totals()
        dt = max(now - prev_t, 1e-6)
        lines = render(runtime, (total_in - prev_in) / dt, (total_out - prev_out) / dt, now - start, detail=tty)
        prev_in, prev_out, prev_t = total_in, total_out, now
        if block is not None:
            block.draw(lines)
        else:
            out.write("summary: " + " | ".join(lines[1:]) + "\n")
            out.flush()
