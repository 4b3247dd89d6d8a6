"""Serve a line (a scenario's ``LineModel``, or a replayed recording) over Modbus TCP and OPC-UA at once.

Both protocol servers are the existing simulators, built from the line's points (``Point``: one per
machine signal, with its Modbus placement and OPC-UA type) and bound to the *same* value list, so a
value read over Modbus is the value published over OPC-UA at that moment:

- Modbus: each tag's value callable reads ``model.values[i]`` when a request touches it; a client's
  write goes to ``model.write`` (refused with exception 3 outside the point's limits, 2 on a
  register that is not a writable point), so OPC-UA shows it too.
- OPC-UA: after every model step the changed values are published (one DataValue per change, so an
  unchanged value raises no notification); a client's write to a writable variable is read back on
  the next step and handed to ``model.write``.

Protocol-level faults come from the model (``active_faults``): ``offline`` silences a machine's unit
and marks its variables BadNoCommunication, ``exception`` answers its requests with an exception code
(OPC-UA, when the fault says ``both``/``opcua``: BadDeviceFailure), ``slow`` delays its replies, and
``restart`` takes a protocol's server down for the window.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from connectors.modbus.codec import decode
from connectors.modbus.config import BIT_TABLES, Table
from gateway.logs import get_logger
from simulators.line.model import ActiveFault
from simulators.line.points import Point

if TYPE_CHECKING:
    from simulators.line.scenario import LineScenario

Value = bool | int | float | str

# OPC-UA status codes (Part 4, 7.34) the servers publish.
GOOD = 0
BAD_NO_COMMUNICATION = 0x80310000
BAD_DEVICE_FAILURE = 0x808B0000
_BAD = 0x80000000

EXC_ILLEGAL_ADDRESS = 2
EXC_ILLEGAL_VALUE = 3
EXC_DEVICE_FAILURE = 4


class ServedModel(Protocol):
    """What the server needs from a line: points, current values, a clock to step, and writes."""

    @property
    def points(self) -> tuple[Point, ...]: ...

    @property
    def values(self) -> list[Value]: ...

    @property
    def time(self) -> float: ...

    def step_to(self, t: float) -> bool: ...

    def write(self, index: int, value: Value) -> None: ...

    def active_faults(self) -> list[ActiveFault]: ...


@runtime_checkable
class HasStatuses(Protocol):
    """A model that carries a status per point (a replay: the recorded quality), as OPC-UA codes."""

    statuses: list[int]


@dataclass(frozen=True, slots=True)
class Placement:
    """Where the line is served. A port of None leaves that protocol out."""

    host: str = "127.0.0.1"
    modbus_port: int | None = 5020
    opcua_port: int | None = 4840
    namespace: str = "urn:edge-gateway:line"
    path: str = "/line"
    folder: str | None = None

    @classmethod
    def for_scenario(cls, scenario: LineScenario, *, host: str = "127.0.0.1", modbus_port: int | None = None,
                     opcua_port: int | None = None, modbus: bool = True, opcua: bool = True) -> Placement:
        """The scenario's own ports and address space, a port given here instead of its own."""
        ua = scenario.opcua
        return cls(host=host, modbus_port=(modbus_port or scenario.modbus.port) if modbus else None,
                   opcua_port=(opcua_port or ua.port) if opcua else None, namespace=ua.namespace, path=ua.path,
                   folder=ua.folder)


