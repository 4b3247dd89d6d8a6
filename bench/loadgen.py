"""A Modbus TCP load generator: a benchmark device fast enough not to be the bottleneck.

The pymodbus simulator decodes every request through the library's framer and datastore and builds its
values tag by tag; on this 2-core machine it saturates near 1,000 requests/s, well before the gateway
does. This server is an ``asyncio.Protocol`` that answers function 3/4 reads with a slice of a
precomputed register block per unit, rebuilt once per ``period``: a few microseconds of Python per
request, several thousand 125-register requests per second on one core. With ``--workers N`` that many
processes share the port (``SO_REUSEPORT``: the kernel spreads the connections).

Values are exact float32 (big-endian words, the gateway's default order), tag ``t`` of unit ``u`` at
period ``k``: ``u * 10_000 + t + (k % 100) / 4`` (``value_of``), so a test can check every decoded value.
Read-only: other function codes answer exception 1, an address past the block exception 2, an unknown
unit exception 11 (gateway target failed to respond), as a real gateway in front of PLCs would.

    python -m bench.loadgen --port 5020 --units 10 --tags 1000 [--period 1] [--workers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import struct
import subprocess
import sys
import time
from array import array

_MBAP = struct.Struct(">HHH")  # transaction, protocol, length (of what follows: unit + PDU)
_READ = struct.Struct(">BBHH")  # unit, function, address, quantity
_HEAD = struct.Struct(">HHHBBB")  # transaction, protocol, length, unit, function, byte count
_EXC = struct.Struct(">HHHBBB")  # transaction, protocol, length, unit, function | 0x80, exception code


def value_of(unit: int, tag: int, period_index: int) -> float:
    return unit * 10_000 + tag + (period_index % 100) / 4


def block(unit: int, tags: int, period_index: int) -> bytes:
    """Unit ``unit``'s registers: ``tags`` float32 values, two registers each, big-endian."""
    base = unit * 10_000 + (period_index % 100) / 4
    values = array("f", [base + t for t in range(tags)])
    if sys.byteorder == "little":
        values.byteswap()
    return values.tobytes()


class _Device(asyncio.Protocol):
    def __init__(self, server: LoadGenerator) -> None:
        self.server = server
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport  # asyncio sets TCP_NODELAY on TCP transports itself

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        out: list[bytes] = []
        blocks = self.server.blocks
        pos, end = 0, len(buf)
        while end - pos >= 8:
            tid, proto, length = _MBAP.unpack_from(buf, pos)
            frame_end = pos + 6 + length
            if length < 2:  # not Modbus: drop the connection as a device would
                if self.transport is not None:
                    self.transport.close()
                return
            if frame_end > end:
                break
            if length >= 6:
                unit, func, address, qty = _READ.unpack_from(buf, pos + 6)
            else:
                unit, func, address, qty = buf[pos + 6], buf[pos + 7], 0, 0
            pos = frame_end
            self.server.requests += 1
            data_block = blocks.get(unit)
            if data_block is None:
                out.append(_EXC.pack(tid, proto, 3, unit, func | 0x80, 11))
            elif func not in (3, 4) or length != 6:
                out.append(_EXC.pack(tid, proto, 3, unit, func | 0x80, 1))
            elif not 1 <= qty <= 125 or 2 * (address + qty) > len(data_block):
                out.append(_EXC.pack(tid, proto, 3, unit, func | 0x80, 2))
            else:
                n = 2 * qty
                out.append(_HEAD.pack(tid, proto, 3 + n, unit, func, n))
                out.append(data_block[2 * address:2 * address + n])
        self.buf = buf[pos:]
        if out and self.transport is not None:
            self.transport.write(b"".join(out))


class LoadGenerator:
    """Units ``1..units`` with ``tags`` float32 each, their blocks rebuilt every ``period`` seconds."""

    def __init__(self, units: int, tags: int, period: float = 1.0) -> None:
        self.units, self.tags, self.period = units, tags, period
        self.period_index = 0
        self.blocks: dict[int, bytes] = {}
        self.requests = 0
        self._rebuild()

    def _rebuild(self) -> None:
        self.blocks = {u: block(u, self.tags, self.period_index) for u in range(1, self.units + 1)}

    async def serve(self, host: str, port: int, *, reuse_port: bool = False,
                    ready: asyncio.Event | None = None) -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Device(self), host, port, reuse_port=reuse_port or None)
        if ready is not None:
            ready.set()
        async with server:
            start = loop.time()
            while True:
                self.period_index += 1
                await asyncio.sleep(max(0.0, start + self.period_index * self.period - loop.time()))
                self._rebuild()


def start(port: int, units: int, tags: int, *, period: float = 1.0, workers: int = 1,
          host: str = "127.0.0.1") -> list[subprocess.Popen[bytes]]:
    """``workers`` load-generator processes sharing ``port``; stop them with ``bench.servers.stop_processes``."""
    argv = [sys.executable, "-m", "bench.loadgen", "--host", host, "--port", str(port), "--units", str(units),
            "--tags", str(tags), "--period", str(period)]
    if workers > 1:
        argv.append("--reuse-port")
    return [subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(workers)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=5020)
    ap.add_argument("--units", type=int, default=10)
    ap.add_argument("--tags", type=int, default=1000, help="float32 tags per unit (two registers each)")
    ap.add_argument("--period", type=float, default=1.0, help="seconds between value changes")
    ap.add_argument("--reuse-port", action="store_true", help="share the port with other workers")
    args = ap.parse_args(argv)
    gen = LoadGenerator(args.units, args.tags, args.period)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        task = asyncio.create_task(gen.serve(args.host, args.port, reuse_port=args.reuse_port))
        await stop.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    t0 = time.monotonic()
    asyncio.run(run())
    print(f"loadgen {os.getpid()}: {gen.requests} requests in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
