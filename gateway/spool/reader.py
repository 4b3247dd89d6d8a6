"""One sink's view of the spool: a read position, an acked cursor and what it has not acked yet."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from enum import Enum
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Protocol

from gateway.model import SpooledBatch
from gateway.spool.storage import SpoolClosedError

if TYPE_CHECKING:
    from gateway.spool.ranges import Gaps
    from gateway.spool.storage import ReadResult
    from gateway.spool.tail import Tail


class ReaderHost(Protocol):
    """All a reader asks of its spool (``gateway.spool.core.Spool``): the one interface between the two.
    The spool in turn keeps the reader's cursor fields (``_acked``, ``_pos``, ``_pending``, ...) in step with
    its commits and deletions; nothing else touches them."""

    tail: Tail

    @property
    def committed(self) -> int: ...

    def usable(self) -> bool: ...

    def gaps_of(self, sink: str) -> Gaps: ...

    async def read_stored(self, after: int, upto: int, match: Callable[[str], bool], max_samples: int,
                          gaps: Sequence[tuple[int, int]]) -> ReadResult: ...

    def damaged(self, rows: list[tuple[int, str, int]], sink: str) -> None: ...

    def cursor_moved(self, sink: str, seq: int) -> None: ...

    def age_of(self, seq: int) -> float: ...

    def nudge(self) -> None: ...


class InitialCount(Enum):
    """A reader that resumes behind the head counts what is already stored after its cursor (its
    ``pending_samples``) with a write job, so the count and the job's own deletions stay consistent."""

    DONE = "done"  # counted, or nothing to count
    WAITING = "waiting"  # the next write job counts it
    RUNNING = "running"  # the write job in flight counts it


class SpoolReader:
    """One sink's view of the spool: a read position and an acked cursor, both sequence numbers.

    ``next`` moves the read position; ``ack`` moves the cursor (persisted with the next commit);
    ``rewind`` puts the read position back on the cursor after a failed write.
    """

    def __init__(self, spool: ReaderHost, sink: str, sources: Sequence[str], cursor: int, *, counting: bool) -> None:
        self.sink = sink
        self.sources = tuple(sources)
        self._spool = spool
        self._all = "*" in self.sources
        self._memo: dict[str, bool] = {}
        self._acked = cursor
        self._pos = cursor  # everything up to here was returned by next() or does not match
        self._last_out = cursor  # highest seq returned by next(); rows after it up to _pos do not match
        self._inflight: deque[tuple[int, int]] = deque()  # (seq, samples) returned and not yet acked
        self._pending = 0  # matching committed samples after _acked (may dip below 0 while counting)
        self._count = InitialCount.WAITING if counting else InitialCount.DONE
        self._count_upto = spool.committed if counting else 0
        self._epoch = 0  # bumped by rewind: a disk read that straddles it is discarded
        self._gaps = spool.gaps_of(sink)  # seqs skipped while this sink was full (drop_newest)
        self._kept = spool.committed  # no row kept for this sink after here (a new gap may extend the last)
        self._event = asyncio.Event()
        self._registered = True

    def _match(self, source: str) -> bool:
        m = self._memo.get(source)
        if m is None:
            m = self._memo[source] = self._all or any(fnmatchcase(source, p) for p in self.sources)
        return m

    def _forget(self, seq: int, n: int) -> None:
        """Samples that stop being pending (acked or deleted)."""
        if self._count is InitialCount.WAITING and seq <= self._count_upto:
            return  # the initial count, still to come, will not include them
        self._pending -= n

    async def next(self, max_samples: int) -> list[SpooledBatch]:
        """Wait for committed batches past the read position that match this reader's sources.

        Returns consecutive matching batches with at most ``max_samples`` samples in total, but always
        at least one batch.
        """
        spool = self._spool
        while True:
            if not self._registered or not spool.usable():
                raise SpoolClosedError(f"spool reader {self.sink!r} is closed")
            self._event.clear()  # before looking: a commit during the look sets it again
            if self._pos < spool.tail.floor:
                out = await self._read_disk(max_samples)
                if out:
                    return out
                continue  # moved forward (or was rewound): look again, possibly in the tail
            out, self._pos = spool.tail.read(self._pos, self._match, self._gaps, max_samples)
            if out:
                self._handed_out(out)
                return out
            if self._acked >= self._last_out and self._pos > self._acked:
                self._acked = self._pos  # nothing in flight and nothing wanted up to here: step over it
                spool.nudge()  # which may let garbage collection go further
            await self._event.wait()

    async def _read_disk(self, max_samples: int) -> list[SpooledBatch]:
        spool = self._spool
        epoch, start = self._epoch, self._pos
        gaps = [(lo, hi) for lo, hi in self._gaps]
        res = await spool.read_stored(start, spool.tail.floor, self._match, max(1, max_samples), gaps)
        if res.damaged:
            spool.damaged(res.damaged, self.sink)
        if epoch != self._epoch or not self._registered:
            return []  # rewound (or dropped) meanwhile: look again from the new position
        pos = self._pos  # deletions meanwhile may have moved it forward
        out = [b for b in res.batches if b.seq > pos]
        for seq, source, n in res.damaged:
            if seq > pos and self._match(source):
                self._forget(seq, n)
        self._pos = max(pos, res.scanned)
        if out:
            self._handed_out(out)
        return out

    def _handed_out(self, out: list[SpooledBatch]) -> None:
        self._inflight.extend((b.seq, len(b.samples)) for b in out)
        self._last_out = out[-1].seq

    async def ack(self, seq: int) -> None:
        """The sink accepted everything up to ``seq``. The cursor is persisted by the next commit."""
        if seq <= self._acked:
            return
        fl = self._inflight
        while fl and fl[0][0] <= seq:
            s, n = fl.popleft()
            self._forget(s, n)
        self._acked = seq
        if self._pos < seq:
            self._pos = seq
        self._spool.cursor_moved(self.sink, seq)

    def rewind(self) -> None:
        """After a failed write: the next ``next()`` starts again right after the acked cursor."""
        self._pos = self._last_out = self._acked
        self._inflight.clear()
        self._epoch += 1

    def pending_samples(self) -> int:
        """Committed samples of this reader's sources it has not acked (exact up to concurrent deletes)."""
        return max(0, self._pending)

    def oldest_pending_age(self) -> float:
        """Seconds since the oldest unacked batch was appended (monotonic), 0.0 when nothing is pending."""
        if self._pending <= 0:
            return 0.0
        return self._spool.age_of(self._acked + 1)
