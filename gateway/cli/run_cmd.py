"""``edge-gateway run``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from typing import Any

from gateway.cli.common import add_config_arg, load_or_report
from gateway.config.loader import GatewayConfig
from gateway.errors import HttpPortTaken
from gateway.instance_lock import InstanceLocked
from gateway.logs import configure_logging, get_logger
from gateway.plugins import PluginError
from gateway.runtime import Runtime, tune_gc
from gateway.services import ServiceError, serve_simulators

WATCH_EVERY = 2.0


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="run the gateway (without -c: the embedded default, a simulated bottling line "
                       "-> local store)",
                       description="Run the gateway until SIGTERM or Ctrl-C. SIGHUP, or a change to the config "
                       "file, reloads it: an invalid file is rejected and the running config kept; a valid one "
                       "restarts only the sources and sinks whose config changed.")
    add_config_arg(p)
    p.add_argument("--no-watch", action="store_true", help="reload only on SIGHUP, not when the file changes")
    p.add_argument("--summary", action=argparse.BooleanOptionalAction, default=None,
                   help="a live summary on stdout (devices, tags, values/s, quality, spool); "
                   "default: on when stdout is a terminal, and for the embedded default")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    cfg = load_or_report(args.config)
    if cfg is None:
        return 2
    if (empty := cfg.empty_problem()) is not None:
        print(empty, file=sys.stderr)
        return 2
    # on a terminal always; in a pipe for the demo (no -c), whose summary is how a first user sees data flow
    summary = args.summary if args.summary is not None else (not args.config or sys.stdout.isatty())
    block = None
    if summary and sys.stdout.isatty():
        from gateway.console import LiveBlock

        block = LiveBlock(sys.stdout)
    # Logs to the terminal the summary is drawn on go above the block, never under its redraws.
    shared_tty = block is not None and sys.stderr.isatty() and _same_terminal()
    configure_logging(cfg.log.level, cfg.log.format, stream=block.stream() if block and shared_tty else None)
    tune_gc()
    return asyncio.run(_main(cfg, watch=bool(args.config) and not args.no_watch, summary=summary, block=block))


def _same_terminal() -> bool:
    try:
        return os.ttyname(1) == os.ttyname(2)
    except OSError:
        return False


async def _main(cfg: GatewayConfig, *, watch: bool, summary: bool, block: Any = None) -> int:
    stop = asyncio.Event()
    reload = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload.set)
    runtime = Runtime(cfg)
    try:
        runtime.claim()  # before anything binds a port: a second gateway is told why in one line
    except InstanceLocked as exc:
        print(f"edge-gateway: {exc}", file=sys.stderr)
        return 2
    try:
        lines = await serve_simulators(cfg)  # the simulated lines a demo config serves, via their plug-in
    except ServiceError as exc:
        print(f"{cfg.path}: {exc}", file=sys.stderr)
        return 2
    if lines is not None:
        get_logger("gateway.run").info("simulated lines serving", lines=lines.describe())
    tasks = [asyncio.create_task(_watch(cfg.path, reload))] if watch else []
    if summary:
        from gateway.console import summary_loop

        tasks.append(asyncio.create_task(summary_loop(runtime, block=block)))
    try:
        await runtime.run(stop, reload)
    except (HttpPortTaken, PluginError) as exc:
        print(f"edge-gateway: {exc}", file=sys.stderr)
        return 2
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if lines is not None:
            await lines.stop()
    return 0


def _stamp(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


async def _watch(path: str, reload: asyncio.Event) -> None:
    """Poll the file's mtime and size (inotify is not everywhere; a 2 s poll costs nothing)."""
    log = get_logger("gateway.reload", path=path)
    seen = _stamp(path)
    while True:
        await asyncio.sleep(WATCH_EVERY)
        now = _stamp(path)
        if now != seen and now is not None:
            seen = now
            log.info("config file changed; reloading")
            reload.set()
