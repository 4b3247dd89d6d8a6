"""The in-memory tail: the most recently committed batches, decoded, for readers at the head.

Invariant: every committed row with ``seq > floor`` is in the tail, in seq order; a reader whose position
is at or past ``floor`` is served from here and never touches SQLite (it gets the very sample lists that
were appended). Rows at or below ``floor`` are read from the file. It holds only rows some reader has
not acked yet (what every reader acked leaves at once: a rewind goes back to a reader's acked cursor, never
before it), bounded by ``memory_batches`` batches and about ``memory_samples`` samples for laggards.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable

from gateway.model import Sample, SpooledBatch
from gateway.spool.ranges import Gaps, in_gaps

_COMPACT_AFTER = 64  # trimmed entries kept as an offset before the lists are really shortened


class Tail:
    __slots__ = ("_batches", "_done", "_mono", "_off", "_seqs", "floor")

    def __init__(self, floor: int) -> None:
        # parallel lists from _off on; what lies before _off is trimmed and waits to be compacted
        self._seqs: list[int] = []
        self._batches: list[SpooledBatch] = []
        self._mono: list[float] = []
        self._done: list[float] = []  # monotonic time of each row's commit (``gateway.stages``)
        self._off = 0
        self.floor = floor
        """Every committed row above it is in the tail."""

    def __len__(self) -> int:
        return len(self._seqs) - self._off

    def add(self, seq: int, source: str, samples: list[Sample], mono: float, done: float) -> None:
        """A row appended at ``mono`` and committed at ``done`` (seq above every one in the tail)."""
        self._seqs.append(seq)
        self._batches.append(SpooledBatch(seq, source, samples))
        self._mono.append(mono)
        self._done.append(done)

    def read(self, after: int, match: Callable[[str], bool], gaps: Gaps, max_samples: int,
             ) -> tuple[list[SpooledBatch], int]:
        """Matching batches after ``after`` outside ``gaps``, at most ``max_samples`` samples (always at
        least one batch), and the position the reader reaches (the last row looked at)."""
        seqs, batches = self._seqs, self._batches
        i = bisect_right(seqs, after, self._off)
        end = len(seqs)
        out: list[SpooledBatch] = []
        total = 0
        pos = after
        while i < end:
            b = batches[i]
            if match(b.source) and not (gaps and in_gaps(gaps, seqs[i])):
                n = len(b.samples)
                if out and total + n > max_samples:
                    break
                out.append(b)
                total += n
            pos = seqs[i]
            i += 1
        return out, pos

    def appended_at(self, seq: int) -> float | None:
        """Monotonic append time of row ``seq`` (or the first one after it); None past the tail's end."""
        i = bisect_left(self._seqs, seq, self._off)
        return self._mono[i] if i < len(self._seqs) else None

    def committed_at(self, seq: int) -> float | None:
        """Monotonic commit time of row ``seq`` (or the first one after it); None when not in the tail."""
        i = bisect_left(self._seqs, seq, self._off)
        return self._done[i] if i < len(self._seqs) else None

    def cut(self, upto: int) -> None:
        """Rows up to ``upto`` leave the tail: deleted from the file, or acked by every reader."""
        if upto <= self.floor:
            return
        self._off = max(self._off, bisect_right(self._seqs, upto, self._off))
        self.floor = upto
        self._compact()

    def trim(self, max_batches: int, max_samples: int) -> None:
        """Keep at most ``max_batches`` batches and about ``max_samples`` samples (the newest always)."""
        batches, off = self._batches, self._off
        keep_from = max(off, len(batches) - max_batches)
        budget = max_samples
        i = len(batches)
        while i > keep_from:
            budget -= len(batches[i - 1].samples)
            if budget < 0 and i < len(batches):
                break
            i -= 1
        if i > off:
            self._off = i
            self.floor = max(self.floor, self._seqs[i - 1])
            self._compact()

    def _compact(self) -> None:
        off = self._off
        if off >= _COMPACT_AFTER or off * 2 > len(self._batches):  # trimmed batches must really be freed
            del self._seqs[:off]
            del self._batches[:off]
            del self._mono[:off]
            del self._done[:off]
            self._off = 0
