"""A line scenario served over Modbus and OPC-UA at once, read back with the gateway's own protocol
clients over real sockets: the same values on both, faults visible on both, writes crossing over."""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest
import yaml

from connectors.modbus.adapter import DeviceException, ModbusClient, RequestTimeout
from connectors.modbus.codec import decode
from connectors.opcua.adapter import Session
from simulators.line.model import LineModel
from simulators.line.points import Point
from simulators.line.scenario import LineScenario
from simulators.line.server import BAD_NO_COMMUNICATION, LineServer, Placement
from tests.servers import free_port

pytestmark = pytest.mark.integration

NS = "urn:test:mini-line"
SCENARIO = f"""
name: mini-line
seed: 11
tick: 100ms
opcua: {{namespace: "{NS}", path: /line, folder: Mini}}
modbus: {{order: CDAB}}
machines:
  feeder:
    unit: 1
    rate: 10
    reject_ratio: 0.1
    fault_codes: [42]
    signals:
      - {{name: speed, unit: m/min, running: {{signal: sine, center: 30, amplitude: 1, period: 10s}}, stopped: 0}}
      - {{name: temp, unit: degC, running: {{signal: random_walk, low: 50, high: 60, step: 0.5}}, stopped: 20, lag: 2s}}
      - {{name: good_count, kind: good_count}}
      - {{name: reject_count, kind: reject_count}}
      - {{name: state, kind: state}}
      - {{name: alarm, kind: alarm}}
      - {{name: alarm_code, kind: alarm_code}}
      - {{name: speed_setpoint, kind: setpoint, value: 30, min: 0, max: 60}}
      - {{name: recipe, kind: text, text: "0.5L-still"}}
  packer:
    unit: 2
    upstream: feeder
    rate: 10
    signals:
      - {{name: good_count, kind: good_count}}
      - {{name: state, kind: state}}
      - {{name: power, unit: kW, running: 3.5, stopped: 0.2}}
faults:
  - {{at: 1s, kind: machine_fault, machine: feeder, duration: 1s, code: 42}}
  - {{at: 3s, kind: offline, machine: packer, duration: 1s}}
  - {{at: 5s, kind: exception, machine: packer, code: 2, duration: 1s, protocol: modbus}}
"""


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Line:
    def __init__(self, server: LineServer, clock: Clock, modbus: ModbusClient, opcua: Session) -> None:
        self.server, self.clock, self.modbus, self.opcua = server, clock, modbus, opcua
        self.model = server.model
        self.nodes: dict[int, Any] = {}

    async def at(self, t: float) -> None:
        self.clock.t = t
        await self.server.step()

    def point(self, machine: str, name: str) -> Point:
        return next(p for p in self.model.points if p.machine == machine and p.name == name)

    async def via_modbus(self, p: Point) -> Any:
        width = 1 if p.table in ("coil", "discrete_input") else p.registers
        raw = await self.modbus.read(p.table, p.address, width, p.unit_id)
        if p.table in ("coil", "discrete_input"):
            return bool(raw[0])
        return decode(list(raw), p.mtype, p.order, 0)  # type: ignore[arg-type]

    async def via_opcua(self, p: Point) -> tuple[Any, int]:
        if p.index not in self.nodes:
            [node] = await self.opcua.resolve([f"nsu={NS};s={p.machine}.{p.name}"])
            self.nodes[p.index] = node
        [(_, value, status, _, _)] = await self.opcua.read([self.nodes[p.index]])
        return value, status


@pytest.fixture
async def line() -> AsyncIterator[Line]:
    scenario = LineScenario.model_validate(yaml.safe_load(SCENARIO))
    clock = Clock()
    placement = Placement(modbus_port=free_port(), opcua_port=free_port(), namespace=NS, path="/line",
                          folder="Mini")
    server = LineServer(LineModel(scenario), placement, next_time=lambda: None, clock=clock)
    await server.start()
    modbus = ModbusClient("tcp", host="127.0.0.1", port=placement.modbus_port or 0, timeout=0.5)
    assert await modbus.connect()
    opcua = await Session.open(server.opcua_url or "", timeout=5.0)
    try:
        yield Line(server, clock, modbus, opcua)
    finally:
        await opcua.close()
        modbus.close()
        await server.stop()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-6)
    return bool(a == b)


async def test_every_point_reads_the_same_over_both_protocols(line: Line) -> None:
    for t in (0.5, 0.7):  # two instants: values move between them
        await line.at(t)
        for p in line.model.points:
            expected = line.model.values[p.index]
            over_modbus = await line.via_modbus(p)
            over_opcua, status = await line.via_opcua(p)
            assert status == 0, p
            assert _same(over_modbus, expected), (p.machine, p.name, over_modbus, expected)
            assert _same(over_opcua, expected), (p.machine, p.name, over_opcua, expected)
    assert await line.via_modbus(line.point("feeder", "recipe")) == "0.5L-still"
    speed = line.model.values[line.point("feeder", "speed").index]
    assert isinstance(speed, float) and 29 <= speed <= 31


