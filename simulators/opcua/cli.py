"""``edge-gateway simulate opcua FILE``: serve the machines of a YAML description until interrupted.

Prints ``ready URL`` once serving. Reads control commands from stdin, one per line, and answers each
with one line (tests drive faults this way): ``stall SECONDS``, ``restart DOWN_SECONDS``,
``remove_node DEVICE VARIABLE``, ``set DEVICE VARIABLE VALUE``, ``stats``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import sys
import threading
from pathlib import Path

from simulators.description import load_or_report


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="simulator description (YAML, top-level `devices:`)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4840)
    parser.add_argument("--no-stdin", action="store_true", help="do not read control commands from stdin")



async def _control(sim: object) -> None:
    from simulators.opcua.server import OpcUaSimulator

    assert isinstance(sim, OpcUaSimulator)
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str] = asyncio.Queue()

    def reader() -> None:  # a daemon thread: a blocked readline must not hold up interpreter exit
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)

    threading.Thread(target=reader, name="opcua-sim-stdin", daemon=True).start()
    while True:
        parts = (await lines.get()).split()
        if not parts:
            continue
        try:
            answer = await sim.apply(parts[0], parts[1:])
        except Exception as exc:  # a bad command must not take the simulator down
            answer = f"error {type(exc).__name__}: {exc}"
        print(answer, flush=True)


def run(args: argparse.Namespace) -> int:
    import logging

    from simulators.opcua.config import OpcUaSimConfig
    from simulators.opcua.server import OpcUaSimulator

    cfg = load_or_report(args.file, OpcUaSimConfig)
    if cfg is None:
        return 2
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("asyncua").setLevel(logging.ERROR)

    async def serve() -> None:
        sim = OpcUaSimulator(cfg, host=args.host, port=args.port)
        await sim.start()
        # The address space (~100,000 objects with asyncua's standard nodes) is built once; left in the
        # collector's sight, every full collection walks it and holds the server for 100-200 ms, long
        # enough to delay a publish by two intervals.
        gc.collect()
        gc.freeze()
        n = sum(len(m.variables) for m in cfg.devices.values())
        print(f"ready {sim.url} devices={len(cfg.devices)} variables={n} ns={sim.ns}", flush=True)
        try:
            if args.no_stdin:
                await asyncio.Event().wait()
            else:
                await _control(sim)
        finally:
            await sim.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0
