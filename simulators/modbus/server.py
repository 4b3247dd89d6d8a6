"""A pymodbus 3.16 server serving the devices of a ``SimulatorConfig``.

Values are computed when read: pymodbus calls our ``action`` on every access, and it writes the
current generator value of each tag the request touches into the register block first (so
1,000-tag devices cost nothing between polls). A written tag keeps the written registers from then on,
like a setpoint. Faults are checked in the same hook: an exception code is returned, ``no_response``
raises pymodbus' ``NoSuchIdException`` which the server (``ignore_missing_devices``) answers with
silence, ``delay`` sleeps before answering, ``drop_connection`` closes the client connections.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from connectors.modbus.codec import decode, encode
from connectors.modbus.config import BIT_TABLES, Table
from gateway.generators import derive_seed
from simulators.modbus.config import SimDeviceConfig, SimFault, SimRegister, SimString, SimulatorConfig

_TABLE_BY_FC: dict[int, Table] = {1: "coil", 5: "coil", 15: "coil", 2: "discrete_input",
                                  3: "holding", 6: "holding", 16: "holding", 22: "holding", 23: "holding", 4: "input"}
_FC_READ: dict[Table, int] = {"coil": 1, "discrete_input": 2, "holding": 3, "input": 4}
_TABLES: tuple[Table, ...] = ("coil", "discrete_input", "holding", "input")


@dataclass(slots=True)
class _LiveTag:
    spec: SimRegister
    value: Callable[[float], Any] | None  # None: fixed (text, or written)
    held: bool = False


@dataclass(slots=True)
class _Table:
    starts: list[int] = field(default_factory=list)  # register index (bit tables: address // 16) per tag
    tags: list[_LiveTag] = field(default_factory=list)
    size: int = 1


class SimulatedDevice:
    """Runtime state of one simulated unit: its tags, faults and the writes it received."""

    def __init__(self, name: str, cfg: SimDeviceConfig, seed: int, clock: Callable[[], float]) -> None:
        self.name = name
        self.unit = cfg.unit
        self.faults: list[SimFault] = list(cfg.faults)
        self.writes: list[tuple[Table, int, list[int] | list[bool]]] = []
        # A line scenario takes writes itself (into its model, so OPC-UA sees them too): it gets the table,
        # address and values and answers None (accepted) or an exception code; tags are then not held.
        self.on_write: Callable[[Table, int, list[int] | list[bool]], int | None] | None = None
        self.traffic = [0]  # requests seen by the whole server; shared by its devices (see _action)
        self.server: Any = None
        self._clock = clock
        self.tables: dict[Table, _Table] = {t: _Table() for t in _TABLES}
        self.by_name: dict[str, _LiveTag] = {}
        rows: dict[Table, list[tuple[int, _LiveTag]]] = {t: [] for t in _TABLES}
        for spec in cfg.tags:
            gen = None if isinstance(spec, SimString) else spec.build(derive_seed(seed, name, spec.name)).value
            live = _LiveTag(spec, gen)
            self.by_name[spec.name] = live
            bits = spec.table in BIT_TABLES
            start = spec.address // 16 if bits else spec.address
            rows[spec.table].append((start, live))
            tab = self.tables[spec.table]
            tab.size = max(tab.size, start + (1 if bits else spec.registers))
        for table, items in rows.items():
            items.sort(key=lambda r: r[0])
            self.tables[table].starts = [s for s, _ in items]
            self.tables[table].tags = [t for _, t in items]

    def sim_device(self) -> SimDevice:
        blocks = []
        for table in _TABLES:
            dtype = DataType.BITS if table in BIT_TABLES else DataType.REGISTERS
            blocks.append([SimData(0, count=self.tables[table].size, values=0, datatype=dtype)])
        self._initial = True
        return SimDevice(id=self.unit, simdata=tuple(blocks), action=partial(_action, self))  # type: ignore[arg-type]

    def registers_of(self, tag: str, registers: list[int]) -> list[int]:
        spec = self.by_name[tag].spec
        return registers[spec.address:spec.address + spec.registers]

    async def read_tag(self, tag: str) -> Any:
        """The value the device holds for ``tag`` right now, decoded (for tests and the scenario)."""
        spec = self.by_name[tag].spec
        server = self.server
        if spec.table in BIT_TABLES:
            bits = await server.async_getValues(self.unit, _FC_READ[spec.table], spec.address, 1)
            return bool(bits[0])
        regs = await server.async_getValues(self.unit, _FC_READ[spec.table], spec.address, spec.registers)
        return decode(regs, spec.type, spec.order, spec.bit or 0)

    def refresh(self, table: Table, first: int, count: int, start_address: int, registers: list[int]) -> None:
        tab = self.tables[table]
        # tags starting up to 3 registers before the range may reach into it (a float64 has 4)
        lo = bisect.bisect_left(tab.starts, first - 124)
        hi = bisect.bisect_left(tab.starts, first + count)
        t = self._clock()
        bits = table in BIT_TABLES
        for live in tab.tags[lo:hi]:
            spec = live.spec
            if bits:
                if live.value is None or live.held:
                    continue
                idx = spec.address // 16 - start_address
                mask = 1 << (spec.address % 16)
                registers[idx] = registers[idx] | mask if live.value(t) else registers[idx] & ~mask
                continue
            if spec.address + spec.registers <= first:
                continue
            if live.held:
                continue
            if live.value is not None:  # a generator, or a line scenario's value (strings too)
                value: Any = live.value(t)
            else:
                value = spec.text if isinstance(spec, SimString) else 0
            idx = spec.address - start_address
            if spec.type == "bit":
                mask = 1 << (spec.bit or 0)
                if spec.order in ("BADC", "DCBA"):
                    mask = 1 << ((spec.bit or 0) + 8) % 16
                registers[idx] = registers[idx] | mask if value else registers[idx] & ~mask
                continue
            registers[idx:idx + spec.registers] = _encode(spec, value)

    def hold(self, table: Table, first: int, count: int) -> None:
        """Tags a write touched keep what was written."""
        for live in self.tables[table].tags:
            spec = live.spec
            end = spec.address + (1 if table in BIT_TABLES else spec.registers)
            if spec.address < first + count and first < end:
                live.held = True


def _encode(spec: SimRegister, value: Any) -> list[int]:
    if spec.type in ("float32", "float64", "string"):
        return encode(value, spec.type, spec.order, spec.length)
    lo, hi = _INT_RANGE[spec.type]
    return encode(min(max(round(float(value)), lo), hi), spec.type, spec.order)


_INT_RANGE = {"int16": (-(2**15), 2**15 - 1), "uint16": (0, 2**16 - 1), "int32": (-(2**31), 2**31 - 1),
              "uint32": (0, 2**32 - 1), "int64": (-(2**63), 2**63 - 1), "uint64": (0, 2**64 - 1)}


async def _action(device: SimulatedDevice, function_code: int, start_address: int, address: int, count: int,
                  registers: list[int], set_values: list[int] | list[bool] | None) -> ExcCodes | None:
    table = _TABLE_BY_FC.get(function_code)
    if table is None:
        return None
    bits = table in BIT_TABLES
    first = address // 16 if bits else address
    span = (address, address + (len(set_values) if (bits and set_values) else count * (16 if bits else 1)))
    device.traffic[0] += 1
    for fault in device.faults:
        if not fault.matches(table, *span):
            continue
        if fault.delay:
            seen = device.traffic[0]
            await asyncio.sleep(fault.delay)
            if device.traffic[0] != seen:
                # pymodbus' server stamps a reply with the transaction id of the *latest* request on the
                # connection (and its unit id), so a reply overtaken by a newer request, for any unit, would
                # carry that request's ids and the wrong data. Drop the stale reply instead.
                raise NoSuchIdException("simulated slow reply overtaken by a newer request")
        if fault.drop_connection and device.server is not None:
            for conn in list(device.server.active_connections.values()):
                conn.close()
            raise NoSuchIdException("simulated dropped connection")
        if fault.no_response:
            raise NoSuchIdException("simulated silent unit")
        if fault.exception is not None:
            return ExcCodes(fault.exception)
    if set_values is None:
        device.refresh(table, first, count, start_address, registers)
    elif device.on_write is not None:
        refused = device.on_write(table, address, list(set_values))
        if refused is not None:
            return ExcCodes(refused)
        device.writes.append((table, address, list(set_values)))
    else:
        device.writes.append((table, address, list(set_values)))
        device.hold(table, address, len(set_values))
    return None


class ModbusSimulator:
    """Serves a ``SimulatorConfig`` over Modbus TCP, RTU framing over TCP, or RTU on a serial port."""

    def __init__(self, config: SimulatorConfig, *, host: str = "127.0.0.1", port: int = 5020,
                 rtu_over_tcp: bool = False, serial: str | None = None, baudrate: int = 19200) -> None:
        self.config = config
        t0 = time.monotonic()
        self.devices = {name: SimulatedDevice(name, dev, config.seed, lambda: time.monotonic() - t0)
                        for name, dev in config.devices.items()}
        traffic = [0]
        for d in self.devices.values():
            d.traffic = traffic
        sim_devices = [d.sim_device() for d in self.devices.values()]
        self.server: Any
        if serial is not None:
            self.server = ModbusSerialServer(sim_devices, framer=FramerType.RTU, port=serial, baudrate=baudrate,
                                             ignore_missing_devices=True)
        else:
            framer = FramerType.RTU if rtu_over_tcp else FramerType.SOCKET
            self.server = ModbusTcpServer(sim_devices, framer=framer, address=(host, port),
                                          ignore_missing_devices=True)
        for d in self.devices.values():
            d.server = self.server

    async def start(self) -> None:
        await self.server.serve_forever(background=True)

    async def stop(self) -> None:
        await self.server.shutdown()

    def set_faults(self, device: str, faults: list[SimFault]) -> None:
        self.devices[device].faults = list(faults)


@contextlib.asynccontextmanager
async def running_simulator(config: SimulatorConfig, **kwargs: Any) -> AsyncIterator[ModbusSimulator]:
    """Start a simulator in this event loop (tests); stopped on exit."""
    sim = ModbusSimulator(config, **kwargs)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()
