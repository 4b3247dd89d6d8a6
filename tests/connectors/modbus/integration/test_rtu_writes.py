"""RTU on a virtual serial pair (socat), RTU framing over TCP, and writes."""

from __future__ import annotations

import asyncio
import re
import shutil
import struct
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from connectors.modbus.config import ModbusSourceConfig
from connectors.modbus.source import ModbusSource
from gateway.errors import WriteError
from gateway.model import Batch, Quality, Sample
from gateway.writes import write_value
from simulators.modbus.config import SimulatorConfig
from simulators.modbus.server import running_simulator
from tests.servers import free_port


@pytest.fixture
def serial_pair() -> Iterator[tuple[str, str]]:
    socat = shutil.which("socat")
    assert socat, "socat is not installed (the dev script installs it: apt-get install socat)"
    proc = subprocess.Popen([socat, "-d", "-d", "pty,raw,echo=0", "pty,raw,echo=0"],
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    ptys: list[str] = []
    while len(ptys) < 2:
        line = proc.stderr.readline()
        assert line, "socat exited before opening its ptys"
        m = re.search(r"PTY is (\S+)", line)
        if m:
            ptys.append(m.group(1))
    try:
        yield ptys[0], ptys[1]
    finally:
        proc.terminate()
        proc.wait(5)


async def collect(cfg: ModbusSourceConfig, want: int, timeout: float = 15.0) -> dict[tuple[str, str], Sample]:
    source = ModbusSource("m", cfg)
    got: dict[tuple[str, str], Sample] = {}
    done = asyncio.Event()

    async def emit(batch: Batch) -> None:
        for s in batch.samples:
            if s.quality == Quality.GOOD:
                got[(s.device, s.tag)] = s
        if len(got) >= want:
            done.set()

    task = asyncio.create_task(source.run(emit))
    try:
        await asyncio.wait_for(done.wait(), timeout)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return got


SIM = {"devices": {
    "meter": {"unit": 7, "tags": [
        {"name": "power", "address": 0, "type": "float32", "order": "CDAB", "signal": "constant", "value": 1.25},
        {"name": "count", "address": 2, "type": "uint32", "order": "DCBA", "signal": "constant", "value": 70000}]},
    "drive": {"unit": 9, "tags": [
        {"name": "speed", "address": 10, "type": "int16", "signal": "constant", "value": -300},
        {"name": "name", "address": 11, "type": "string", "length": 2, "order": "BADC", "signal": "text",
         "text": "VFD"}]},
}}
GW = {
    "meter": {"unit": 7, "tags": [{"name": "power", "address": 0, "type": "float32", "order": "CDAB"},
                                  {"name": "count", "address": 2, "type": "uint32", "order": "DCBA"}]},
    "drive": {"unit": 9, "tags": [{"name": "speed", "address": 10, "type": "int16"},
                                  {"name": "name", "address": 11, "type": "string", "length": 2, "order": "BADC"}]},
}
EXPECTED = {("meter", "power"): 1.25, ("meter", "count"): 70000, ("drive", "speed"): -300, ("drive", "name"): "VFD"}


async def test_rtu_over_a_serial_pair_with_two_units(serial_pair: tuple[str, str]) -> None:
    server_end, client_end = serial_pair
    cfg = ModbusSourceConfig.model_validate({
        "transport": "rtu", "serial": {"port": client_end, "baudrate": 115200}, "interval": "100ms",
        "timeout": "500ms", "inter_frame_delay": "5ms", "devices": GW})
    async with running_simulator(SimulatorConfig.model_validate(SIM), serial=server_end, baudrate=115200):
        got = await collect(cfg, 4)
    assert {k: s.value for k, s in got.items()} == EXPECTED


async def test_rtu_framing_over_tcp() -> None:
    port = free_port()
    cfg = ModbusSourceConfig.model_validate({"transport": "rtu_over_tcp", "host": "127.0.0.1", "port": port,
                                             "interval": "100ms", "devices": GW})
    async with running_simulator(SimulatorConfig.model_validate(SIM), port=port, rtu_over_tcp=True):
        got = await collect(cfg, 4)
    assert {k: s.value for k, s in got.items()} == EXPECTED


async def test_writes_land_with_the_right_encoding_and_unwritable_tags_are_refused() -> None:
    port = free_port()
    sim = SimulatorConfig.model_validate({"devices": {"plc": {"unit": 1, "tags": [
        {"name": "sp", "address": 0, "type": "float32", "order": "CDAB", "signal": "constant", "value": 0},
        {"name": "limit", "address": 2, "type": "int32", "order": "BADC", "signal": "constant", "value": 0},
        {"name": "label", "address": 4, "type": "string", "length": 2, "signal": "text", "text": ""},
        {"name": "word", "address": 6, "type": "uint16", "signal": "constant", "value": 0x00F0},
        {"name": "run", "table": "coil", "address": 3, "type": "bool", "signal": "constant", "value": False},
        {"name": "ro", "address": 8, "type": "int16", "signal": "constant", "value": 1}]}}})
    tags: list[dict[str, Any]] = [
        {"name": "sp", "address": 0, "type": "float32", "order": "CDAB", "writable": True, "scale": 0.5},
        {"name": "limit", "address": 2, "type": "int32", "order": "BADC", "writable": True},
        {"name": "label", "address": 4, "type": "string", "length": 2, "writable": True},
        {"name": "flag", "address": 6, "type": "bit", "bit": 0, "writable": True},
        {"name": "run", "table": "coil", "address": 3, "type": "bool", "writable": True},
        {"name": "ro", "address": 8, "type": "int16"},
    ]
    cfg = ModbusSourceConfig.model_validate({"host": "127.0.0.1", "port": port,
                                             "devices": {"plc": {"unit": 1, "tags": tags}}})
    by_name = {t.name: t for t in cfg.devices["plc"].tags}
    source = ModbusSource("m", cfg)
    async with running_simulator(sim, port=port) as server:
        await write_value(source, "plc", by_name["sp"], 21.0)  # engineering 21.0 / scale 0.5 -> raw 42.0
        await source.write("plc", "limit", -100000)
        await source.write("plc", "label", "OK")
        await source.write("plc", "flag", True)
        await source.write("plc", "run", True)
        with pytest.raises(WriteError, match="not writable"):
            await source.write("plc", "ro", 5)
        with pytest.raises(WriteError, match="no tag"):
            await source.write("plc", "nope", 5)
        regs = await server.server.async_getValues(1, 3, 0, 9)
        coil = await server.server.async_getValues(1, 1, 3, 1)
        await source.close()
    # independent encodings: 42.0f = 0x42280000 word-swapped; -100000 = 0xFFFE7960 byte-swapped
    assert struct.pack(">f", 42.0).hex() == "42280000"
    assert regs[0:2] == [0x0000, 0x4228]
    assert regs[2:4] == [0xFEFF, 0x6079]
    assert regs[4:6] == [0x4F4B, 0x0000]
    assert regs[6] == 0x00F1  # the mask write (function 22) kept the other bits
    assert regs[8] == 1
    assert coil[0] is True
