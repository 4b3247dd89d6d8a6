"""Every type x order from the simulator through the connector, checked against independently built registers."""

from __future__ import annotations

import asyncio
import math
import struct
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from connectors.modbus.config import ModbusSourceConfig
from connectors.modbus.source import ModbusSource
from gateway.config.loader import load_config
from gateway.model import Batch, Quality, Sample
from gateway.runtime import Runtime
from simulators.modbus.config import SimulatorConfig
from simulators.modbus.server import running_simulator
from tests.fakes import RecordingSink
from tests.servers import free_port

# (type, struct letter, value): the value each tag of that type serves
VALUES: list[tuple[str, str, float | int]] = [
    ("int16", "h", -12345), ("uint16", "H", 54321), ("int32", "i", -123456789), ("uint32", "I", 3_000_000_000),
    ("int64", "q", -1_234_567_890_123_456), ("uint64", "Q", 18_000_000_000_000_000_000),
    ("float32", "f", struct.unpack(">f", struct.pack(">f", -1234.5678))[0]), ("float64", "d", math.pi),
]
# byte permutations of a big-endian value, written out per order and width (never via our codec)
PERMUTATION = {
    2: {"ABCD": [0, 1], "CDAB": [0, 1], "BADC": [1, 0], "DCBA": [1, 0]},
    4: {"ABCD": [0, 1, 2, 3], "CDAB": [2, 3, 0, 1], "BADC": [1, 0, 3, 2], "DCBA": [3, 2, 1, 0]},
    8: {"ABCD": [0, 1, 2, 3, 4, 5, 6, 7], "CDAB": [6, 7, 4, 5, 2, 3, 0, 1],
        "BADC": [1, 0, 3, 2, 5, 4, 7, 6], "DCBA": [7, 6, 5, 4, 3, 2, 1, 0]},
}
ORDERS = ["ABCD", "CDAB", "BADC", "DCBA"]


def expected_registers(letter: str, value: float | int, order: str) -> list[int]:
    be = struct.pack(">" + letter, value)
    wire = bytes(be[i] for i in PERMUTATION[len(be)][order])
    return [wire[i] << 8 | wire[i + 1] for i in range(0, len(wire), 2)]


