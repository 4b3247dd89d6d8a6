"""``edge-gateway simulate modbus FILE``: serve the devices of a YAML description until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from pathlib import Path

from simulators.description import load_or_report, until_signalled


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="simulator description (YAML, top-level `devices:`)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5020)
    parser.add_argument("--rtu-over-tcp", action="store_true", help="RTU framing on the TCP socket")
    parser.add_argument("--serial", metavar="DEV", help="serve RTU on a serial port instead of TCP")
    parser.add_argument("--baud", type=int, default=19200)



def run(args: argparse.Namespace) -> int:
    from simulators.modbus.config import SimulatorConfig
    from simulators.modbus.server import ModbusSimulator

    cfg = load_or_report(args.file, SimulatorConfig)
    if cfg is None:
        return 2

    async def serve() -> None:
        sim = ModbusSimulator(cfg, host=args.host, port=args.port, rtu_over_tcp=args.rtu_over_tcp,
                              serial=args.serial, baudrate=args.baud)
        await sim.start()
        where = args.serial or f"{args.host}:{args.port}"
        print(f"modbus simulator serving {len(cfg.devices)} devices on {where}", flush=True)
        try:
            await until_signalled()
        finally:
            await sim.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0
