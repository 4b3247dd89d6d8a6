"""(Checkout script) How long a config of DEVICES x TAGS Modbus float32 tags (one source per device, against
the load generator) takes to load and start, when the first full scan is in, and the gateway's peak RSS.

    python bench/scripts/startup_100k.py [DEVICES] [TAGS]      # default 100 1000

The gateway's modules are imported after the clock starts: the figures include them, as a start does.
"""

from __future__ import annotations

import asyncio
import importlib
import resource
import sys
import tempfile
import time
from pathlib import Path

from bench.loadgen import start as start_loadgen
from bench.modbus import _write_files
from bench.servers import free_port, stop_processes, wait_port


async def measure(cfg_path: Path, expected: int, t0: float) -> None:
    loader = importlib.import_module("gateway.config.loader")
    logs = importlib.import_module("gateway.logs")
    runtime_mod = importlib.import_module("gateway.runtime")
    cfg = loader.load_config(cfg_path)
    loaded = time.monotonic()
    logs.configure_logging("warning", "json")
    runtime = runtime_mod.Runtime(cfg)
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    await runtime.started.wait()
    started = time.monotonic()
    # a poll of the pipelines' counters: there is no event to wait on
    while sum(p.samples_in for p in runtime.pipelines.values()) < expected:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    scanned = time.monotonic()
    await asyncio.sleep(5)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(f"imports + config load {loaded - t0:.2f} s, started {started - t0:.2f} s, "
          f"first full scan {scanned - t0:.2f} s, peak RSS {peak} MB")
    stop.set()
    await task


def main() -> None:
    devices = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    tags = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    port = free_port()
    _, cfg_path = _write_files(Path(tempfile.mkdtemp()), port, devices, tags, 1.0)
    procs = start_loadgen(port, devices, tags)
    try:
        wait_port(port)
        asyncio.run(measure(cfg_path, devices * tags, time.monotonic()))
    finally:
        stop_processes(procs)


if __name__ == "__main__":
    main()