class LineServer:
    """Runs a model in (scaled) real time and serves it; ``next_time`` says when the model next changes."""

    def __init__(self, model: ServedModel, placement: Placement, *, next_time: Callable[[], float | None],
                 speed: float = 1.0, on_step: Callable[[], None] | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.model = model
        self.placement = placement
        self.speed = speed
        self._next_time = next_time
        self._on_step = on_step
        self._clock = clock  # sim seconds; default: wall time since start x speed (tests drive their own)
        self._log = get_logger("simulators.line")
        self._points = model.points
        self._by_machine: dict[str, list[Point]] = {}
        for p in self._points:
            self._by_machine.setdefault(p.machine, []).append(p)
        self.modbus: Any = None  # simulators.modbus.server.ModbusSimulator
        self.opcua: Any = None  # simulators.opcua.server.OpcUaSimulator
        self._published: list[tuple[Value, int] | None] = [None] * len(self._points)
        self._faults: list[ActiveFault] = []
        self._down: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._t0 = 0.0
        self.steps = 0

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._t0 = loop.time()
        self.model.step_to(self.sim_time)
        if self.placement.modbus_port is not None:
            await self._start_modbus()
        if self.placement.opcua_port is not None:
            await self._start_opcua()
        await self._apply_faults()
        await self._publish()
        self._task = asyncio.create_task(self._run(), name="line-server")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.modbus is not None and "modbus" not in self._down:
            await self.modbus.stop()
        if self.opcua is not None:
            await self.opcua.stop()

    @property
    def opcua_url(self) -> str | None:
        p = self.placement
        return None if p.opcua_port is None else f"opc.tcp://{p.host}:{p.opcua_port}{p.path}"

    @property
    def sim_time(self) -> float:
        if self._clock is not None:
            return self._clock()
        return (asyncio.get_running_loop().time() - self._t0) * self.speed

    # --- Modbus ------------------------------------------------------------------------------------

    def _modbus_config(self) -> Any:
        from simulators.modbus.config import SimConstant, SimDeviceConfig, SimString, SimulatorConfig

        devices: dict[str, SimDeviceConfig] = {}
        for machine, points in self._by_machine.items():
            tags: list[Any] = []
            for p in points:
                if p.mtype == "string":
                    tags.append(SimString(name=p.name, table=p.table, address=p.address, type=p.mtype, order=p.order,
                                          signal="text", text="", length=p.length))
                else:
                    tags.append(SimConstant(name=p.name, table=p.table, address=p.address, type=p.mtype,
                                            order=p.order, signal="constant", value=False if p.mtype == "bool" else 0))
            devices[machine] = SimDeviceConfig(unit=points[0].unit_id, tags=tags)
        return SimulatorConfig(seed=0, devices=devices)

    async def _start_modbus(self) -> None:
        from simulators.modbus.server import ModbusSimulator

        assert self.placement.modbus_port is not None
        sim = ModbusSimulator(self._modbus_config(), host=self.placement.host, port=self.placement.modbus_port)
        values = self.model.values
        for machine, points in self._by_machine.items():
            device = sim.devices[machine]
            for p in points:
                device.by_name[p.name].value = _reader(values, p.index)
            device.on_write = self._write_handler(points)
        await sim.start()
        self.modbus = sim
        self._down.discard("modbus")
        self._modbus_faults_set: dict[str, list[Any]] = {}

    def _write_handler(self, points: list[Point]) -> Callable[[Table, int, list[int] | list[bool]], int | None]:
        by_table: dict[Table, list[Point]] = {}
        for p in points:
            by_table.setdefault(p.table, []).append(p)

        def on_write(table: Table, address: int, values: list[int] | list[bool]) -> int | None:
            end = address + len(values)
            hit = [p for p in by_table.get(table, ()) if p.address < end and address < p.address + _width(p)]
            covered: set[int] = set()
            for p in hit:
                covered.update(range(p.address, p.address + _width(p)))
            if any(p.writable is False for p in hit) or not covered.issuperset(range(address, end)):
                return EXC_ILLEGAL_ADDRESS
            for p in hit:
                try:
                    self.model.write(p.index, _merge(p, self.model.values[p.index], address, values))
                except (ValueError, TypeError) as exc:
                    self._log.info("write refused", machine=p.machine, tag=p.name, error=str(exc))
                    return EXC_ILLEGAL_VALUE
            self._wake.set()  # publish the new value over OPC-UA now, not at the next tick
            return None

        return on_write

    def _modbus_faults(self) -> None:
        from simulators.modbus.config import SimFault

        statuses = self.model.statuses if isinstance(self.model, HasStatuses) else None
        for machine, points in self._by_machine.items():
            faults: list[SimFault] = []
            for f in self._faults:
                if f.machine != machine or f.protocol == "opcua":
                    continue
                if f.kind == "offline":
                    faults.append(SimFault(no_response=True))
                elif f.kind == "exception":
                    faults.append(SimFault(exception=f.code or EXC_DEVICE_FAILURE))
                elif f.kind == "slow":
                    faults.append(SimFault(delay=f.delay))
            if statuses is not None:  # a replayed BAD value answers with "device failure" on its registers
                faults += [SimFault(table=p.table, address=p.address, count=_width(p), exception=EXC_DEVICE_FAILURE)
                           for p in points if statuses[p.index] & _BAD]
            if self._modbus_faults_set.get(machine) != faults:
                self._modbus_faults_set[machine] = faults
                self.modbus.set_faults(machine, faults)

    # --- OPC-UA ------------------------------------------------------------------------------------

    def _opcua_config(self) -> Any:
        from simulators.opcua.config import OpcUaSimConfig, SimMachine, VarConstant, VarText

        pl = self.placement
        machines: dict[str, SimMachine] = {}
        for machine, points in self._by_machine.items():
            variables: list[Any] = []
            for p in points:
                common: dict[str, Any] = {"name": p.name, "type": p.opcua_type, "unit": p.unit,
                                          "writable": p.writable}
                if p.low is not None and p.high is not None and p.kind in ("int", "float"):
                    common["eu_range"] = (p.low, p.high)
                if p.opcua_type == "String":
                    variables.append(VarText(signal="text", text="", **common))
                else:
                    variables.append(VarConstant(signal="constant", value=False if p.kind == "bool" else 0, **common))
            machines[machine] = SimMachine(path=[pl.folder] if pl.folder else [], variables=variables)
        return OpcUaSimConfig(namespace=pl.namespace, path=pl.path, devices=machines)

    async def _start_opcua(self) -> None:
        from simulators.opcua.server import OpcUaSimulator

        assert self.placement.opcua_port is not None
        sim = OpcUaSimulator(self._opcua_config(), host=self.placement.host, port=self.placement.opcua_port,
                             generate=False)
        await sim.start()
        self.opcua = sim

    def _opcua_status(self, p: Point, statuses: list[int] | None) -> int:
        for f in self._faults:
            if f.machine == p.machine and f.protocol != "modbus":
                if f.kind == "offline":
                    return BAD_NO_COMMUNICATION
                if f.kind == "exception":
                    return BAD_DEVICE_FAILURE
        return GOOD if statuses is None else statuses[p.index]

    async def _pull_opcua_writes(self) -> None:
        """A client's write to a writable variable becomes the model's value (or is reverted)."""
        if self.opcua is None or "opcua" in self._down:
            return
        for p in self._points:
            if not p.writable:
                continue
            published = self._published[p.index]
            now = self.opcua.current(f"{p.machine}.{p.name}")
            if published is None or now is None or now == published[0]:
                continue
            try:
                self.model.write(p.index, now)
            except (ValueError, TypeError) as exc:
                self._log.info("write refused", machine=p.machine, tag=p.name, error=str(exc))
                self._published[p.index] = None  # publish the model's value again

    async def _publish(self) -> None:
        if self.opcua is None or "opcua" in self._down:
            return
        statuses = self.model.statuses if isinstance(self.model, HasStatuses) else None
        values = self.model.values
        updates: list[tuple[str, Any, int]] = []
        published = self._published
        for p in self._points:
            current = (values[p.index], self._opcua_status(p, statuses))
            if published[p.index] != current:
                published[p.index] = current
                updates.append((f"{p.machine}.{p.name}", current[0], current[1]))
        if updates:
            await self.opcua.publish(updates)

    # --- faults and the clock ----------------------------------------------------------------------

    async def _apply_faults(self) -> None:
        faults = self.model.active_faults()
        changed = faults != self._faults
        self._faults = faults
        restarting = {proto for f in faults if f.kind == "restart"
                      for proto in (("modbus", "opcua") if f.protocol == "both" else (f.protocol,))}
        for proto in ("modbus", "opcua"):
            await self._set_down(proto, proto in restarting)
        if self.modbus is not None and "modbus" not in self._down and (changed or isinstance(self.model, HasStatuses)):
            self._modbus_faults()

    async def _set_down(self, proto: str, down: bool) -> None:
        server = self.modbus if proto == "modbus" else self.opcua
        if server is None or down == (proto in self._down):
            return
        if down:
            self._log.info("simulated server restart: down", protocol=proto)
            self._down.add(proto)
            if proto == "modbus":
                await server.stop()
            else:
                await server.pause()
            return
        self._log.info("simulated server restart: up", protocol=proto)
        if proto == "modbus":
            await self._start_modbus()
            self._modbus_faults()
        else:
            await server.resume()
            self._down.discard(proto)
            self._published = [None] * len(self._points)  # a fresh address space: publish everything

    async def step(self) -> None:
        """Advance the model to now and serve what changed (also called by tests)."""
        await self._pull_opcua_writes()
        self.model.step_to(self.sim_time)
        await self._apply_faults()
        await self._publish()
        self.steps += 1
        if self._on_step is not None:
            self._on_step()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            nxt = self._next_time()
            timeout = None if nxt is None else max(0.0, self._t0 + nxt / self.speed - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            try:
                await self.step()
            except Exception:  # a bad step must not take the simulated line down
                self._log.exception("line step failed")
                await asyncio.sleep(0.5)


def _reader(values: list[Value], index: int) -> Callable[[float], Value]:
    def value(_t: float) -> Value:
        return values[index]

    return value


def _width(p: Point) -> int:
    return 1 if p.table in BIT_TABLES else p.registers


def _merge(p: Point, current: Value, address: int, written: Iterable[int] | Iterable[bool]) -> Value:
    """The point's new value: its current registers overlaid with the written ones (a partial write
    of a 32-bit value keeps the other half), decoded."""
    written = list(written)
    if p.table in BIT_TABLES:
        return bool(written[p.address - address])
    from simulators.modbus.server import _encode

    regs = _encode(_spec(p), current)
    for k in range(p.registers):
        a = p.address + k
        if address <= a < address + len(written):
            regs[k] = int(written[a - address])
    value: Value = decode(regs, p.mtype, p.order, 0)
    return value


def _spec(p: Point) -> Any:
    from simulators.modbus.config import SimRegister

    return SimRegister(name=p.name, table=p.table, address=p.address, type=p.mtype, order=p.order, length=p.length)
