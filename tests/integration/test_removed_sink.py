"""A sink removed from the config releases its spool cursor at start (and on a hot reload), logged with
what it never got, so it cannot pin the spool or cause false overflow drops."""

from __future__ import annotations

import asyncio
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config.loader import load_config
from gateway.logs import configure_logging
from gateway.runtime import Runtime
from tests.servers import free_port


def config(tmp_path: Path, with_uplink: bool) -> Path:
    sinks: dict[str, Any] = {"store": {"type": "sqlite", "path": str(tmp_path / "store.db")}}
    if with_uplink:  # a broker that is never there: this sink acks nothing
        sinks["uplink"] = {"type": "mqtt", "port": free_port(), "reconnect_min": "1s"}
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump({
        "data_dir": str(tmp_path / "data"), "http": {"enabled": False},
        "sources": {"line": {"type": "synthetic", "interval": "20ms", "devices": {"m1": {"tags": [
            {"name": f"t{i}", "signal": "sine"} for i in range(20)]}}}},
        "sinks": sinks,
    }))
    return path


async def run_until(runtime: Runtime, done: Any, timeout: float = 20.0) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    try:
        await asyncio.wait_for(runtime.started.wait(), 10)
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, "condition not met before the deadline"
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


@pytest.mark.timeout(60)
async def test_a_removed_sinks_cursor_is_released_at_start_and_stops_pinning_the_spool(tmp_path: Path) -> None:
    first = Runtime(load_config(config(tmp_path, with_uplink=True)))
    await run_until(first, lambda: first.spool.stats().batches >= 50)  # the uplink holds them all back
    held = first.spool.stats().samples
    assert held >= 1000
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    second = Runtime(load_config(config(tmp_path, with_uplink=False)))
    # only the local store remains: once it has acked, garbage collection empties the spool
    await run_until(second, lambda: second.spool.stats().samples < held // 4)
    assert second.spool.stored_sinks == ["store"]
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    released = [e for e in lines if e["event"] == "sink no longer configured; its spool cursor is released"]
    assert len(released) == 1 and released[0]["sink"] == "uplink"
    assert released[0]["undelivered_samples"] >= held  # what it never got, stated once
