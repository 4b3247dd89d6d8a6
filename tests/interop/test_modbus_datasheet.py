"""The Modbus source against a device we did not write (tests/interop/modbus_device.py: pymodbus's own
datastore, literal words from a register map), configured the way an integrator writes it from the
datasheet: every good register GOOD with its exact value, exactly the failing ones BAD with their code."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml

from connectors.modbus.config import ModbusSourceConfig
from connectors.modbus.source import ModbusSource
from connectors.sqlite.query import query_points
from gateway.config.loader import load_config
from gateway.errors import WriteError
from gateway.model import Batch, Quality, Sample
from gateway.runtime import Runtime
from gateway.writes import write_value
from tests.interop.modbus_device import CONTROL, READ_ONLY, SETPOINT, datasheet_device
from tests.servers import free_port
from tests.waiting import until as wait_until

# From the datasheet: 4xxxx holding registers, 3xxxx input registers, 0xxxx coils, 1xxxx inputs.
DATASHEET_CONFIG = """
data_dir: {data_dir}
http: {{enabled: false}}
sources:
  meter:
    type: modbus
    host: 127.0.0.1
    port: {port}
    interval: 100ms
    timeout: 500ms
    reconnect_initial: 50ms
    devices:
      pump_skid:
        unit: 1
        address_base: 40001
        tags:
          - {{name: offset_raw, address: 40001, type: int16}}
          - {{name: runtime_h, address: 40002, type: uint16}}
          - {{name: position, address: 40003, type: int32}}
          - {{name: energy_wh, address: 40005, type: uint32, order: CDAB}}
          - {{name: temperature, address: 40007, type: float32, unit: degC}}
          - {{name: pressure, address: 40009, type: float32, order: BADC, unit: bar}}
          - {{name: ratio, address: 40011, type: float32, order: DCBA}}
          - {{name: flow_total, address: 40013, type: float64}}
          - {{name: counter_delta, address: 40017, type: int64, order: CDAB}}
          - {{name: serial_no, address: 40021, type: uint64, order: DCBA}}
          - {{name: lifetime_ms, address: 40025, type: int64, order: BADC}}
          - {{name: drift, address: 40029, type: float64, order: CDAB}}
          - {{name: model, address: 40033, type: string, length: 4}}
          - {{name: trim, address: 40037, type: int32, order: BADC}}
          - {{name: cycles, address: 40039, type: uint32, order: DCBA}}
          - {{name: status_word, address: 40041, type: uint16}}
          - {{name: running, address: 40041, type: bit, bit: 0}}
          - {{name: fault, address: 40041, type: bit, bit: 1}}
          - {{name: remote, address: 40041, type: bit, bit: 2}}
          - {{name: alarm, address: 40041, type: bit, bit: 15}}
          - {{name: spare, address: 40043, type: uint16}}
          - {{name: level, address: 40046, type: uint16}}
          - {{name: sensor_b, address: 40047, type: uint16}}
          - {{name: speed, address: 40048, type: uint16}}
          - {{name: firmware, address: 40049, type: uint16}}
          - {{name: flow_in, address: 30001, address_base: 30001, table: input, type: float32, unit: m3/h}}
          - {{name: pump_on, address: 1, address_base: 1, table: coil, type: bool}}
          - {{name: valve_open, address: 2, address_base: 1, table: coil, type: bool}}
          - {{name: heater_on, address: 3, address_base: 1, table: coil, type: bool}}
          - {{name: door_closed, address: 10001, address_base: 10001, table: discrete_input, type: bool}}
          - {{name: estop_ok, address: 10002, address_base: 10001, table: discrete_input, type: bool}}
sinks:
  store: {{type: sqlite, path: {data_dir}/store.db}}
