"""The Modbus source: one connection, its devices' reads planned once, each poll group on its own interval.

Every request goes through one lock (plus the optional inter-frame delay), so a connection carries one
transaction at a time; separate sources (connections) poll concurrently. Failures stay as local as
the protocol allows:

- an exception response marks the tags of that read BAD with the exception code; the link stays up;
- a timeout marks that read BAD (status 11, "gateway target failed to respond") and skips the unit's
  remaining reads for this tick, so a dead unit costs the others on the link one timeout per tick;
- a lost link or a garbled frame closes the client; reads then fail at once (status 10) and the link
  is reconnected with exponential backoff and jitter, forever, from the next tick on.

Values are emitted raw, in batches of at most ``EMIT_AFTER`` worth of a device's reads; the engine applies
scale/offset afterwards.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog

from connectors.modbus import writer
from connectors.modbus.adapter import (
    DeviceException,
    LinkDown,
    ModbusClient,
    ProtocolError,
    RequestTimeout,
)
from connectors.modbus.config import ModbusSourceConfig, ModbusTag
from connectors.modbus.planner import ReadRequest, plan_source
from gateway.backoff import Backoff
from gateway.contracts import Emit
from gateway.errors import WriteError
from gateway.metrics import Metrics
from gateway.model import Batch, Quality, Sample, Value
from gateway.status_codes import status_name
from gateway.writes import WriteKind

STATUS_NOT_CONNECTED = 10  # Modbus "gateway path unavailable"
STATUS_TIMEOUT = 11  # Modbus "gateway target device failed to respond"
EMIT_AFTER = 0.02  # s: the longest a read value waits for the device's other reads before it is emitted

_new = tuple.__new__
_GOOD, _BAD = Quality.GOOD, Quality.BAD


class _DeviceState:
    """Per-device metrics children (cached once) and the silent flag that limits its cost."""

    def __init__(self, source: str, device: str, metrics: Metrics | None) -> None:
        self.device = device
        self.silent = False
        self._metrics = metrics
        self._source = source
        self._errors: dict[str, Any] = {}
        if metrics is not None:
            self.connected = metrics.device_connected.labels(source, device)
            self.reads = metrics.device_reads.labels(source, device)
            self.last_good = metrics.device_last_good.labels(source, device)
            self.request_seconds = metrics.device_request_seconds.labels(source, device)
            self.skipped = metrics.skipped_ticks.labels(source, device)

    def error(self, code: str) -> None:
        if self._metrics is None:
            return
        child = self._errors.get(code)
        if child is None:
            child = self._errors[code] = self._metrics.device_errors.labels(self._source, self.device, code)
        child.inc()


class ModbusSource:
    def __init__(self, name: str, config: ModbusSourceConfig, *, log: structlog.stdlib.BoundLogger | None = None,
                 metrics: Metrics | None = None, recovery_quiet: float = 10.0) -> None:
        self.name = name
        self.config = config
        self.recovery_quiet = recovery_quiet
        self._log = log if log is not None else structlog.stdlib.get_logger(__name__).bind(source=name)
        self._metrics = metrics
        self.plan = plan_source(config)
        self.skipped_ticks = 0
        self.requests = 0
        self._devices = {d: _DeviceState(name, d, metrics) for d in config.devices}
        self._tags: dict[tuple[str, str], tuple[int, ModbusTag]] = {}
        for device, dev in config.devices.items():
            for tag in dev.tags:
                self._tags[(device, tag.name)] = (dev.unit, tag)
        self._client: ModbusClient | None = None
        self._lock = asyncio.Lock()
        self._backoff = Backoff(config.reconnect_initial, config.reconnect_max)
        self._next_connect = 0.0
        self._link_logged: bool | None = None

    # --- connection ---------------------------------------------------------------------------------

    def _new_client(self) -> ModbusClient:
        c = self.config
        return ModbusClient(c.transport, host=c.host, port=c.port, serial=c.serial, timeout=c.timeout)

    async def _ensure_link(self, *, force: bool = False) -> ModbusClient:
        """The connected client, connecting when the backoff allows; LinkDown otherwise. Holds the lock."""
        client = self._client
        if client is not None and client.connected:
            return client
        loop = asyncio.get_running_loop()
        if not force and loop.time() < self._next_connect:
            raise LinkDown("waiting to reconnect")
        if client is not None:
            client.close()
        client = self._client = self._new_client()
        if await client.connect():
            self._backoff.reset()
            self._set_link(True, None)
            return client
        client.close()
        self._client = None
        delay = self._backoff.next()
        self._next_connect = loop.time() + delay
        self._set_link(False, f"connect to {client.target} failed; retrying in {delay:.1f}s")
        raise LinkDown(f"cannot connect to {client.target}")

    def _drop_link(self, reason: str) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        self._next_connect = 0.0  # reconnect on the next request; the backoff applies from its failure on
        self._set_link(False, reason)

    def _set_link(self, up: bool, reason: str | None) -> None:
        for state in self._devices.values():
            if self._metrics is not None:
                state.connected.set(1 if up and not state.silent else 0)
        if self._link_logged is up:
            return
        self._link_logged = up
        if up:
            self._log.info("modbus link up", target=self._client.target if self._client else None)
        else:
            self._log.warning("modbus link down", reason=reason)

    # --- polling ------------------------------------------------------------------------------------

    async def run(self, emit: Emit) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                for group, requests in self.plan.items():
                    interval = self.config.group_intervals()[group]
                    tg.create_task(self._poll_group(group, interval, requests, emit), name=f"{self.name}:{group}")
        finally:
            if self._client is not None:
                self._client.close()
                self._client = None

    async def _poll_group(self, group: str, interval: float, requests: list[ReadRequest], emit: Emit) -> None:
        loop = asyncio.get_running_loop()
        by_device: dict[str, list[ReadRequest]] = {}
        for req in requests:
            by_device.setdefault(req.device, []).append(req)
        states = [self._devices[d] for d in by_device]
        start = loop.time()
        tick = 0
        behind = False
        last_skip = 0.0
        me = asyncio.current_task()
        assert me is not None
        while True:
            await asyncio.sleep(max(start + tick * interval - loop.time(), 0.0))
            for device, reqs in by_device.items():
                await self._poll_device(self._devices[device], reqs, emit, me)
            now = loop.time()
            latest_due = int((now - start) / interval)
            if latest_due > tick + 1:
                skipped = latest_due - tick - 1
                self.skipped_ticks += skipped
                if self._metrics is not None:
                    for state in states:
                        state.skipped.inc(skipped)
                last_skip = now
                if not behind:
                    behind = True
                    self._log.warning("modbus poll overrunning its interval; skipping ticks", group=group,
                                      interval=interval, skipped=skipped)
                tick = latest_due
            else:
                if behind and now - last_skip >= self.recovery_quiet:
                    behind = False
                    self._log.info("modbus poll back on time", group=group)
                tick += 1

    async def _poll_device(self, state: _DeviceState, requests: list[ReadRequest], emit: Emit,
                           me: asyncio.Task[Any]) -> None:
        """A device's values go out at most ``EMIT_AFTER`` after they were read: a 1,000-tag device takes ~17
        round trips, and holding its first values back for the rest would add to the end-to-end latency,
        while one batch per read would multiply the per-batch work downstream (spool rows, sink writes)."""
        failed: tuple[int, str] | None = None  # once the unit timed out or the link is down, skip its rest
        samples: list[Sample] = []
        since = 0.0
        for req in requests:
            if failed is None:
                status, code = await self._read(state, req, samples)
                if not (status == 0 or code.isdigit()):
                    failed = (status, code)
                # Python 3.11's wait_for (inside pymodbus) loses a cancellation that arrives as the
                # response does; the task still counts it, so honour it here or shutdown never ends.
                if me.cancelling():
                    raise asyncio.CancelledError
            else:
                state.error(failed[1])
                ts = time.time_ns()
                samples.extend(_new(Sample, (req.device, t.name, None, _BAD, failed[0], ts, ts, t.unit, 0))
                               for t in req.tags)
            now = time.monotonic()
            if not since:
                since = now
            elif now - since >= EMIT_AFTER:
                await emit(Batch(self.name, samples))
                samples, since = [], 0.0
        if samples:
            await emit(Batch(self.name, samples))

    async def _read(self, state: _DeviceState, req: ReadRequest, out: list[Sample]) -> tuple[int, str]:
        """One read into ``out``; returns (0, "") or the failure's (status, metrics code)."""
        delay = self.config.inter_frame_delay
        async with self._lock:
            t0 = time.perf_counter()
            try:
                client = await self._ensure_link()
                data = await client.read(req.table, req.address, req.count, req.unit)
                status, code = 0, ""
            except DeviceException as exc:
                status, code = exc.code, str(exc.code)
            except RequestTimeout:
                status, code = STATUS_TIMEOUT, "timeout"
            except ProtocolError as exc:
                self._drop_link(f"protocol error: {exc}")
                status, code = STATUS_TIMEOUT, "protocol"
            except LinkDown as exc:
                if self._client is not None:  # lost during the read (not a refused connect)
                    self._drop_link(str(exc))
                status, code = STATUS_NOT_CONNECTED, "not_connected"
            elapsed = time.perf_counter() - t0
            self.requests += status != STATUS_NOT_CONNECTED
            if delay and status != STATUS_NOT_CONNECTED:
                await asyncio.sleep(delay)
        ts = time.time_ns()
        if status == 0:
            device = req.device
            out.extend([_new(Sample, (device, name, v, _GOOD, 0, ts, ts, unit, 0))
                        for (name, unit), v in zip(req.labels, req.decode(data), strict=True)])
        else:
            out.extend(_new(Sample, (req.device, name, None, _BAD, status, ts, ts, unit, 0))
                       for name, unit in req.labels)
        self._account(state, status, code, elapsed, ts)
        return status, code

    def _account(self, state: _DeviceState, status: int, code: str, elapsed: float, ts: int) -> None:
        answered = status == 0 or code.isdigit()  # an exception response is an answer too
        if answered and state.silent:
            state.silent = False
            self._log.info("modbus unit answering again", device=state.device)
        elif code == "timeout" and not state.silent:
            state.silent = True
            self._log.warning("modbus unit not answering", device=state.device, timeout=self.config.timeout)
        if self._metrics is None:
            return
        if status != STATUS_NOT_CONNECTED:
            state.request_seconds.observe(elapsed)
        if status == 0:
            state.reads.inc()
            state.last_good.set(ts / 1e9)
        else:
            state.error(code)
        if code != "not_connected":
            state.connected.set(0 if state.silent else 1)

    # --- writes -------------------------------------------------------------------------------------

    def _tag(self, device: str, tag: str) -> ModbusTag:
        entry = self._tags.get((device, tag))
        if entry is None:
            raise WriteError(f"source {self.name!r} has no tag {tag!r} on device {device!r}")
        return entry[1]

    async def write_kind(self, device: str, tag: str) -> WriteKind:
        return writer.write_kind(self._tag(device, tag))

    async def write(self, device: str, tag: str, value: Value) -> None:
        """Write a raw value (checked by ``gateway.writes.coerce``) with the tag's type and order."""
        t = self._tag(device, tag)
        if not t.writable:
            raise WriteError(f"tag {device}/{tag} of source {self.name!r} is not writable (set writable: true)")
        try:
            async with self._lock:
                client = await self._ensure_link(force=True)
                await writer.write_tag(client, self.config.devices[device], t, value)
        except DeviceException as exc:
            raise WriteError(f"{device}/{tag}: the device refused the write: {status_name(exc.code)} "
                             f"(exception {exc.code})") from exc
        except (RequestTimeout, LinkDown, ProtocolError) as exc:
            raise WriteError(f"{device}/{tag}: {exc}") from exc

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

