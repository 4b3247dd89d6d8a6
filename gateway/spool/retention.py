"""Retention: how old the stored rows are (``max_age``), and which rows no sink wants any more.

Ages within a run come from the monotonic clock at ``append``; rows of an earlier run only have their
wall-clock ``created_ns`` (see the package docstring, "Age"). ``AgeCheckpoints`` keeps a bounded, ascending
list of ``(seq, appended)`` pairs: every row with ``seq <= seqs[i]`` was appended by ``monos[i]``, so the
rows past ``max_age`` are found without reading the file, at most ``max_age / SPLIT`` late.
"""

from __future__ import annotations

import time
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping

from gateway.spool.ranges import Gaps, intersect

SPLIT = 2048
"""Age checkpoints per ``max_age`` within a run."""


class AgeCheckpoints:
    __slots__ = ("_monos", "_seqs", "_step", "max_age")

    def __init__(self, max_age: float) -> None:
        self.max_age = max_age
        self._seqs: list[int] = []
        self._monos: list[float] = []
        self._step = (max_age or 7 * 86400.0) / SPLIT

    def date_previous_run(self, dated: Iterable[tuple[int, int]]) -> None:
        """Rows of an earlier run, as sampled ``(seq, created_ns)``: dated on this run's monotonic clock."""
        now_mono, now_wall = time.monotonic(), time.time_ns()
        last = float("-inf")
        for seq, created_ns in dated:
            age = (now_wall - created_ns) / 1e9
            mono = now_mono - age if age >= 0 else now_mono  # from the "future": the clock was set back
            last = max(last, mono)  # keep checkpoints ordered; a later row is never older
            self._seqs.append(seq)
            self._monos.append(last)

    def committed(self, seq: int, mono: float) -> None:
        """Rows up to ``seq`` are committed, the last appended at ``mono``."""
        if self._monos and mono - self._monos[-1] < self._step:
            self._seqs[-1], self._monos[-1] = seq, mono  # coalesce: eviction at most one step late
        else:
            self._seqs.append(seq)
            self._monos.append(mono)

    def cutoff(self, now: float) -> int:
        """The highest seq whose rows are all older than ``max_age`` (0: none, or no age bound)."""
        if self.max_age <= 0 or not self._monos:
            return 0
        k = bisect_right(self._monos, now - self.max_age)
        return self._seqs[k - 1] if k else 0

    def next_due(self, now: float) -> float | None:
        """Seconds until the oldest checkpoint passes ``max_age`` (None: nothing to age out)."""
        if self.max_age <= 0 or not self._monos:
            return None
        return self._monos[0] + self.max_age - now

    def appended_at(self, seq: int) -> float | None:
        """A lower bound of when row ``seq`` was appended (None: after every checkpoint)."""
        k = bisect_left(self._seqs, seq)
        return self._monos[k] if k < len(self._seqs) else None

    def cut(self, upto: int) -> None:
        k = bisect_right(self._seqs, upto)
        if k:
            del self._seqs[:k]
            del self._monos[:k]


def unwanted_ranges(holders: Iterable[tuple[str, int]], gaps: Mapping[str, Gaps], floor: int,
                    committed: int) -> list[tuple[int, int]]:
    """drop_newest: the seq ranges above ``floor`` that no holder wants: every full sink skipped them (its
    gaps) and every other one acked them. ``holders`` are ``(sink, acked)`` of every cursor holding rows."""
    free = [(floor + 1, committed)]
    for sink, acked in holders:
        unwanted: list[tuple[int, int]] = [(0, acked)]
        for lo, hi in gaps.get(sink, ()):
            if lo <= unwanted[-1][1] + 1:
                unwanted[-1] = (unwanted[-1][0], max(unwanted[-1][1], hi))
            else:
                unwanted.append((lo, hi))
        free = intersect(free, unwanted)
        if not free:
            break
    return free
