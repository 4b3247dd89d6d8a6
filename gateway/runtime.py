"""Wires sources -> processing -> spool -> sinks and runs them until asked to stop.

Every source and every sink's delivery loop is its own named task under its own supervisor, in one
TaskGroup. Shutdown order matters for durability: stop the sources, commit the spool (appends and
cursors), then stop the sinks, whose backlog simply stays spooled for the next start. A hot reload
restarts only the components whose config changed; the spool and every cursor stay as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import gc
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.config.base import SEVERITIES, SinkConfigBase, SourceConfigBase
from gateway.config.loader import GatewayConfig
from gateway.contracts import HistorySource, Sink, Source, UplinkReport, WritableSource
from gateway.deadletters import spool_path as spool_file
from gateway.delivery import DeliveryLoop, WriteRejections
from gateway.errors import WriteError
from gateway.fleet.identity import config_hash
from gateway.fleet.member import FleetMember
from gateway.fleet.message import GatewayStatus
from gateway.instance_lock import InstanceLock
from gateway.live import HISTORY_POINTS, LiveTags
from gateway.logs import get_logger
from gateway.metrics import Metrics
from gateway.model import Value
from gateway.pipeline import SourcePipeline
from gateway.plugins import BuildContext, PluginError, sink_plugin, source_plugin
from gateway.processing import Processor
from gateway.spool import Spool
from gateway.status import SinkState, StatusBoard, iso
from gateway.supervisor import supervise
from gateway.watch import ActiveAlarm, ValueMaps, state_word, value_maps
from gateway.writes import write_value

if TYPE_CHECKING:
    from gateway.http_server import HttpEndpoint

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


class Runtime:
    def __init__(self, config: GatewayConfig, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.log = get_logger("gateway.runtime")
        self.data_dir = Path(config.data_dir).expanduser()
        spool_path = spool_file(config)  # the one rule, shared with `edge-gateway deadletters`
        self.spool = Spool(spool_path, config.spool, self.metrics)
        self._lock = InstanceLock.of_spool(spool_path)
        self._claimed = False
        # sparklines are for the status page only: without the endpoint keep none (~0.5 KB per tag)
        self.live = LiveTags(HISTORY_POINTS if config.http.enabled else 0)
        self.sources: dict[str, Source] = {}
        self.pipelines: dict[str, SourcePipeline] = {}
        self.value_maps: dict[str, ValueMaps] = {}
        self.sinks: dict[str, Sink] = {}
        self.deliveries: dict[str, DeliveryLoop] = {}
        self._delivered_before: dict[str, int] = {}  # by delivery loops a hot reload replaced
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._devices_of: tuple[GatewayConfig | None, dict[str, list[str]]] = (None, {})
        self.board = StatusBoard(self._configured_devices, self.sink_states, self.live, self.metrics,
                                 device_grace=config.http.device_grace, health_window=config.http.health_window,
                                 last_drop=lambda: self.spool.last_drop_mono, annotate=self._annotate,
                                 alarms=self.active_alarms)
        self._config_hash = config_hash(config)
        self.fleet = FleetMember(lambda: self.config.gateway_id(), lambda: self._config_hash, self.board.devices,
                                 self.sink_states, status_interval=config.gateway.status_interval,
                                 on_replaced=self._replaced)
        self.http: HttpEndpoint | None = None
        if config.http.enabled:  # aiohttp costs ~8 MB of RSS: imported only when the endpoint runs
            from gateway.http_server import HttpEndpoint

            self.http = HttpEndpoint(config.http, self.metrics, self.board)
        self.started = asyncio.Event()
        self.reloads = 0
        self._stand_down_task: asyncio.Task[None] | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._reload_lock = asyncio.Lock()

    # --- building -------------------------------------------------------------------------------
    def _context(self, dead_letters: WriteRejections | None = None) -> BuildContext:
        ctx = BuildContext(metrics=self.metrics, site=self.config.site, data_dir=str(self.data_dir),
                           log=self.log, writer=self.write_tag, value_maps=self.value_maps, fleet=self.fleet,
                           gateway_id=self.config.gateway.id)
        return ctx if dead_letters is None else dataclasses.replace(ctx, dead_letters=dead_letters)

    def _build_source(self, name: str, scfg: SourceConfigBase) -> None:
        source = source_plugin(scfg.type).factory(name, scfg, self._context())
        _check_contract(source, "source", scfg.type, ("name", "health", "run", "close"))
        self.sources[name] = source
        self.metrics.health.add_source(source.health)
        self.pipelines[name] = SourcePipeline(name, Processor.for_source(scfg, source=name), self.spool, self.metrics,
                                              self.live)
        self.value_maps[name] = value_maps(scfg.iter_tags())

    def _pick_history(self) -> None:
        """The status page charts from the first sink that keeps history (the embedded store), if any."""
        self.board.history = next((s for _, s in sorted(self.sinks.items()) if isinstance(s, HistorySource)), None)

    def _build_sink(self, name: str, kcfg: SinkConfigBase) -> None:
        rejections = WriteRejections()  # what the sink refuses inside a write lands in the spool's dead letters
        sink = sink_plugin(kcfg.type).factory(name, kcfg, self._context(rejections))
        _check_contract(sink, "sink", kcfg.type, ("name", "open", "write", "close", "health_problems"))
        self.sinks[name] = sink
        self._pick_history()
        self.metrics.health.set_uplink(name, sink if isinstance(sink, UplinkReport) else None)
        self.deliveries[name] = DeliveryLoop(
            sink, self.spool, kcfg.sources, self.metrics, max_samples=kcfg.batch_max_samples,
            retry_initial=kcfg.retry_initial, retry_max=kcfg.retry_max, linger=kcfg.linger, rejections=rejections,
        )

    def _start_source(self, name: str) -> None:
        assert self._tg is not None
        self.tasks[f"source:{name}"] = self._tg.create_task(
            supervise(f"source:{name}", functools.partial(self.sources[name].run, self.pipelines[name]),
                      self.metrics),
            name=f"source:{name}")

    def _start_sink(self, name: str) -> None:
        assert self._tg is not None
        self.tasks[f"sink:{name}"] = self._tg.create_task(
            supervise(f"sink:{name}", self.deliveries[name].run, self.metrics), name=f"sink:{name}")

    # --- running --------------------------------------------------------------------------------
    def claim(self) -> None:
        """Take this gateway's spool for the life of the process; raises ``InstanceLocked`` when another
        gateway has it. ``run`` claims too; call it first to fail before starting anything else."""
        if not self._claimed:
            self._lock.acquire()
            self._claimed = True

    async def run(self, stop: asyncio.Event, reload: asyncio.Event | None = None) -> None:
        """Run until ``stop`` is set; each time ``reload`` is set, re-read the config file."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.claim()
        try:
            await self._run(stop, reload)
        finally:
            self._lock.release()
            self._claimed = False

    async def _run(self, stop: asyncio.Event, reload: asyncio.Event | None) -> None:
        for name, scfg in self.config.sources.items():
            self._build_source(name, scfg)
        for name, kcfg in self.config.sinks.items():
            self._build_sink(name, kcfg)
        if self.http is not None:
            await self.http.start()  # before the spool: a taken port stops the start with nothing to undo
        try:
            await self.spool.open()
        except BaseException:
            if self.http is not None:
                await self.http.stop()
            raise
        for name in sorted(set(self.spool.stored_sinks) - set(self.config.sinks)):
            await self._release_sink(name)
        self.log.info("gateway starting", config=self.config.path, data_dir=str(self.data_dir),
                      sources=sorted(self.sources), sinks=sorted(self.sinks))
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                for name in self.deliveries:
                    self._start_sink(name)
                for name in self.sources:
                    self._start_source(name)
                housekeeping = tg.create_task(self._housekeeping(), name="housekeeping")
                reloader = tg.create_task(self._reload_loop(reload), name="reloader") if reload else None
                self.board.started_mono = time.monotonic()
                self.started.set()
                await stop.wait()
                self.log.info("gateway stopping")
                if reloader is not None:
                    reloader.cancel()
                await self._stop_tasks([t for n, t in self.tasks.items() if n.startswith("source:")])
                await self._close_sources(list(self.sources))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.spool.flush(), STOP_BUDGET / 2)
                for delivery in self.deliveries.values():
                    delivery.request_stop()
                await self._stop_tasks([t for n, t in self.tasks.items() if n.startswith("sink:")], cancel=False)
                housekeeping.cancel()
        finally:
            self._tg = None
            if self.http is not None:
                await self.http.stop()
            await self.spool.close()
            states = self.sink_states()
            self.log.info("gateway stopped", samples_in=self.totals()[0],
                          sinks={s.name: {"delivered": s.delivered, "pending": s.pending, "dropped": s.dropped}
                                 for s in states})

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

    async def _close_sources(self, names: list[str]) -> None:
        """``Source.close`` for stopped sources, together, within an eighth of the stop budget; a close that
        fails or hangs is logged and left behind (the process is stopping, or the source is replaced)."""

        async def close(name: str) -> None:
            try:
                await asyncio.wait_for(self.sources[name].close(), STOP_BUDGET / 8)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.warning("source did not close cleanly", source=name, error=str(exc) or type(exc).__name__)

        await asyncio.gather(*(close(n) for n in names if n in self.sources))

    async def _release_sink(self, name: str) -> None:
        """A sink no longer configured: its spool cursor must not hold data back (nor count drops) forever."""
        pending = await self.spool.release(name)
        self.log.warning("sink no longer configured; its spool cursor is released", sink=name,
                         undelivered_samples=pending)

    # --- fleet ----------------------------------------------------------------------------------
    def _replaced(self, by: GatewayStatus) -> None:
        """Another box (or run) took this gateway's id: collecting beside it would read every device twice
        and fight over the broker session, so stop the sources and say so; the sinks drain what was
        collected before, and the process stays up (a service manager restarting it would take the shard
        back from the box that replaced it)."""
        self.log.error(
            "gateway replaced: another instance now runs this gateway id; this one stopped collecting and "
            "publishing", gateway=by.id, replaced_by_host=by.host, replaced_by_instance=by.instance,
            replaced_by_started=iso(by.started_ns), instance=self.fleet.instance,
            hint="stop this box's gateway (systemctl disable --now edge-gateway); starting it again takes the "
                 "shard back from the other box",
        )
        task = asyncio.get_running_loop().create_task(self._stop_sources(), name="stand-down")
        self._stand_down_task = task  # keep a reference until it ran

    async def _stop_sources(self) -> None:
        names = list(self.sources)
        await self._stop_tasks([t for n, t in self.tasks.items() if n.startswith("source:")])
        for name in names:
            self.tasks.pop(f"source:{name}", None)
        await self._close_sources(names)

    # --- writes (CLI, MQTT command path) --------------------------------------------------------
    async def write_tag(self, source: str, device: str, tag: str, value: Value) -> None:
        """Write an engineering value to a configured, writable tag of a running source."""
        scfg = self.config.sources.get(source)
        src = self.sources.get(source)
        if scfg is None or src is None:
            raise WriteError(f"no source {source!r}")
        tag_cfg = next((t for d, t in scfg.iter_tags() if d == device and t.name == tag), None)
        if tag_cfg is None:
            raise WriteError(f"no tag {tag!r} on {source}.{device}")
        if not isinstance(src, WritableSource):
            raise WriteError(f"source type {scfg.type!r} does not support writes")
        await write_value(src, device, tag_cfg, value)

    # --- status ---------------------------------------------------------------------------------
    def _configured_devices(self) -> dict[str, list[str]]:
        # per config (a reload replaces it): walking every tag's config is ~1 ms at 10,000 tags, per status
        config = self.config
        if self._devices_of[0] is not config:
            self._devices_of = (config, {name: sorted({d for d, _ in scfg.iter_tags()})
                                         for name, scfg in config.sources.items()})
        return self._devices_of[1]

    def sink_states(self) -> list[SinkState]:
        """Every configured sink; counts are since start, across hot reloads."""
        out = []
        dropped = self.spool.dropped_by_sink()
        for name, d in self.deliveries.items():
            r = d.reader
            kcfg = self.config.sinks[name]
            out.append(SinkState(
                name=name, type=kcfg.type, delivered=self._delivered_before.get(name, 0) + d.delivered,
                pending=r.pending_samples() if r else 0,
                oldest_pending_age=r.oldest_pending_age() if r else 0.0,
                max_pending_age=kcfg.max_pending_age,
                last_delivery=d.last_delivery_wall, failing=d.failing, last_error=d.last_error,
                dropped=sum(dropped.get(name, {}).values()), problems=tuple(d.health_problems()),
                uplink=d.sink.uplink() if isinstance(d.sink, UplinkReport) else None,
            ))
        return out

    def totals(self) -> tuple[int, int]:
        """Samples taken in (all sources) and delivered (all sinks) since start; survives reloads."""
        total_in = total_out = 0
        for metric in self.metrics.samples_in.collect():
            total_in += int(sum(s.value for s in metric.samples if s.name.endswith("_total")))
        for metric in self.metrics.samples_out.collect():
            total_out += int(sum(s.value for s in metric.samples if s.name.endswith("_total")))
        return total_in, total_out

    async def _tick_watches(self) -> None:
        """Stale values and delayed alarms are decided by the clock: their samples go in like any."""
        mono, wall = time.monotonic(), time.time_ns()
        for pipeline in list(self.pipelines.values()):
            watch = pipeline.processor.watch if pipeline.processor is not None else None
            if watch is not None:
                samples = watch.tick(mono, wall)
                if samples:
                    await pipeline.inject(samples)

    def _annotate(self, source: str, device: str, tag: str, value: Value) -> dict[str, Any]:
        """What the status API adds to a tag's last value: its state word, whether it is stale."""
        out: dict[str, Any] = {}
        states = self.value_maps.get(source, {}).get((device, tag))
        if states is not None:
            word = state_word(states, value)
            if word is not None:
                out["state"] = word
        pipeline = self.pipelines.get(source)
        watch = pipeline.processor.watch if pipeline is not None and pipeline.processor is not None else None
        if watch is not None and watch.is_stale(device, tag):
            out["stale"] = True
        return out

    def active_alarms(self) -> list[ActiveAlarm]:
        """Every source's active alarms, highest severity first."""
        out = [a for p in self.pipelines.values() if p.processor is not None and p.processor.watch is not None
               for a in p.processor.watch.active()]
        out.sort(key=lambda a: (-SEVERITIES.index(a.severity), a.since_ns))
        return out

    async def _housekeeping(self) -> None:
        """Each second: backlog gauges and sparkline points; every minute a one-line summary."""
        next_summary = time.monotonic() + SUMMARY_EVERY
        last_in = self.totals()[0]
        prev_in, prev_t = self.totals(), time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            (now_in, now_out), now_t = self.totals(), time.monotonic()
            self.metrics.rate_in.set((now_in - prev_in[0]) / (now_t - prev_t))
            self.metrics.rate_out.set((now_out - prev_in[1]) / (now_t - prev_t))
            prev_in, prev_t = (now_in, now_out), now_t
            states = self.sink_states()
            for st in states:
                self.metrics.sink_pending.labels(st.name).set(st.pending)
                self.metrics.sink_oldest_pending_age.labels(st.name).set(st.oldest_pending_age)
            await self._tick_watches()
            self.live.sample_history()
            now = time.monotonic()
            if now >= next_summary:
                total_in = now_in
                self.log.info(
                    "summary", samples_per_s=round((total_in - last_in) / SUMMARY_EVERY, 1), samples_in=total_in,
                    sinks={s.name: {"delivered": s.delivered, "pending": s.pending, "dropped": s.dropped}
                           for s in states},
                )
                last_in = total_in
                next_summary = now + SUMMARY_EVERY

    # --- hot reload -----------------------------------------------------------------------------
    async def _reload_loop(self, reload: asyncio.Event) -> None:
        while True:
            await reload.wait()
            reload.clear()
            await self.reload_from_file()

    async def reload_from_file(self) -> bool:
        """Re-read the config file; apply it if valid, else log every problem and keep the old one."""
        from gateway.config.loader import load_config
        from gateway.errors import ConfigError

        if not self.config.path or self.config.path.startswith("<"):
            self.log.warning("reload ignored: the embedded default config has no file to re-read")
            return False
        try:
            new = await asyncio.to_thread(load_config, self.config.path)
        except ConfigError as exc:
            self.log.error("config reload rejected; still running the previous config", problems=exc.problems)
            return False
        await self.apply(new)
        return True

    async def apply(self, new: GatewayConfig) -> None:
        """Restart only what changed: added, removed or modified sources and sinks."""
        async with self._reload_lock:
            old = self.config
            fixed = [k for k in ("data_dir", "spool", "http", "log") if getattr(old, k) != getattr(new, k)]
            if fixed:
                self.log.warning("config sections changed that apply only after a restart", sections=fixed)
            # topics, client ids and the status message follow the site and the gateway's id: rebuild the sinks
            site_changed = old.site != new.site or old.gateway != new.gateway
            src_changes = _diff(old.sources, new.sources)
            sink_changes = _diff(old.sinks, new.sinks, force=site_changed)
            self.config = new.model_copy(update={k: getattr(old, k) for k in fixed})
            self._config_hash = config_hash(self.config)
            self.fleet.status_interval = self.config.gateway.status_interval
            for name in src_changes.removed | src_changes.changed:
                await self._stop_component(f"source:{name}")
                await self._close_sources([name])
                self.sources.pop(name, None)
                self.pipelines.pop(name, None)
                self.value_maps.pop(name, None)
                if name in src_changes.removed:
                    self.live.forget_source(name)
                    self.metrics.health.forget_source(name)
            for name in sink_changes.removed | sink_changes.changed:
                await self._stop_component(f"sink:{name}")
                self.sinks.pop(name, None)
                self._pick_history()
                stopped = self.deliveries.pop(name, None)
                if stopped is not None:  # its count carries on in the one that replaces it
                    self._delivered_before[name] = self._delivered_before.get(name, 0) + stopped.delivered
                if name in sink_changes.removed:
                    await self._release_sink(name)
                    self.metrics.health.forget_component(f"sink:{name}")
                    self.metrics.health.set_uplink(name, None)
            for name in sorted(sink_changes.added | sink_changes.changed):
                self._build_sink(name, new.sinks[name])
                self._start_sink(name)
            for name in sorted(src_changes.added | src_changes.changed):
                self._build_source(name, new.sources[name])
                if self.fleet.replaced_by is None:  # a gateway that stood down collects nothing
                    self._start_source(name)
            self.reloads += 1
            self.log.info(
                "config reloaded",
                sources={k: sorted(v) for k, v in src_changes.as_dict().items() if v},
                sinks={k: sorted(v) for k, v in sink_changes.as_dict().items() if v},
            )

    async def _stop_component(self, key: str) -> None:
        task = self.tasks.pop(key, None)
        if task is None:
            return
        delivery = self.deliveries.get(key.removeprefix("sink:")) if key.startswith("sink:") else None
        if delivery is not None:
            delivery.request_stop()  # let a write in flight be acked: nothing re-sent, nothing lost
            await self._stop_tasks([task], cancel=False)
        else:
            await self._stop_tasks([task])


def _check_contract(obj: object, what: str, kind: str, members: tuple[str, ...]) -> None:
    """A plug-in without its health account would show as fine whatever happens: refuse it at build."""
    missing = [m for m in members if not hasattr(obj, m)]
    if missing:
        raise PluginError(f"{what} type {kind!r} does not implement the {what.title()} contract "
                          f"(gateway.contracts.{what.title()}): no {', '.join(missing)}")


class _Changes:
    __slots__ = ("added", "changed", "removed")

    def __init__(self, added: set[str], removed: set[str], changed: set[str]) -> None:
        self.added, self.removed, self.changed = added, removed, changed

    def as_dict(self) -> dict[str, set[str]]:
        return {"added": self.added, "removed": self.removed, "changed": self.changed}


def _diff(old: Mapping[str, object], new: Mapping[str, object], *, force: bool = False) -> _Changes:
    both = old.keys() & new.keys()
    changed = set(both) if force else {n for n in both if old[n] != new[n]}
    return _Changes(set(new.keys() - old.keys()), set(old.keys() - new.keys()), changed)