async def test_machine_fault_shows_in_state_counters_and_alarms_on_both(line: Line) -> None:
    state, alarm, code = (line.point("feeder", n) for n in ("state", "alarm", "alarm_code"))
    good, packer_state = line.point("feeder", "good_count"), line.point("packer", "state")
    await line.at(0.9)
    assert [await line.via_modbus(p) for p in (state, alarm, code)] == [1, False, 0]
    running_count = await line.via_modbus(good)
    assert running_count > 0  # 10 products/s for 0.9 s, minus rejects
    await line.at(1.5)
    for read in (line.via_modbus, lambda p: _value(line, p)):
        assert await read(state) == 4
        assert await read(alarm) is True
        assert await read(code) == 42
        assert await read(packer_state) == 3  # starved: its upstream is down
    during = await line.via_modbus(good)
    await line.at(1.9)
    assert await line.via_modbus(good) == during  # no production during the fault
    assert await _value(line, good) == during
    await line.at(2.6)
    assert await line.via_modbus(state) == 1
    assert await _value(line, alarm) is False
    assert await line.via_modbus(good) > during


async def _value(line: Line, p: Point) -> Any:
    value, status = await line.via_opcua(p)
    assert status == 0
    return value


async def test_offline_and_exception_faults(line: Line) -> None:
    power = line.point("packer", "power")
    await line.at(3.5)
    with pytest.raises(RequestTimeout):
        await line.via_modbus(power)
    _, status = await line.via_opcua(power)
    assert status == BAD_NO_COMMUNICATION
    assert await line.via_modbus(line.point("feeder", "state")) == 1  # the other unit still answers
    await line.at(5.5)
    with pytest.raises(DeviceException) as exc:
        await line.via_modbus(power)
    assert exc.value.code == 2
    value, status = await line.via_opcua(power)  # a Modbus-only fault: OPC-UA unaffected
    assert (value, status) == (pytest.approx(3.5), 0)
    await line.at(6.5)
    assert await line.via_modbus(power) == pytest.approx(3.5)


async def test_writes_cross_from_one_protocol_to_the_other(line: Line) -> None:
    sp = line.point("feeder", "speed_setpoint")
    await line.at(0.2)
    from connectors.modbus.codec import encode

    await line.modbus.write_registers(sp.address, encode(45.5, sp.mtype, sp.order), sp.unit_id)
    assert line.model.values[sp.index] == 45.5
    await line.at(0.3)
    assert await _value(line, sp) == 45.5
    with pytest.raises(DeviceException) as exc:  # above max: illegal data value, nothing changes
        await line.modbus.write_registers(sp.address, encode(99.0, sp.mtype, sp.order), sp.unit_id)
    assert exc.value.code == 3
    assert line.model.values[sp.index] == 45.5
    state = line.point("feeder", "state")
    with pytest.raises(DeviceException) as exc:  # not a writable point: illegal address
        await line.modbus.write_registers(state.address, [1], state.unit_id)
    assert exc.value.code == 2
    # an OPC-UA client's write reaches the model and Modbus
    await line.via_opcua(sp)  # resolves its node
    await line.opcua.write(line.nodes[sp.index], 12.25)
    await line.at(0.4)
    assert line.model.values[sp.index] == 12.25
    assert await line.via_modbus(sp) == 12.25


async def test_a_line_runs_on_its_own_clock() -> None:
    """Without a test clock the server steps itself every tick (x speed)."""
    scenario = LineScenario.model_validate(yaml.safe_load(SCENARIO))
    model = LineModel(scenario)
    placement = Placement(modbus_port=free_port(), opcua_port=None)
    seen: list[tuple[float, str]] = []
    past_fault = asyncio.Event()

    def on_step() -> None:
        seen.append((model.time, model.state_of("feeder")))
        if model.time >= 2.5:
            past_fault.set()

    server = LineServer(model, placement, next_time=model.next_time, speed=5.0, on_step=on_step)
    t0 = asyncio.get_running_loop().time()
    await server.start()
    try:
        await asyncio.wait_for(past_fault.wait(), 10)
    finally:
        await server.stop()
    wall = asyncio.get_running_loop().time() - t0
    assert wall < 2.0  # 2.5 s of line time at speed 5: 0.5 s
    assert [state for t, state in seen if 1.05 < t < 1.95] and all(
        state == "fault" for t, state in seen if 1.05 < t < 1.95)  # the scheduled fault at 1 s for 1 s
    assert all(state == "running" for t, state in seen if t < 0.95 or t > 2.05)
    assert len(seen) >= 12  # about one step per 100 ms tick (20 ms of wall time)
    assert all(b - a < 0.5 for a, b in itertools.pairwise(t for t, _ in seen))
