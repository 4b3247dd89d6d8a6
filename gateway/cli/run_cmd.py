"""``edge-gateway run``."""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

from gateway.cli.common import add_config_arg, load_or_report
from gateway.config.loader import GatewayConfig
from gateway.logs import configure_logging
from gateway.runtime import Runtime, tune_gc


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="run the gateway (without -c: the embedded default, synthetic -> local store)",
                       description="Run the gateway until SIGTERM or Ctrl-C.")
    add_config_arg(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    cfg = load_or_report(args.config)
    if cfg is None:
        return 2
    configure_logging(cfg.log.level, cfg.log.format)
    tune_gc()
    asyncio.run(_main(cfg))
    return 0


async def _main(cfg: GatewayConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await Runtime(cfg).run(stop)
