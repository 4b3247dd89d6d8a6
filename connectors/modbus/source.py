"""The Modbus source: one connection, its devices' reads planned once, each poll group on its own interval.

Every request goes through one lock (plus the optional inter-frame delay), so a connection carries one
transaction at a time; separate sources (connections) poll concurrently. Failures stay as local as
the protocol allows:

- an exception response (2, 3 or 4) to a read that spans several tags is narrowed down in the same
  poll: the read is cut in halves, recursively, down to single tags, so only the tags whose own
  registers fail are BAD with the exception code and their neighbours stay GOOD (a tag in an address
  hole cannot black out the rest, whatever ``max_gap``). The split is kept, so later polls read the
  parts directly, and the merged read is tried again every ``split_reprobe`` (a device that recovers,
  or was reconfigured, is read in one request again). The link stays up;
- a timeout marks that read BAD (``BadTimeout``) and skips the unit's remaining reads for this tick,
  so a dead unit costs the others on the link one timeout per tick;
- a malformed or short reply marks that read BAD (``BadDecodingError``) and resets the link;
- a lost link fails reads at once (``BadNotConnected``). Reconnects back off exponentially, with
  jitter, forever; the backoff only resets once a connection has answered more than one request, so
  a server that closes the connection after every request is not reconnected on every poll.

Status codes are ``gateway.status_codes``: Modbus exception codes as the device sent them, and the
gateway's own codes (OPC-UA codes of the same meaning) for what happened on the link, so a timeout is
never mistaken for a device's exception 11. A group of tags entering or leaving an exception state is
logged once per transition, with the code's name and the tags; a unit going silent and the link going
down are logged once per transition too.

Values are emitted raw, stamped with the time their own request was answered, in batches of a device's
reads that hold the oldest value about ``EMIT_AFTER`` at most; the engine applies scale/offset afterwards.
A poll group polls at start, then on its phase of the wall clock's intervals (``phase``, else ``poll_phase``).
"""

from __future__ import annotations

import asyncio
import time
import zlib
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
from connectors.modbus.planner import ReadRequest, halves, plan_source
from gateway.backoff import Backoff
from gateway.contracts import Emit
from gateway.errors import WriteError
from gateway.health import DeviceHealth, SourceHealth
from gateway.metrics import Metrics
from gateway.model import Batch, Quality, Sample, Value
from gateway.samples import bad, good
from gateway.status_codes import BAD_DECODING_ERROR, BAD_NOT_CONNECTED, BAD_TIMEOUT, status_name
from gateway.writes import WriteKind

SPLIT_CODES = frozenset({2, 3, 4})  # IllegalDataAddress, IllegalDataValue, ServerDeviceFailure: maybe one register
HEALTHY_AFTER = 2  # answered requests after which a connection counts as healthy (the backoff resets)
LOGGED_TAGS = 10  # tag names quoted in a state-change log line
# s: about the longest a read value waits for the device's next reads before it is emitted. Each batch costs
# a spool commit, a message and its ack downstream: against a device answering in ~1.5 ms, 5 ms made ~55
# batches a second of 10 x 1,000 tags (gateway CPU 7.3-8.8 %), 10 ms ~27 (5.3-5.9 %) at p50 6 -> 8 ms.
EMIT_AFTER = 0.010

_GOOD, _BAD = Quality.GOOD, Quality.BAD


def _answered(status: int) -> bool:
    """The unit answered: data, or an exception response (codes 1-255)."""
    return status < 256


class _Split:
    """A merged read the device refused, and the parts it is read in instead until the next re-probe."""

    __slots__ = ("parts", "reprobe_at")

    def __init__(self, parts: list[ReadRequest], reprobe_at: float) -> None:
        self.parts = parts
        self.reprobe_at = reprobe_at


