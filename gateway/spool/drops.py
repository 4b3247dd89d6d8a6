"""What the spool dropped, counted once in one place: per reason, and per sink and reason.

A sample counts for a sink when that sink wanted it (its sources match, it had not acked it) and will
never get it: deleted by overflow or age, refused, skipped while the sink was full, or damaged. The
log line says what each sink lost since the previous line (at most one per ``LOG_EVERY``; the rest at
close), so the logged figures add up exactly to ``edgegw_sink_dropped_samples_total``.
"""

from __future__ import annotations

import time
from typing import Any, Final

from structlog.stdlib import BoundLogger

from gateway.metrics import Metrics

DROP_REASONS: Final = ("overflow", "age", "disk_full", "corrupt", "invalid")
LOG_EVERY: Final = 10.0


class DropLedger:
    def __init__(self, metrics: Metrics, log: BoundLogger, policy: str) -> None:
        self.metrics = metrics
        self.log = log
        self.policy = policy
        self.by_reason = dict.fromkeys(DROP_REASONS, 0)
        """Samples at least one sink missed, counted once however many sinks missed them."""
        self.last_drop_mono: float | None = None
        self._by_sink: dict[str, dict[str, int]] = {}
        self._unlogged: dict[str, dict[str, int]] = {}
        self._last_log = 0.0
        self._m_reason = {r: metrics.spool_dropped.labels(r) for r in DROP_REASONS}
        self._m_sink: dict[tuple[str, str], Any] = {}

    def lost(self, reason: str, n: int) -> None:
        """``n`` samples some sink will never get."""
        self.last_drop_mono = time.monotonic()
        self.by_reason[reason] += n
        self._m_reason[reason].inc(n)

    def lost_for(self, sink: str, reason: str, n: int) -> None:
        """``n`` samples ``sink`` will never get."""
        per = self._by_sink.setdefault(sink, {})
        per[reason] = per.get(reason, 0) + n
        unlogged = self._unlogged.setdefault(sink, {})
        unlogged[reason] = unlogged.get(reason, 0) + n
        child = self._m_sink.get((sink, reason))
        if child is None:
            child = self._m_sink[(sink, reason)] = self.metrics.sink_dropped.labels(sink, reason)
        child.inc(n)

    def by_sink(self) -> dict[str, dict[str, int]]:
        return {sink: dict(per) for sink, per in self._by_sink.items()}

    def log_due(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not self._unlogged or (not force and now - self._last_log < LOG_EVERY):
            return
        self._last_log = now
        since, self._unlogged = self._unlogged, {}
        self.log.warning("spool dropped data", samples=since, policy=self.policy, total=self.by_sink())
