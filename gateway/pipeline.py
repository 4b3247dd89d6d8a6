"""The path from a source's emit to the spool: processing, counting, append."""

from __future__ import annotations

import time

from gateway.live import LiveTags
from gateway.metrics import Metrics
from gateway.model import Batch, Sample
from gateway.processing import Processor
from gateway.spool import Spool
from gateway.stages import READ_EMIT, stage


class SourcePipeline:
    """The ``emit`` a source is given. Per-batch work only: one processor pass, two counters, one append."""

    def __init__(self, source: str, processor: Processor | None, spool: Spool, metrics: Metrics,
                 live: LiveTags | None = None) -> None:
        self.source = source
        self.live = live
        self.processor = processor
        self.spool = spool
        self._in = metrics.samples_in.labels(source)
        self._filtered = metrics.samples_filtered.labels(source)
        self._read_emit = stage(metrics, READ_EMIT)
        self.samples_in = 0

    async def __call__(self, batch: Batch) -> None:
        n = len(batch.samples)
        if not n:
            return
        self.samples_in += n
        self._in.inc(n)
        samples = batch.samples
        # the batch's oldest read: sources emit in read order, but either end is cheap to look at
        read = min(samples[0].source_ts, samples[-1].source_ts)
        if read:
            self._read_emit.observe(max(0, time.time_ns() - read) / 1e9)
        if batch.source != self.source:  # a source may not speak for another one
            batch = Batch(self.source, batch.samples)
        if self.processor is not None:
            before = self.processor.filtered
            out = self.processor.apply(batch)
            dropped = self.processor.filtered - before
            if dropped:
                self._filtered.inc(dropped)
            if out is None:
                return
            batch = out
        if self.live is not None:
            self.live.record(self.source, batch.samples)
        await self.spool.append(batch)

    async def inject(self, samples: list[Sample]) -> None:
        """Samples the gateway decided itself (a value turned stale, an alarm its delay raised): already
        processed, so straight to the live view and the spool; not counted as read from the source."""
        batch = Batch(self.source, samples)
        if self.live is not None:
            self.live.record(self.source, samples)
        await self.spool.append(batch)