class _DeviceState:
    """Per-device health (``gateway.health``), metrics children (cached once) and the silent flag."""

    def __init__(self, source: str, device: str, health: DeviceHealth, metrics: Metrics | None) -> None:
        self.device = device
        self.silent = False
        self.health = health
        self._metrics = metrics
        if metrics is not None:
            self.reads = metrics.device_reads.labels(source, device)
            self.request_seconds = metrics.device_request_seconds.labels(source, device)
            self.skipped = metrics.skipped_ticks.labels(source, device)

    def error(self, code: str) -> None:
        self.health.failed(code)


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
        self.health = SourceHealth(name, config.devices)
        if metrics is not None:
            metrics.health.add_source(self.health)
        self._devices = {d: _DeviceState(name, d, self.health.device(d), metrics) for d in config.devices}
        slow = config.slow_after if config.slow_after is not None else config.timeout / 2
        for state in self._devices.values():
            state.health.slow_after = slow
        # name -> tag per device, built on a device's first write: writes are rare, and an index of every
        # tag would cost ~140 bytes a tag for nothing
        self._write_index: dict[str, dict[str, ModbusTag]] = {}
        self._client: ModbusClient | None = None
        self._lock = asyncio.Lock()
        self._backoff = Backoff(config.reconnect_initial, config.reconnect_max)
        self._next_connect = 0.0
        self._link_logged: bool | None = None
        self._served = 0  # requests the current connection answered
        self._splits: dict[int, _Split] = {}  # id(planned read) -> its parts, for reads the device refused whole
        self._failing: dict[int, int] = {}  # id(read) -> exception code, while its tags fail (logged once)
        self.splits = 0
        """Merged reads narrowed down after an exception (counted each time one is learned)."""

    # --- connection ---------------------------------------------------------------------------------

    def _new_client(self) -> ModbusClient:
        c = self.config
        return ModbusClient(c.transport, host=c.host, port=c.port, serial=c.serial, timeout=c.timeout)

    async def _ensure_link(self, *, force: bool = False) -> ModbusClient:
        """The connected client, connecting when the backoff allows; LinkDown otherwise. Holds the lock."""
        client = self._client
        if client is not None and client.connected:
            return client
        if client is not None:  # closed since the last request (by the device, or a dead socket)
            self._drop_link(f"connection to {client.target} closed")
        loop = asyncio.get_running_loop()
        if not force and loop.time() < self._next_connect:
            raise LinkDown("waiting to reconnect")
        client = self._client = self._new_client()
        if await client.connect():
            self._served = 0  # the backoff resets once this connection has proven itself
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
        # backed off like a failed connect: a device that closes (or garbles) every connection is not
        # reconnected on every poll; a healthy connection had reset the backoff to its initial delay
        self._next_connect = asyncio.get_running_loop().time() + self._backoff.next()
        self._set_link(False, reason)

    def _set_link(self, up: bool, reason: str | None) -> None:
        for state in self._devices.values():
            state.health.link = up  # the connection; whether the unit answers on it is `connected`
            if up and not state.silent:
                state.health.up()
            elif up:
                state.health.down("not answering")
            else:  # the reason names the host: it goes to the log, /health stays without it
                state.health.down("not connected")
        if self._link_logged is up:
            return
        self._link_logged = up
        if up:
            self._log.info("modbus link up", target=self._client.target if self._client else None)
        else:
            self._log.warning("modbus link down", status=status_name(BAD_NOT_CONNECTED), reason=reason)

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
        # The first poll at once, the later ones on this group's own phase of the interval: sources started
        # together (every source of a gateway) would otherwise fire in the same millisecond each time, and
        # each value would wait behind all of their answers on its way out.
        phase = poll_phase(self.name, group, interval) if self.config.phase is None else self.config.phase % interval
        start = loop.time() + (phase - time.time()) % interval - interval  # tick 1: the next wall-clock phase
        tick = 1  # due at start + tick * interval
        behind = False
        last_skip = 0.0
        me = asyncio.current_task()
        assert me is not None
        for device, reqs in by_device.items():
            await self._poll_device(self._devices[device], reqs, emit, me)
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
        """A device's values wait for its next read only while that read (expected to take as long as the
        last one) still ends within ``EMIT_AFTER`` of the oldest: a 1,000-tag device takes ~17 round trips,
        and holding its first values back for the rest would add to the end-to-end latency, while one
        batch per read of a fast device would multiply the per-batch work downstream (spool rows, writes)."""
        failed = 0  # once the unit timed out or the link is down: that status for the rest of its reads
        samples: list[Sample] = []
        since = 0.0
        prev = time.monotonic()
        for req in requests:
            if not failed:
                status = await self._read_planned(state, req, samples)
                if not _answered(status):
                    failed = status
                # Python 3.11's wait_for (inside pymodbus) loses a cancellation that arrives as the
                # response does; the task still counts it, so honour it here or shutdown never ends.
                if me.cancelling():
                    raise asyncio.CancelledError
            else:
                state.error(status_name(failed))
                _bad(req, failed, samples)
            now = time.monotonic()
            took, prev = now - prev, now
            if not since:
                since = now
            if now - since + took > EMIT_AFTER:
                await emit(Batch(self.name, samples))
                samples, since = [], 0.0
                prev = time.monotonic()  # the emit is not the device's time
        if samples:
            await emit(Batch(self.name, samples))

    async def _read_planned(self, state: _DeviceState, req: ReadRequest, out: list[Sample]) -> int:
        """One planned read into ``out`` (narrowed down when refused); returns 0 or the link failure's status."""
        split = self._splits.get(id(req)) if self._splits else None
        now = asyncio.get_running_loop().time()
        if split is not None and now < split.reprobe_at:
            return await self._read_parts(state, split, out)
        status, data, ts = await self._transact(state, req)
        if split is not None:
            if status == 0:  # the device takes the merged read again
                del self._splits[id(req)]
                for part in split.parts:
                    self._track(part, 0)
                self._log.info("modbus read merged again", device=req.device, table=req.table,
                               address=req.address, count=req.count)
            elif status in SPLIT_CODES:
                split.reprobe_at = now + self.config.split_reprobe
                return await self._read_parts(state, split, out)
        elif status in SPLIT_CODES and _splittable(req):
            parts, status = await self._narrow(state, req, out)
            if parts is not None:
                self.splits += 1
                self._splits[id(req)] = _Split(parts, now + self.config.split_reprobe)
                self._log.info("modbus read narrowed down after an exception", device=req.device,
                               table=req.table, address=req.address, count=req.count, parts=len(parts),
                               reprobe_in=self.config.split_reprobe)
            return status
        self._samples(req, status, data, ts, out)
        return 0 if _answered(status) else status

    async def _narrow(self, state: _DeviceState, req: ReadRequest,
                      out: list[Sample]) -> tuple[list[ReadRequest] | None, int]:
        """Read ``req`` in halves, recursively, until every part answers (data, or an exception for one tag).
        Returns the parts, or None and the status when the link failed on the way (the rest is BAD)."""
        parts: list[ReadRequest] = []
        pending = list(halves(req))
        while pending:
            part = pending.pop(0)
            status, data, ts = await self._transact(state, part)
            if status in SPLIT_CODES and _splittable(part):
                pending[0:0] = halves(part)  # depth first: samples stay in address order
                continue
            self._samples(part, status, data, ts, out)
            if not _answered(status):
                for rest in pending:
                    _bad(rest, status, out, ts)
                return None, status
            parts.append(part)
        return parts, 0

    async def _read_parts(self, state: _DeviceState, split: _Split, out: list[Sample]) -> int:
        parts: list[ReadRequest] = []
        for i, part in enumerate(split.parts):
            status, data, ts = await self._transact(state, part)
            if status in SPLIT_CODES and _splittable(part):  # a part that answered before refuses now
                self._failing.pop(id(part), None)
                sub, status = await self._narrow(state, part, out)
                if sub is not None:
                    parts.extend(sub)
                    continue
            else:
                self._samples(part, status, data, ts, out)
            if not _answered(status):
                for rest in split.parts[i + 1:]:
                    _bad(rest, status, out, ts)
                split.parts = parts + split.parts[i:]
                return status
            parts.append(part)
        split.parts = parts
        return 0

    def _samples(self, req: ReadRequest, status: int, data: Any, ts: int, out: list[Sample]) -> None:
        """The samples of one request, stamped ``ts``: when that request was answered (or failed)."""
        if status == 0:
            device = req.device
            out.extend([good(device, name, v, ts, unit)
                        for name, unit, v in zip(req.names, req.units, req.decode(data), strict=True)])
            if self._failing and id(req) in self._failing:
                self._track(req, 0)
        else:
            _bad(req, status, out, ts)
            if _answered(status):
                self._track(req, status)

    def _track(self, req: ReadRequest, status: int) -> None:
        """Log a group of tags entering or leaving an exception state, once per transition."""
        key = id(req)
        if self._failing.get(key, 0) == status:
            return
        names = req.names
        if status:
            self._failing[key] = status
            self._log.warning("modbus tags answered with an exception", device=req.device, status=status_name(status),
                              code=status, table=req.table, address=req.address, tags=names[:LOGGED_TAGS],
                              count=len(names))
        elif self._failing.pop(key, None) is not None:
            self._log.info("modbus tags answering again", device=req.device, table=req.table, address=req.address,
                           tags=names[:LOGGED_TAGS], count=len(names))

    async def _transact(self, state: _DeviceState, req: ReadRequest) -> tuple[int, Any, int]:
        """One request on the link: (0, data, answered) or (status, None, failed), with the wall time
        (ns) the answer (or the failure) came, before any inter-frame delay: the samples' timestamp."""
        delay = self.config.inter_frame_delay
        data: Any = None
        async with self._lock:
            t0 = time.perf_counter()
            try:
                client = await self._ensure_link()
                data = await client.read(req.table, req.address, req.count, req.unit)
                status = 0
            except DeviceException as exc:
                status = exc.code
            except RequestTimeout:
                status = BAD_TIMEOUT
            except ProtocolError as exc:
                self._drop_link(f"malformed reply: {exc}")
                status = BAD_DECODING_ERROR
            except LinkDown as exc:
                if self._client is not None:  # lost during the read (not a refused connect)
                    self._drop_link(str(exc))
                status = BAD_NOT_CONNECTED
            ts = time.time_ns()
            if _answered(status):
                self._served += 1
                if self._served == HEALTHY_AFTER:
                    self._backoff.reset()
            elapsed = time.perf_counter() - t0
            self.requests += status != BAD_NOT_CONNECTED
            if delay and status != BAD_NOT_CONNECTED:
                await asyncio.sleep(delay)
        self._account(state, status, elapsed, ts)
        return status, data, ts

    def _account(self, state: _DeviceState, status: int, elapsed: float, ts: int) -> None:
        if _answered(status) and state.silent:
            state.silent = False
            self._log.info("modbus unit answering again", device=state.device)
        elif status == BAD_TIMEOUT and not state.silent:
            state.silent = True
            self._log.warning("modbus unit not answering", device=state.device, status=status_name(status),
                              timeout=self.config.timeout)
        health = state.health
        if _answered(status):
            health.reply_s = elapsed  # slow replies show as such on the status page, the link being up
        if status == 0:
            health.good(ts)
        else:
            health.failed(status_name(status))
        if status != BAD_NOT_CONNECTED:
            if state.silent:
                health.down(f"not answering ({status_name(status)})")
            else:
                health.up()
        if self._metrics is None:
            return
        if status != BAD_NOT_CONNECTED:
            state.request_seconds.observe(elapsed)
        if status == 0:
            state.reads.inc()

    # --- writes -------------------------------------------------------------------------------------

    def _tag(self, device: str, tag: str) -> ModbusTag:
        index = self._write_index.get(device)
        if index is None and device in self.config.devices:
            index = self._write_index[device] = {t.name: t for t in self.config.devices[device].tags}
        found = index.get(tag) if index is not None else None
        if found is None:
            raise WriteError(f"source {self.name!r} has no tag {tag!r} on device {device!r}")
        return found

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


def poll_phase(source: str, group: str, interval: float) -> float:
    """Where in the wall clock's intervals a poll group's ticks fall when the source sets no ``phase``, from its
    names: stable across restarts, spread."""
    return zlib.crc32(f"{source}/{group}".encode()) % 1000 / 1000 * interval


def _splittable(req: ReadRequest) -> bool:
    """More than one register (or bit) address: tags sharing one register fail together."""
    return req.addresses[0] != req.addresses[-1]


def _bad(req: ReadRequest, status: int, out: list[Sample], ts: int | None = None) -> None:
    """BAD samples of ``req``, stamped ``ts`` (the failure), or now for a read skipped after one."""
    ts = time.time_ns() if ts is None else ts
    device = req.device
    out.extend([bad(device, name, status, ts, unit) for name, unit in zip(req.names, req.units, strict=True)])