"""

GOOD: dict[str, Any] = {
    "offset_raw": -1234, "runtime_h": 54321, "position": -123456789, "energy_wh": 3_000_000_000,
    "temperature": 25.5, "pressure": -1.5, "ratio": pytest.approx(3.1415927, abs=1e-6),
    "flow_total": 1234.5678, "counter_delta": -9_000_000_000_000, "serial_no": 18_000_000_000_000_000_000,
    "lifetime_ms": 1_234_567_890_123, "drift": -0.001, "model": "PUMP-7", "trim": -2, "cycles": 70000,
    "status_word": 0x8005, "running": True, "fault": False, "remote": True, "alarm": True,
    "level": 100, "speed": 200, "firmware": 7, "flow_in": 100.25,
    "pump_on": True, "valve_open": False, "heater_on": True, "door_closed": False, "estop_ok": True,
}
BAD = {"spare": 2, "sensor_b": 4}  # in the address hole; the register whose sensor failed


def check(latest: dict[str, tuple[Any, Quality, int]]) -> None:
    for tag, value in GOOD.items():
        got, quality, status = latest[tag]
        assert (quality, status) == (Quality.GOOD, 0), (tag, latest[tag])
        assert got == value, (tag, got, value)
        if isinstance(value, bool | int | str):  # not a float read back as 1.0, nor a bool as 1
            assert type(got) is type(value), (tag, got)
    for tag, code in BAD.items():
        assert latest[tag][1:] == (Quality.BAD, code), (tag, latest[tag])
        assert latest[tag][0] is None


@pytest.mark.timeout(60)
async def test_a_config_from_the_datasheet_stores_exact_values_and_only_the_failing_registers_bad(
        tmp_path: Path) -> None:
    port = free_port()
    path = tmp_path / "gateway.yaml"
    path.write_text(DATASHEET_CONFIG.format(port=port, data_dir=tmp_path))
    cfg = load_config(path)  # a status word and its bits, a tag in a hole: one valid config
    runtime = Runtime(cfg)
    stop = asyncio.Event()
    db = str(tmp_path / "store.db")

    def latest() -> dict[str, tuple[Any, Quality, int]]:
        try:
            points = query_points(db)
        except Exception:  # the store does not exist yet
            return {}
        return {p.tag: (p.value, p.quality, p.status) for p in points}

    async with datasheet_device(port) as device:
        task = asyncio.create_task(runtime.run(stop))
        try:
            await wait_until(lambda: len(latest()) == len(GOOD) + len(BAD))
            n = len(device.functions)
            await wait_until(lambda: len(device.functions) >= n + 20)  # a few more polls, from the split
        finally:
            stop.set()
            await asyncio.wait_for(task, 15)
    check(latest())
    source = runtime.sources["meter"]
    assert source.splits == 1  # type: ignore[attr-defined]  # learned once, then read in parts


def modbus_source(port: int, **extra: Any) -> ModbusSource:
    raw = yaml.safe_load(DATASHEET_CONFIG.format(port=port, data_dir="/tmp"))["sources"]["meter"]
    raw["devices"]["pump_skid"]["tags"] += [
        {"name": "setpoint", "address": 40001 + SETPOINT, "type": "uint16", "writable": True, "max": 1000},
        {"name": "ro_limit", "address": 40001 + READ_ONLY, "type": "uint16", "writable": True},
        {"name": "cmd_start", "address": 40001 + CONTROL, "type": "bit", "bit": 0, "writable": True},
        {"name": "cmd_reset", "address": 40001 + CONTROL, "type": "bit", "bit": 8, "writable": True, "order": "BADC"},
    ]
    raw["devices"]["pump_skid"]["tags"] = [t for t in raw["devices"]["pump_skid"]["tags"] if t["name"] != "firmware"]
    raw["devices"]["pump_skid"].update(extra)
    return ModbusSource("meter", ModbusSourceConfig.model_validate(raw))


@pytest.mark.timeout(60)
async def test_the_split_is_reprobed_and_merged_again_once_the_device_recovers() -> None:
    port = free_port()
    source = modbus_source(port)
    source.config = source.config.model_copy(update={"split_reprobe": 0.3})
    seen: list[Sample] = []

    async def emit(batch: Batch) -> None:
        seen.extend(batch.samples)

    with structlog.testing.capture_logs() as logs:
        async with datasheet_device(port) as device:
            task = asyncio.create_task(source.run(emit))
            try:
                await wait_until(lambda: any(s.tag == "sensor_b" and s.status == 4 for s in seen))
                device.faulty.clear()  # the sensor is replaced; the hole stays
                mark = len(seen)
                await wait_until(lambda: any(s.tag == "sensor_b" and s.quality is Quality.GOOD for s in seen[mark:]))
                await asyncio.sleep(0.5)  # several polls and re-probes: none may log again
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
    events = [e["event"] for e in logs]
    # one line per transition, never one per poll
    assert events.count("modbus tags answered with an exception") == 2, events  # the hole, the sensor
    assert events.count("modbus tags answering again") == 1, events
    failing = [e for e in logs if e["event"] == "modbus tags answered with an exception"]
    assert {(e["status"], tuple(e["tags"])) for e in failing} == {("IllegalDataAddress", ("spare",)),
                                                                   ("ServerDeviceFailure", ("sensor_b",))}
    # the hole never recovers, so the merged read keeps failing: still read in parts, still exact
    last = {s.tag: s for s in seen}
    assert last["spare"].status == 2 and last["level"].value == 100 and last["speed"].value == 200


@pytest.mark.timeout(60)
async def test_writes_use_mask_write_and_refuse_what_the_tag_does_not_accept() -> None:
    port = free_port()
    source = modbus_source(port)
    tags = {t.name: t for t in source.config.devices["pump_skid"].tags}
    async with datasheet_device(port) as device:
        mark = len(device.functions)
        await write_value(source, "pump_skid", tags["cmd_start"], True)
        assert await device.holding(CONTROL) == [0x00F1]
        used = set(device.functions[mark:])
        assert 22 in used and not used & {6, 16}  # function 22, not a read-modify-write
        await write_value(source, "pump_skid", tags["cmd_reset"], True)  # bit 8 of a byte-swapped word: bit 0
        await write_value(source, "pump_skid", tags["cmd_start"], False)  # bit 0 of the word as sent: 0x0001
        assert await device.holding(CONTROL) == [0x00F0]
        await write_value(source, "pump_skid", tags["setpoint"], 750)
        assert await device.holding(SETPOINT) == [750]
        before = list(device.functions)
        for tag, value, reason in (("cmd_start", "false", "accepts true or false"),
                                   ("cmd_start", 1, "accepts true or false"),
                                   ("setpoint", True, "accepts a whole number"),
                                   ("setpoint", 1001, "maximum 1000"),
                                   ("setpoint", 12.5, "not a whole number")):
            with pytest.raises(WriteError, match=reason):
                await write_value(source, "pump_skid", tags[tag], value)
        assert device.functions == before  # nothing reached the device
        with pytest.raises(WriteError, match="IllegalDataAddress"):
            await write_value(source, "pump_skid", tags["ro_limit"], 9)
        assert await device.holding(READ_ONLY) == [7]
        await source.close()


@pytest.mark.timeout(60)
async def test_a_device_without_function_22_is_refused_unless_read_modify_write_is_chosen() -> None:
    port = free_port()
    strict = modbus_source(port)
    rmw = modbus_source(port, bit_write="read_modify_write")
    tag = next(t for t in strict.config.devices["pump_skid"].tags if t.name == "cmd_start")
    async with datasheet_device(port, refuse_mask_write=True) as device:
        with pytest.raises(WriteError, match="bit_write: read_modify_write"):
            await write_value(strict, "pump_skid", tag, True)
        assert await device.holding(CONTROL) == [0x00F0]
        mark = len(device.functions)
        await write_value(rmw, "pump_skid", tag, True)
        assert await device.holding(CONTROL) == [0x00F1]
        assert {3, 6} <= set(device.functions[mark:]) and 22 not in device.functions[mark:]  # read, write back
        await strict.close()
        await rmw.close()