def layout() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Simulator tags and the gateway tags reading them, at consecutive addresses."""
    sim: list[dict[str, Any]] = []
    gw: list[dict[str, Any]] = []
    addr = 0
    for dtype, _letter, value in VALUES:
        for order in ORDERS:
            name = f"{dtype}_{order}".lower()
            sim.append({"name": name, "address": addr, "type": dtype, "order": order, "signal": "constant",
                        "value": value})
            gw.append({"name": name, "address": addr, "type": dtype, "order": order})
            addr += 4
    for order in ORDERS:
        sim.append({"name": f"text_{order}".lower(), "address": addr, "type": "string", "length": 3,
                    "order": order, "signal": "text", "text": "Hi5ok"})
        gw.append({"name": f"text_{order}".lower(), "address": addr, "type": "string", "length": 3, "order": order})
        addr += 3
    # 0x8005 -> bits 0, 2, 15 set
    sim.append({"name": "flags", "address": addr, "type": "uint16", "signal": "constant", "value": 0x8005})
    for bit in (0, 1, 2, 15):
        gw.append({"name": f"bit{bit}", "address": addr, "type": "bit", "bit": bit})
    addr += 1
    sim.append({"name": "raw_temp", "address": addr, "type": "int16", "signal": "constant", "value": -215})
    gw.append({"name": "temp", "address": addr, "type": "int16", "scale": 0.1, "offset": 0.0})
    sim.append({"name": "coil_on", "table": "coil", "address": 5, "type": "bool", "signal": "constant",
                "value": True})
    sim.append({"name": "di_off", "table": "discrete_input", "address": 17, "type": "bool", "signal": "constant",
                "value": False})
    gw.append({"name": "coil_on", "table": "coil", "address": 5, "type": "bool"})
    gw.append({"name": "di_off", "table": "discrete_input", "address": 17, "type": "bool"})
    sim.append({"name": "ir", "table": "input", "address": 3, "type": "float32", "order": "CDAB",
                "signal": "constant", "value": 0.5})
    gw.append({"name": "ir", "table": "input", "address": 3, "type": "float32", "order": "CDAB"})
    return sim, gw


async def poll_once(cfg: ModbusSourceConfig, devices: int = 1, timeout: float = 10.0) -> dict[tuple[str, str], Sample]:
    source = ModbusSource("m", cfg)
    got: dict[tuple[str, str], Sample] = {}
    done = asyncio.Event()
    expected = sum(len(d.tags) for d in cfg.devices.values())

    async def emit(batch: Batch) -> None:
        for s in batch.samples:
            got[(s.device, s.tag)] = s
        if len(got) >= expected:
            done.set()

    task = asyncio.create_task(source.run(emit))
    try:
        await asyncio.wait_for(done.wait(), timeout)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return got


async def test_every_type_and_order_round_trips_exactly() -> None:
    port = free_port()
    sim_tags, gw_tags = layout()
    sim_cfg = SimulatorConfig.model_validate({"devices": {"plc": {"unit": 3, "tags": sim_tags}}})
    cfg = ModbusSourceConfig.model_validate({"host": "127.0.0.1", "port": port, "interval": "100ms",
                                             "devices": {"plc": {"unit": 3, "tags": gw_tags}}})
    async with running_simulator(sim_cfg, port=port) as sim:
        got = await poll_once(cfg)
        device = sim.devices["plc"]
        # the simulator's registers are what an independent big-endian pack + permutation gives
        for dtype, letter, value in VALUES:
            for order in ORDERS:
                tag = f"{dtype}_{order}".lower()
                regs = await sim.server.async_getValues(3, 3, device.by_name[tag].spec.address, 4)
                expected = expected_registers(letter, value, order)
                assert regs[: len(expected)] == expected, tag
    assert all(s.quality == Quality.GOOD for s in got.values()), [s for s in got.values() if s.quality]
    for dtype, _letter, value in VALUES:
        for order in ORDERS:
            sample = got[("plc", f"{dtype}_{order}".lower())]
            assert sample.value == value and type(sample.value) is type(value), (dtype, order, sample.value)
    for order in ORDERS:
        assert got[("plc", f"text_{order}".lower())].value == "Hi5ok"
    assert [got[("plc", f"bit{b}")].value for b in (0, 1, 2, 15)] == [True, False, True, True]
    assert got[("plc", "temp")].value == -215  # raw: the engine applies scale 0.1 (checked below)
    assert got[("plc", "coil_on")].value is True and got[("plc", "di_off")].value is False
    assert got[("plc", "ir")].value == 0.5


async def test_scaled_value_through_the_runtime(tmp_path: Path, fake_plugins: None) -> None:
    """The source emits the raw register; the engine applies scale/offset to it."""
    port = free_port()
    sim_cfg = SimulatorConfig.model_validate({"devices": {"plc": {"unit": 1, "tags": [
        {"name": "t", "address": 7, "type": "int16", "signal": "constant", "value": -215}]}}})
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump({
        "http": {"port": 0}, "data_dir": str(tmp_path / "data"),
        "sources": {"m": {"type": "modbus", "host": "127.0.0.1", "port": port, "interval": "100ms",
                          "devices": {"plc": {"unit": 1, "tags": [
                              {"name": "temp", "address": 7, "type": "int16", "scale": 0.1, "offset": 1.0,
                               "unit": "degC"}]}}}},
        "sinks": {"rec": {"type": "recording"}},
    }))
    async with running_simulator(sim_cfg, port=port):
        runtime = Runtime(load_config(path))
        stop = asyncio.Event()
        task = asyncio.create_task(runtime.run(stop))
        await asyncio.wait_for(runtime.started.wait(), 10)
        deadline = time.monotonic() + 10
        while not RecordingSink.instances.get("rec") or not RecordingSink.instances["rec"].received:
            assert time.monotonic() < deadline, "nothing delivered"
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.wait_for(task, 10)
    sample = RecordingSink.instances["rec"].received[0]
    assert (sample.device, sample.tag, sample.quality, sample.unit) == ("plc", "temp", Quality.GOOD, "degC")
    assert sample.value == pytest.approx(-215 * 0.1 + 1.0, abs=1e-12)
