"""The benchmark's Modbus load generator is a device the gateway reads exactly right: every float32 value
as the formula gives it, a read past a unit's block refused with exception 2 (and narrowed down to the
tags it concerns), an unknown unit with exception 11; pipelined and split requests each get their answer."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from bench.loadgen import LoadGenerator, _Device, value_of
from connectors.modbus.config import ModbusSourceConfig
from connectors.modbus.source import ModbusSource
from gateway.model import Quality
from tests.connectors.modbus.integration.test_faults import Recorder, running
from tests.servers import free_port


@asynccontextmanager
async def serving(gen: LoadGenerator) -> AsyncIterator[int]:
    """``gen`` listening on a free port (yielded) for the block."""
    port = free_port()
    ready = asyncio.Event()
    server = asyncio.create_task(gen.serve("127.0.0.1", port, ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        yield port
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)


async def test_every_value_decodes_exactly_and_faults_are_modbus_exceptions() -> None:
    gen = LoadGenerator(units=3, tags=300, period=60.0)
    tags = [{"name": f"t{t}", "address": 2 * t, "type": "float32"} for t in range(300)]
    rec = Recorder()
    async with serving(gen) as port:
        cfg = ModbusSourceConfig.model_validate({
            "host": "127.0.0.1", "port": port, "interval": "100ms", "timeout": "1s",
            "devices": {
                "u1": {"unit": 1, "tags": tags},
                "u2": {"unit": 2, "tags": [*tags, {"name": "past_the_end", "address": 600, "type": "float32"}]},
                "ghost": {"unit": 9, "tags": tags[:2]},
            }})
        async with running(ModbusSource("lg", cfg), rec):
            await rec.wait_for(lambda: {s.device for s in rec.samples()} == {"u1", "u2", "ghost"}
                               and len(rec.samples("u2")) >= 301)
    for unit, device in ((1, "u1"), (2, "u2")):
        got = {s.tag: s for s in rec.samples(device)[:301 if unit == 2 else 300]}
        for t in range(300):
            s = got[f"t{t}"]
            assert (s.quality, s.value) == (Quality.GOOD, value_of(unit, t, 0)), (device, t, s)
    past = next(s for s in rec.samples("u2") if s.tag == "past_the_end")
    assert (past.quality, past.status) == (Quality.BAD, 2)  # alone: its neighbours above stayed GOOD
    assert {(s.quality, s.status) for s in rec.samples("ghost")} == {(Quality.BAD, 11)}
    assert gen.requests >= 3 * 5


async def test_pipelined_requests_are_each_answered_in_order() -> None:
    """Many requests in one segment, as a busy link delivers them."""
    gen = LoadGenerator(units=1, tags=1000, period=60.0)

    def request(tid: int, address: int) -> bytes:
        return struct.pack(">HHHBBHH", tid, 0, 6, 1, 3, address, 125)

    async with serving(gen) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"".join(request(tid, 2 * tid) for tid in range(1, 51)))  # 50 at once
        for tid in range(1, 51):
            head = await asyncio.wait_for(reader.readexactly(9), 5)
            assert struct.unpack(">HHHBBB", head) == (tid, 0, 253, 1, 3, 250)
            body = await reader.readexactly(250)
            first = struct.unpack(">f", body[:4])[0]  # register 2 * tid is tag tid
            assert first == value_of(1, tid, 0)
        writer.close()
    assert gen.requests == 50


def test_a_request_split_over_segments_is_answered_once_whole() -> None:
    class Transport(asyncio.Transport):
        def __init__(self) -> None:
            super().__init__()
            self.sent: list[bytes] = []

        def write(self, data: bytes | bytearray | memoryview) -> None:
            self.sent.append(bytes(data))

        def get_extra_info(self, name: str, default: object = None) -> object:
            return default

    gen = LoadGenerator(units=1, tags=10, period=60.0)
    device = _Device(gen)
    transport = Transport()
    device.connection_made(transport)
    frame = struct.pack(">HHHBBHH", 7, 0, 6, 1, 4, 0, 2)
    device.data_received(frame[:3])
    device.data_received(frame[3:9])
    assert transport.sent == []
    device.data_received(frame[9:] + struct.pack(">HHHBBHH", 8, 0, 6, 1, 1, 0, 1))  # and a coil read
    assert transport.sent == [struct.pack(">HHHBBB", 7, 0, 7, 1, 4, 4) + struct.pack(">f", value_of(1, 0, 0))
                              + struct.pack(">HHHBBB", 8, 0, 3, 1, 0x81, 1)]
