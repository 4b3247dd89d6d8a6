"""Link faults from a device we did not write: a TCP server that answers one request and then closes the
connection, and one that answers with malformed frames. Both must be reconnected with backoff, not on every
poll, and their samples must say what happened (BadNotConnected / BadDecodingError), never GOOD."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import pytest

from connectors.modbus.config import ModbusSourceConfig
from connectors.modbus.source import ModbusSource
from gateway.model import Batch, Quality, Sample
from gateway.status_codes import BAD_DECODING_ERROR, BAD_NOT_CONNECTED
from tests.servers import free_port


class RudeDevice:
    """Answers read-holding-registers with 0x0001 per register, then closes (``mode="close"``), or answers
    every request with a short reply: one register, whatever was asked for (``mode="garbage"``)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readexactly(7)
                tid, _proto, length, unit = struct.unpack(">HHHB", head)
                pdu = await reader.readexactly(length - 1)
                _fc, _address, count = struct.unpack(">BHH", pdu[:5])
                body = struct.pack(">BB", 3, 2 * count) + b"\x00\x01" * count
                if self.mode == "garbage":
                    body = struct.pack(">BB", 3, 2) + b"\x00\x01"  # one register where more were asked for
                writer.write(struct.pack(">HHHB", tid, 0, len(body) + 1, unit) + body)
                await writer.drain()
                if self.mode == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with suppress(Exception):
                await writer.wait_closed()


@asynccontextmanager
async def rude_device(mode: str, port: int) -> AsyncIterator[RudeDevice]:
    device = RudeDevice(mode)
    server = await asyncio.start_server(device.handle, "127.0.0.1", port)
    try:
        yield device
    finally:
        server.close()
        await server.wait_closed()


async def collect(source: ModbusSource, seconds: float) -> list[Sample]:
    seen: list[Sample] = []

    async def emit(batch: Batch) -> None:
        seen.extend(batch.samples)

    task = asyncio.create_task(source.run(emit))
    await asyncio.sleep(seconds)  # a fixed observation window: what is measured is how often it reconnects
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return seen


def source(port: int) -> ModbusSource:
    return ModbusSource("m", ModbusSourceConfig.model_validate({
        "host": "127.0.0.1", "port": port, "interval": "50ms", "timeout": "300ms",
        "reconnect_initial": "200ms", "reconnect_max": "2s",
        "devices": {"d": {"unit": 1, "tags": [{"name": "a", "address": 0}, {"name": "b", "address": 1}]}}}))


@pytest.mark.timeout(30)
async def test_a_device_that_closes_after_every_request_is_reconnected_with_backoff() -> None:
    port = free_port()
    async with rude_device("close", port) as device:
        seen = await collect(source(port), 2.5)
    # one connection per poll would be ~50; a backoff of 0.2, 0.4, 0.8, 1.6 s allows about 5
    assert 2 <= device.connections <= 7, device.connections
    good = [s for s in seen if s.quality is Quality.GOOD]
    assert good and all(s.value == 1 for s in good)  # each connection's one answer is used
    assert {s.status for s in seen if s.quality is Quality.BAD} == {BAD_NOT_CONNECTED}  # while it waits


@pytest.mark.timeout(30)
async def test_malformed_replies_are_bad_decoding_errors_and_reset_the_link_with_backoff() -> None:
    port = free_port()
    async with rude_device("garbage", port) as device:
        seen = await collect(source(port), 2.5)
    assert seen and not [s for s in seen if s.quality is Quality.GOOD]  # a garbled frame is never a value
    statuses = {s.status for s in seen}
    assert BAD_DECODING_ERROR in statuses and statuses <= {BAD_DECODING_ERROR, BAD_NOT_CONNECTED}
    assert 2 <= device.connections <= 7, device.connections
