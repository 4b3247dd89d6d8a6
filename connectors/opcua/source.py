"""The OPC-UA source: one supervised link per device, subscriptions by default, batched reads in poll mode.

Each device runs its own loop: connect (security, trust list), resolve every tag against the server's
*current* namespace array (``nsu=`` forms and browse paths are re-resolved on every connect, so a server
that reorders its namespaces after a restart still maps each tag to the right node), run discovery,
then subscribe (monitored items created in chunks of the server's ``MaxMonitoredItemsPerCall``) or poll
(reads in chunks of ``MaxNodesPerRead``). Any failure closes the session before the next attempt, so a
device never holds more than one; attempts back off exponentially with jitter, forever.

Notifications arrive on asyncua's publish loop. ``_Device.on_rows`` turns them into Samples right
there (no task per notification) and puts one batch per publish into a bounded queue; the source's
single forwarder drains it into ``emit``. When the queue is full the batch is dropped and counted
(``dropped`` and ``device_errors{code="QueueOverflow"}``), so a stalled pipeline cannot grow memory.

A watchdog per device forces a reconnect when neither a keep-alive nor data arrived for ``watchdog``
seconds; the keep-alive count asked of the server is derived from it, so a healthy idle server always
answers in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import math
import time
from pathlib import Path
from typing import Any

import structlog

from connectors.opcua import adapter
from connectors.opcua.adapter import ItemSpec, OpcUaError, Row, Session
from connectors.opcua.config import OpcUaDevice, OpcUaSourceConfig, OpcUaTag
from connectors.opcua.pki import Pki
from gateway.backoff import Backoff
from gateway.contracts import Emit
from gateway.errors import DeviceNotConnected, WriteError
from gateway.health import SourceHealth
from gateway.metrics import Metrics
from gateway.model import Batch, Quality, Sample, Value
from gateway.samples import bad, reading
from gateway.status_codes import UNCERTAIN_TIMESTAMP
from gateway.writes import WriteKind

_GOOD, _UNCERTAIN, _BAD = Quality.GOOD, Quality.UNCERTAIN, Quality.BAD
FUTURE_SLACK_NS = 86_400 * 10**9  # a device clock more than a day ahead is wrong, not early
# BadUserAccessDenied, BadIdentityTokenInvalid, BadIdentityTokenRejected: wrong credentials, or a locked account
LOGIN_REFUSED = frozenset({0x801F0000, 0x80200000, 0x80210000})


def quality_of(status: int) -> Quality:
    """OPC-UA severity bits (the top two): 00 good, 01 uncertain, 10/11 bad."""
    sev = status >> 30
    return _GOOD if sev == 0 else _UNCERTAIN if sev == 1 else _BAD


class _Tag:
    __slots__ = ("address", "config", "name", "server_ts", "unit")

    def __init__(self, name: str, address: str, unit: str | None, config: OpcUaTag | None,
                 server_ts: bool = False) -> None:
        self.name = name
        self.address = address
        self.unit = unit
        self.config = config
        self.server_ts = server_ts
        """Carry the server timestamp in ``Sample.server_ts``."""


class _Device:
    """Link state of one device; its tags are indexed by client handle (their position in ``tags``)."""

    def __init__(self, source: OpcUaSource, name: str, cfg: OpcUaDevice, metrics: Metrics | None) -> None:
        self.source = source
        self.name = name
        self.cfg = cfg
        self.configured = [
            _Tag(t.name, t.node, t.unit, t, cfg.server_timestamp if t.server_timestamp is None else t.server_timestamp)
            for t in cfg.tags]
        self.wants_server_ts = any(t.server_ts for t in self.configured) or cfg.server_timestamp
        self.tags: list[_Tag] = list(self.configured)
        self.nodes: list[Any] = []
        self.session: Session | None = None
        self.last_activity = 0.0
        self.lost_reason: str | None = None
        self.wake = asyncio.Event()
        self.ready = asyncio.Event()
        """Set while a session is up and its tags are resolved (a write waits for it briefly)."""
        self.sessions_opened = 0
        self.items_created = 0
        self.notifications = 0
        self.last_error: str | None = None
        """Why the last connection attempt or session failed (None while healthy)."""
        self._ts_mode = cfg.timestamp
        self.insane_ts: set[int] = set()
        """Handles whose last timestamp was replaced (logged once per episode)."""
        self.timestamps_replaced = 0
        labels = (source.name, name)
        self.health = source.health.device(name)
        self._reads = metrics.device_reads.labels(*labels) if metrics else None
        self._request_seconds = metrics.device_request_seconds.labels(*labels) if metrics else None
        self._error_names: dict[int, str] = {}

    # --- metrics ------------------------------------------------------------------------------

    def count_error(self, code: int, n: int = 1, name: str | None = None) -> None:
        label = self._error_names.get(code)
        if label is None:
            label = self._error_names[code] = name or adapter.status_name(code)
        self.health.failed(label, n)

    def set_connected(self, up: bool, reason: str = "not connected") -> None:
        if up:
            self.health.up()
        else:
            self.health.down(reason)

    # --- the hot path ---------------------------------------------------------------------------

    def samples(self, rows: list[Row], gw: int) -> list[Sample]:
        tags = self.tags
        device = self.name
        mode = self._ts_mode
        latest = gw + FUTURE_SLACK_NS
        out: list[Sample] = []
        append = out.append
        n_bad = 0
        for handle, value, status, src, srv in rows:
            if handle >= len(tags):
                continue
            tag = tags[handle]
            if mode == "source":
                ts = src or srv or gw
            elif mode == "server":
                ts = srv or src or gw
            else:
                ts = gw
            # 1601-01-01 (the OPC-UA minimum), anything before 1970 or more than a day ahead: not a time
            # to file a value under. The receive time stands in and the sample says so.
            if not 0 < ts <= latest:
                ts, status = gw, self.insane_timestamp(handle, status)
            elif self.insane_ts and handle in self.insane_ts:
                self.sane_again(handle)
            keep = srv if tag.server_ts and 0 < srv <= latest else 0
            if status == 0:
                append(reading(device, tag.name, value, _GOOD, 0, ts, gw, tag.unit, keep))
            else:
                q = quality_of(status)
                if q is _BAD:
                    n_bad += 1
                    self.count_error(status)
                append(reading(device, tag.name, value, q, status, ts, gw, tag.unit, keep))
        if len(out) > n_bad:
            self.health.good(gw)
        return out

    def insane_timestamp(self, handle: int, status: int) -> int:
        """Count a replaced timestamp, log the tag's first one, and return the sample's status."""
        self.timestamps_replaced += 1
        self.count_error(UNCERTAIN_TIMESTAMP)
        if handle not in self.insane_ts:
            self.insane_ts.add(handle)
            self.source._log.warning("opcua timestamp outside the sane window; using the receive time",
                                    device=self.name, tag=self.tags[handle].name, timestamp=self._ts_mode)
        return UNCERTAIN_TIMESTAMP if status == 0 else status

    def sane_again(self, handle: int) -> None:
        self.insane_ts.discard(handle)
        self.source._log.info("opcua timestamps sane again", device=self.name, tag=self.tags[handle].name)

    def on_rows(self, rows: list[Row]) -> None:
        self.last_activity = time.monotonic()
        self.notifications += len(rows)
        if self._reads is not None:
            self._reads.inc(len(rows))
        self.source.offer(self, self.samples(rows, time.time_ns()))

    def on_keepalive(self) -> None:
        self.last_activity = time.monotonic()

    def on_status(self, status: int) -> None:
        if status & 0x80000000:
            self.lost_reason = f"subscription status {adapter.status_name(status)}"
            self.wake.set()

    def bad_rows(self, handles: list[int], code: int) -> None:
        """One BAD sample for each of ``handles`` (unresolved node, refused item, lost link)."""
        if handles:
            self.count_error(code, len(handles))
            gw = time.time_ns()
            self.source.offer(self, [
                bad(self.name, self.tags[h].name, code, gw, self.tags[h].unit)
                for h in handles
            ])


class OpcUaSource:
    def __init__(
        self,
        name: str,
        config: OpcUaSourceConfig,
        *,
        data_dir: str,
        log: structlog.stdlib.BoundLogger | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.pki = Pki(Path(config.data_dir or data_dir) / "pki")
        self._log = log if log is not None else structlog.stdlib.get_logger(__name__).bind(source=name)
        self.health = SourceHealth(name, config.devices)
        if metrics is not None:
            metrics.health.add_source(self.health)
        self.devices = {d: _Device(self, d, cfg, metrics) for d, cfg in config.devices.items()}
        self._queue: asyncio.Queue[Batch] = asyncio.Queue(maxsize=config.queue_max)
        self.dropped = 0
        """Samples dropped because the notification queue was full."""
        self._overflowing = False

    # --- queue ---------------------------------------------------------------------------------

    def offer(self, device: _Device, samples: list[Sample]) -> None:
        if not samples:
            return
        try:
            self._queue.put_nowait(Batch(self.name, samples))
            if self._overflowing and self._queue.qsize() < self._queue.maxsize // 2:
                self._overflowing = False
                self._log.info("opcua notification queue draining again", dropped=self.dropped)
        except asyncio.QueueFull:
            self.dropped += len(samples)
            device.count_error(0x80000000, len(samples), "QueueOverflow")
            if not self._overflowing:
                self._overflowing = True
                self._log.warning("opcua notification queue full; dropping notifications",
                                  queue_max=self._queue.maxsize)

    async def close(self) -> None:
        """Sessions close as ``run`` ends; one whose close was cut short by the stop budget closes here,
        and notifications still queued are dropped (the source is gone for good)."""
        for dev in self.devices.values():
            session, dev.session = dev.session, None
            dev.ready.clear()
            if session is not None:
                await session.close()
        while not self._queue.empty():
            self._queue.get_nowait()

    async def run(self, emit: Emit) -> None:
        async with asyncio.TaskGroup() as tg:
            for dev in self.devices.values():
                tg.create_task(self._device_loop(dev), name=f"opcua:{self.name}:{dev.name}")
            tg.create_task(self._forward(emit), name=f"opcua:{self.name}:forward")

    async def _forward(self, emit: Emit) -> None:
        queue = self._queue
        while True:
            batch = await queue.get()
            # merge whatever else is waiting: fewer, larger batches downstream
            while not queue.empty() and len(batch.samples) < 20_000:
                batch.samples.extend(queue.get_nowait().samples)
            await emit(batch)

    # --- link supervision -----------------------------------------------------------------------

    async def _device_loop(self, dev: _Device) -> None:
        cfg = dev.cfg
        backoff = Backoff(cfg.reconnect_initial, cfg.reconnect_max)
        log = self._log.bind(device=dev.name, endpoint=cfg.endpoint)
        last_error: str | None = None
        while True:
            session: Session | None = None
            delay: float | None = None
            try:
                session = await Session.open(cfg.endpoint, timeout=cfg.timeout, security=self._security(cfg),
                                             watchdog_interval=max(cfg.timeout, cfg.watchdog / 3))
                dev.sessions_opened += 1
                await self._setup(dev, session)
                dev.session = session
                dev.ready.set()
                dev.set_connected(True)
                backoff.reset()
                log.info("opcua device connected", tags=len(dev.tags), mode=cfg.mode)
                last_error = dev.last_error = None
                if cfg.mode == "subscribe":
                    await self._watch(dev, session)
                else:
                    await self._poll(dev, session)
            except OpcUaError as exc:
                message = dev.last_error = str(exc)
                dev.count_error(exc.code)
                refused = exc.code in LOGIN_REFUSED
                if refused:  # an account lock-out must not be hammered: straight to the longest delay
                    delay = cfg.reconnect_max
                if message != last_error:
                    if refused:
                        log.error("opcua login refused; retrying only every reconnect_max", error=message,
                                  status=adapter.status_name(exc.code), retry_in=cfg.reconnect_max)
                    else:
                        level = log.error if isinstance(exc, adapter.OpcUaSecurityError) else log.warning
                        level("opcua device unavailable; retrying with backoff", error=message)
                    last_error = message
            finally:
                was_up = dev.session is not None
                dev.session = None
                dev.ready.clear()
                dev.set_connected(False)
                if was_up:  # every tag BAD at once, before the (possibly slow) close
                    dev.bad_rows(list(range(len(dev.tags))), adapter.BAD_COMMUNICATION_ERROR)
                if session is not None:
                    await asyncio.shield(session.close())
            await asyncio.sleep(delay if delay is not None else backoff.next())

    def _security(self, cfg: OpcUaDevice) -> adapter.SecuritySetup | None:
        s = cfg.security
        if s.policy == "None" and s.username is None and s.certificate is None:
            return None
        return adapter.SecuritySetup(
            policy=s.policy, mode=s.mode, pki=self.pki,
            application_uri=s.application_uri or adapter.default_application_uri(),
            username=s.username, password=s.password.get_secret_value() if s.password else None,
            identity_cert=s.certificate, identity_key=s.private_key,
        )

    async def _setup(self, dev: _Device, session: Session) -> None:
        """Resolve addresses (every connect: namespace indices may have moved) and run discovery."""
        dev.tags = list(dev.configured)
        resolved = await session.resolve([t.address for t in dev.tags])
        for spec in dev.cfg.discover:
            found = await self._discover(session, spec, {t.name for t in dev.tags})
            for name, node in found:
                dev.tags.append(_Tag(name, node.to_string(), None, None))
                resolved.append(node)
        dev.nodes = [None if isinstance(r, OpcUaError) else r for r in resolved]
        failed: dict[int, list[int]] = {}
        for h, r in enumerate(resolved):
            if isinstance(r, OpcUaError):
                failed.setdefault(r.code, []).append(h)
                self._log.warning("opcua tag unresolved", device=dev.name, tag=dev.tags[h].name, error=str(r))
        for code, handles in failed.items():
            dev.bad_rows(handles, code)
        dev.last_activity = time.monotonic()

    async def _discover(self, session: Session, spec: Any, taken: set[str]) -> list[tuple[str, Any]]:
        root = (await session.resolve([spec.root]))[0]
        if isinstance(root, OpcUaError):
            self._log.warning("opcua discovery root unresolved", root=spec.root, error=str(root))
            return []
        found: list[tuple[str, Any]] = []
        frontier: list[tuple[Any, str]] = [(root, "")]
        for _ in range(spec.depth):
            nxt: list[tuple[Any, str]] = []
            for node, prefix in frontier:
                try:
                    entries = await session.browse(node)
                except OpcUaError as exc:
                    if exc.code not in (adapter.BAD_NODE_ID_UNKNOWN, adapter.BAD_NODE_ID_INVALID):
                        raise  # the link, not the node: reconnect
                    self._log.warning("opcua discovery skipped a node", root=spec.root, error=str(exc))
                    continue
                for e in entries:
                    path = f"{prefix}.{e.name}" if prefix else e.name
                    if e.is_property:
                        continue
                    if (e.node_class == "Variable"
                            and any(fnmatch.fnmatchcase(e.name, p) for p in spec.include)
                            and not any(fnmatch.fnmatchcase(e.name, p) for p in spec.exclude)
                            and path not in taken):
                        taken.add(path)
                        found.append((path, e.ref))
                        if len(found) >= spec.max_nodes:
                            return found
                    if e.node_class in ("Object", "Variable"):
                        nxt.append((e.ref, path))
            frontier = nxt
        return found

    async def _watch(self, dev: _Device, session: Session) -> None:
        cfg = dev.cfg
        items = []
        # A deadband without a trigger: status_value for numbers, status_value_timestamp otherwise (a text
        # or a state that is set again to the same value still reports its new timestamp).
        default_trigger = [h for h, node in enumerate(dev.nodes) if node is not None and (t := dev.tags[h].config)
                           and t.trigger is None and (t.server_deadband is not None
                                                      or t.server_deadband_percent is not None)]
        numeric = dict(zip(default_trigger, await session.numeric([dev.nodes[h] for h in default_trigger]),
                           strict=True)) if default_trigger else {}
        for h, node in enumerate(dev.nodes):
            if node is None:
                continue
            t = dev.tags[h].config
            trigger = t.trigger if t else None
            if h in numeric:
                trigger = "status_value" if numeric[h] else "status_value_timestamp"
            items.append(ItemSpec(
                handle=h, node=node,
                sampling_ms=1000 * (t.sampling_interval if t and t.sampling_interval is not None
                                    else cfg.sampling_interval),
                queue_size=t.queue_size if t and t.queue_size else cfg.queue_size,
                trigger=trigger,
                deadband=t.server_deadband if t else None,
                deadband_percent=t.server_deadband_percent if t else None,
            ))
        keepalive = max(1, math.floor(cfg.watchdog / (3 * cfg.publishing_interval)))
        dev.wake.clear()
        dev.lost_reason = None
        codes = await session.subscribe(
            cfg.publishing_interval, items, dev.on_rows, dev.on_keepalive, dev.on_status,
            keepalive_count=keepalive, timestamps="both" if dev.wants_server_ts else cfg.timestamp,
        )
        refused: dict[int, list[int]] = {}
        for it, code in zip(items, codes, strict=True):
            if code & 0x80000000:
                refused.setdefault(code, []).append(it.handle)
            else:
                dev.items_created += 1
        for code, handles in refused.items():
            self._log.warning("opcua monitored items refused", device=dev.name, status=adapter.status_name(code),
                              tags=[dev.tags[h].name for h in handles][:10], count=len(handles))
            dev.bad_rows(handles, code)
        del items, codes, refused, numeric  # the item specs are the server's now: ~160 bytes an item, kept for nothing
        dev.last_activity = time.monotonic()
        tick = min(1.0, cfg.watchdog / 4)
        me = asyncio.current_task()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(dev.wake.wait(), tick)
            # Python 3.11's wait_for can lose a cancellation that arrives as its wait ends; the task still
            # counts it, so honour it here or a stop (or `edge-gateway write`) waits for ever
            if me is not None and me.cancelling():
                raise asyncio.CancelledError
            if session.lost.is_set():
                raise OpcUaError("connection lost")
            if dev.lost_reason is not None:
                raise OpcUaError(dev.lost_reason)
            silent = time.monotonic() - dev.last_activity
            if silent > cfg.watchdog:
                raise OpcUaError(f"watchdog: no keep-alive nor data for {silent:.1f}s", 0x800A0000)

    async def _poll(self, dev: _Device, session: Session) -> None:
        cfg = dev.cfg
        handles = [h for h, n in enumerate(dev.nodes) if n is not None]
        nodes = [dev.nodes[h] for h in handles]
        loop = asyncio.get_running_loop()
        start = loop.time()
        tick = 0
        while True:
            if session.lost.is_set():
                raise OpcUaError("connection lost")
            t0 = time.monotonic()
            rows = await session.read(nodes)
            if dev._request_seconds is not None:
                dev._request_seconds.observe(time.monotonic() - t0)
            dev.on_rows([(handles[i], v, st, src, srv) for i, v, st, src, srv in rows])
            tick += 1
            due = start + tick * cfg.poll_interval
            now = loop.time()
            if now > due:  # overran: skip to the next future tick rather than bursting
                tick = int((now - start) / cfg.poll_interval) + 1
                due = start + tick * cfg.poll_interval
            await asyncio.sleep(due - now)

    # --- writes ----------------------------------------------------------------------------------

    async def _target(self, device: str, tag: str) -> tuple[Session, Any, OpcUaTag]:
        """The session and node of a writable tag, waiting up to the device's timeout for its link."""
        dev = self.devices.get(device)
        if dev is None:
            raise WriteError(f"source {self.name!r} has no device {device!r}")
        handle = next((h for h, t in enumerate(dev.tags) if t.name == tag), None)
        if handle is None:
            raise WriteError(f"source {self.name!r} has no tag {tag!r} on device {device!r}")
        cfg = dev.tags[handle].config
        if cfg is None or not cfg.writable:
            raise WriteError(f"tag {device}/{tag} of source {self.name!r} is not writable (set writable: true)")
        if dev.session is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(dev.ready.wait(), dev.cfg.timeout)
        session = dev.session
        if session is None:
            why = f": {dev.last_error}" if dev.last_error else ""
            raise DeviceNotConnected(f"device {device!r} is not connected{why}")
        node = dev.nodes[handle] if handle < len(dev.nodes) else None
        if node is None:
            raise WriteError(f"tag {device}/{tag}: node {cfg.node!r} did not resolve")
        return session, node, cfg

    async def write_kind(self, device: str, tag: str) -> WriteKind:
        session, node, _ = await self._target(device, tag)
        try:
            return await session.write_kind(node)
        except OpcUaError as exc:
            raise WriteError(f"{device}/{tag}: {exc}") from exc

    async def write(self, device: str, tag: str, value: Value) -> None:
        """Write a raw value (checked by ``gateway.writes.coerce``) as the node's own DataType."""
        session, node, _ = await self._target(device, tag)
        try:
            await session.write(node, value)
        except OpcUaError as exc:
            raise WriteError(f"{device}/{tag}: {exc}") from exc
