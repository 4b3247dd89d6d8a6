"""Wires sources -> processing -> spool -> sinks and runs them until asked to stop.

Every source and every sink's delivery loop is its own named task under its own supervisor, in one
TaskGroup. Shutdown order matters for durability: stop the sources, commit the spool (appends and
cursors), then stop the sinks, whose backlog simply stays spooled for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.config.loader import GatewayConfig
from gateway.contracts import Sink, Source
from gateway.delivery import DeliveryLoop
from gateway.http_server import HttpEndpoint
from gateway.logs import get_logger
from gateway.metrics import Metrics
from gateway.pipeline import SourcePipeline
from gateway.plugins import BuildContext, sink_plugin, source_plugin
from gateway.processing import Processor
from gateway.spool import Spool
from gateway.supervisor import supervise

STOP_BUDGET = 4.0
"""Seconds the whole shutdown may take; SIGTERM must exit within 5 s."""

SUMMARY_EVERY = 60.0


def tune_gc() -> None:
    """Process-wide GC settings for a long-running collector.

    Every Sample is a tracked tuple, so with CPython's default gen-0 threshold (700) the cyclic collector
    runs every few hundred samples and re-scans the in-memory spool tail: a third of the drain time in
    profiles. The pipeline creates no reference cycles per sample, so collect far less often, and move
    everything that exists after start-up (modules, config, plug-ins) out of the collector's sight.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


@dataclass(slots=True)
class SinkStatus:
    name: str
    delivered: int
    pending: int
    oldest_pending_age: float


class Runtime:
    def __init__(self, config: GatewayConfig, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.log = get_logger("gateway.runtime")
        self.data_dir = Path(config.data_dir).expanduser()
        spool_path = Path(config.spool.path).expanduser() if config.spool.path else self.data_dir / "spool.db"
        self.spool = Spool(spool_path, config.spool, self.metrics)
        self.sources: dict[str, Source] = {}
        self.pipelines: dict[str, SourcePipeline] = {}
        self.sinks: dict[str, Sink] = {}
        self.deliveries: dict[str, DeliveryLoop] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.http = HttpEndpoint(config.http, self.metrics) if config.http.enabled else None
        self.started = asyncio.Event()

    def _build(self) -> None:
        ctx = BuildContext(metrics=self.metrics, site=self.config.site, data_dir=str(self.data_dir),
                           log=self.log)
        for name, scfg in self.config.sources.items():
            self.sources[name] = source_plugin(scfg.type).factory(name, scfg, ctx)
            self.pipelines[name] = SourcePipeline(name, Processor.for_source(scfg), self.spool, self.metrics)
        for name, kcfg in self.config.sinks.items():
            sink = sink_plugin(kcfg.type).factory(name, kcfg, ctx)
            self.sinks[name] = sink
            self.deliveries[name] = DeliveryLoop(
                sink, self.spool, kcfg.sources, self.metrics, max_samples=kcfg.batch_max_samples,
                retry_initial=kcfg.retry_initial, retry_max=kcfg.retry_max,
            )

    async def run(self, stop: asyncio.Event) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._build()
        await self.spool.open()
        if self.http is not None:
            await self.http.start()
        self.log.info("gateway starting", config=self.config.path, data_dir=str(self.data_dir),
                      sources=sorted(self.sources), sinks=sorted(self.sinks))
        try:
            async with asyncio.TaskGroup() as tg:
                for name, delivery in self.deliveries.items():
                    self.tasks[f"sink:{name}"] = tg.create_task(
                        supervise(f"sink:{name}", delivery.run, self.metrics), name=f"sink:{name}")
                for name, source in self.sources.items():
                    self.tasks[f"source:{name}"] = tg.create_task(
                        supervise(f"source:{name}", functools.partial(source.run, self.pipelines[name]),
                                  self.metrics),
                        name=f"source:{name}")
                housekeeping = tg.create_task(self._housekeeping(), name="housekeeping")
                self.started.set()
                await stop.wait()
                self.log.info("gateway stopping")
                await self._stop_tasks([t for n, t in self.tasks.items() if n.startswith("source:")])
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.spool.flush(), STOP_BUDGET / 2)
                for delivery in self.deliveries.values():
                    delivery.request_stop()
                await self._stop_tasks([t for n, t in self.tasks.items() if n.startswith("sink:")], cancel=False)
                housekeeping.cancel()
        finally:
            if self.http is not None:
                await self.http.stop()
            await self.spool.close()
            self.log.info("gateway stopped", samples_in=sum(p.samples_in for p in self.pipelines.values()),
                          delivered={n: d.delivered for n, d in self.deliveries.items()})

    async def _stop_tasks(self, tasks: list[asyncio.Task[None]], *, cancel: bool = True) -> None:
        """Cancel (or, with ``cancel=False``, first let finish) ``tasks`` within a quarter of the budget."""
        if cancel:
            for t in tasks:
                t.cancel()
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=STOP_BUDGET / 4)
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending, timeout=STOP_BUDGET / 8)

    def sink_status(self) -> list[SinkStatus]:
        out = []
        for name, d in self.deliveries.items():
            r = d.reader
            out.append(SinkStatus(name, d.delivered, r.pending_samples() if r else 0,
                                  r.oldest_pending_age() if r else 0.0))
        return out

    async def _housekeeping(self) -> None:
        """Refresh backlog gauges each second; log a one-line summary every minute."""
        next_summary = time.monotonic() + SUMMARY_EVERY
        last_in = 0
        while True:
            await asyncio.sleep(1.0)
            for st in self.sink_status():
                self.metrics.sink_pending.labels(st.name).set(st.pending)
                self.metrics.sink_oldest_pending_age.labels(st.name).set(st.oldest_pending_age)
            now = time.monotonic()
            if now >= next_summary:
                total_in = sum(p.samples_in for p in self.pipelines.values())
                self.log.info(
                    "summary", samples_per_s=round((total_in - last_in) / SUMMARY_EVERY, 1),
                    sinks={s.name: {"delivered": s.delivered, "pending": s.pending} for s in self.sink_status()},
                )
                last_in = total_in
                next_summary = now + SUMMARY_EVERY

