"""``edge-gateway record``: run a config's sources and write what they read to a CSV or Parquet file.

The config's sinks are replaced by one ``record`` sink; sources and processing stay as configured. The
spool lives in a temporary directory, so a recording never mixes with (or steals the backlog of) a
gateway that shares the config's ``data_dir``; the data_dir itself stays, for the OPC-UA client PKI.
The HTTP endpoint is off for the same reason: a running gateway owns its port.

Stopping drains: the sources stop first, then the sink gets everything they produced before the file
is finished (the runtime's own stop would leave a late backlog in the spool for a next start, which a
throwaway spool never has).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.config.base import parse_duration
from gateway.plugins import CommandPlugin
from gateway.services import ServiceError, serve_simulators

if TYPE_CHECKING:
    from gateway.config.loader import GatewayConfig
    from gateway.runtime import Runtime

PROG = "edge-gateway record"
SINK_NAME = "record"
DRAIN_TIMEOUT = 30.0
"""Seconds the sink may take after stop to write what the sources produced; a second signal cuts it short."""


def configure(p: argparse.ArgumentParser) -> None:
    p.epilog = (
        "The extension of FILE picks the format: .csv, .csv.gz or .parquet (needs pyarrow). FILE is overwritten. "
        "Stops after --duration, or on Ctrl-C / SIGTERM; a second one skips writing what is still queued."
    )
    p.add_argument("-c", "--config", metavar="CONFIG", required=True, help="gateway config (YAML) with the sources")
    p.add_argument("-o", "--output", metavar="FILE", required=True, help="recording to write")
    p.add_argument("--duration", metavar="D", help="stop after this long, e.g. 30s, 10m, 2h (default: until stopped)")
    p.add_argument("--sources", metavar="A,B", help="record only these sources of the config (default: all)")


def run(args: argparse.Namespace) -> int:
    from connectors.recording.files import RecordingError, open_writer
    from gateway.cli.common import load_or_report
    from gateway.logs import configure_logging

    cfg = load_or_report(args.config)
    if cfg is None:
        return 2
    try:
        duration = parse_duration(args.duration) if args.duration is not None else None
    except ValueError as exc:
        return _usage(f"--duration: {exc}")
    if duration is not None and duration <= 0:
        return _usage("--duration must be more than 0")
    sources = dict(cfg.sources)
    if args.sources is not None:
        wanted = [s.strip() for s in args.sources.split(",") if s.strip()]
        unknown = [s for s in wanted if s not in sources]
        if unknown or not wanted:
            return _usage(f"--sources: no source {', '.join(unknown) or '(none given)'} in {cfg.path}; "
                          f"sources: {', '.join(sorted(sources)) or 'none'}")
        sources = {s: sources[s] for s in wanted}
    if not sources:
        return _usage(f"{cfg.path} has no sources to record")

    out = Path(args.output)
    try:
        # Fail here, not in the sink's retry loop: unknown extension, no pyarrow, no such directory.
        open_writer(out).close()
        out.unlink()  # -o overwrites; the sink would otherwise continue (CSV) or keep (Parquet) the file
    except RecordingError as exc:
        return _usage(str(exc))
    except OSError as exc:
        return _usage(f"{out}: cannot write: {exc.strerror or exc}")

    configure_logging(cfg.log.level, cfg.log.format)
    with tempfile.TemporaryDirectory(prefix="edge-gateway-record-") as spool_dir:
        rec_cfg = recording_config(cfg.model_copy(update={"sources": sources}), out, Path(spool_dir))
        return asyncio.run(_main(rec_cfg, duration, out))


def _usage(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return 2


def recording_config(cfg: GatewayConfig, out: Path, spool_dir: Path) -> GatewayConfig:
    """``cfg`` with one ``record`` sink writing ``out`` instead of its sinks, its spool in ``spool_dir``
    and no HTTP endpoint; sources, processing and data_dir as they are."""
    from connectors.recording.config import RecordSinkConfig

    return cfg.model_copy(update={
        "sinks": {SINK_NAME: RecordSinkConfig(type="record", path=str(out))},
        # a throwaway spool: nothing to protect across a power cut, so no fsyncs
        "spool": cfg.spool.model_copy(update={"path": str(spool_dir / "spool.db"), "synchronous": "off"}),
        "http": cfg.http.model_copy(update={"enabled": False}),
    })


async def _main(cfg: GatewayConfig, duration: float | None, out: Path) -> int:
    from connectors.recording.sink import RecordSink
    from gateway.runtime import Runtime

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:  # a config that serves its own simulated line: record that line
        lines = await serve_simulators(cfg)
    except ServiceError as exc:
        print(f"{cfg.path}: {exc}", file=sys.stderr)
        return 2
    runtime = Runtime(cfg)
    try:
        left = await record(runtime, stop, duration)
    except Exception as exc:  # the runtime failed (e.g. its spool): say so, not a traceback
        print(f"{PROG}: the gateway stopped: {exc!r}", file=sys.stderr)
        return 1
    finally:
        if lines is not None:
            await lines.stop()
    sink = runtime.sinks.get(SINK_NAME)
    assert isinstance(sink, RecordSink)
    print(f"recorded {sink.samples} samples of {sink.tags} tags from {sink.devices} devices to {sink.path or out}",
          file=sys.stderr)
    if left:
        print(f"{PROG}: {left} samples read before the stop were not written", file=sys.stderr)
        return 1
    return 0


async def record(runtime: Runtime, stop: asyncio.Event, duration: float | None) -> int:
    """Run ``runtime`` (a ``recording_config``) until ``duration`` has passed or ``stop`` is set, then stop
    its sources, let the sink write everything they produced and stop it. Returns the samples left
    unwritten: 0, unless the drain timed out or ``stop`` was set again during it."""
    from connectors.recording.sink import RecordSink

    halt = asyncio.Event()
    running = asyncio.create_task(runtime.run(halt), name="runtime")
    stopped = asyncio.create_task(stop.wait())
    started = asyncio.create_task(runtime.started.wait())
    left = 0
    try:
        # Start-up is quick; a signal during it is handled once the sources run, like any other.
        await asyncio.wait({running, started}, return_when=asyncio.FIRST_COMPLETED)
        if not running.done():
            await asyncio.wait({running, stopped}, timeout=duration, return_when=asyncio.FIRST_COMPLETED)
        if not running.done():
            stop.clear()  # from here on a signal means "stop now"
            await _stop_sources(runtime)
            left = await _drain(runtime, stop)
        halt.set()
        await running
        sink = runtime.sinks.get(SINK_NAME)
        if isinstance(sink, RecordSink):
            await sink.wait_closed()  # the runtime's stop deadline may have stopped waiting for it
    finally:
        stopped.cancel()
        started.cancel()
        if not running.done():
            halt.set()
            await running
    return left


async def _stop_sources(runtime: Runtime) -> None:
    """The runtime's hot-reload path stops exactly the sources a config drops and leaves the sink running."""
    await runtime.apply(runtime.config.model_copy(update={"sources": {}}))
    await runtime.spool.flush()  # every appended batch committed, so the reader's count covers it


async def _drain(runtime: Runtime, interrupt: asyncio.Event) -> int:
    """Wait until the sink has acked everything spooled; returns the samples still pending when cut short."""
    delivery = runtime.deliveries[SINK_NAME]
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while True:
        reader = delivery.reader
        pending = reader.pending_samples() if reader is not None else 0
        if reader is not None and pending == 0:
            return 0
        if interrupt.is_set() or time.monotonic() >= deadline:
            return pending
        await asyncio.sleep(0.02)


RECORD_COMMAND = CommandPlugin(
    name="record",
    help="run a config's sources and record what they read to a CSV or Parquet file (for simulate --replay)",
    configure=configure,
    run=run,
)
