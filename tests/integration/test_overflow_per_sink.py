"""A full spool never starves a healthy sink, and every sink's counts add up, across a hot reload.

Real parts: the synthetic source, the sqlite store (healthy) and an MQTT sink whose broker is down.
"""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config.loader import load_config
from gateway.logs import configure_logging
from gateway.runtime import Runtime
from tests.servers import free_port
from tests.waiting import until as wait_for


def write_config(path: Path, tmp_path: Path, overflow: str, uplink_port: int, *, interval: str = "20ms",
                 batch: int = 5000) -> Path:
    path.write_text(yaml.safe_dump({
        "data_dir": str(tmp_path / "data"), "http": {"enabled": False},
        "spool": {"max_size": "48KiB", "overflow": overflow},
        "sources": {"line": {"type": "synthetic", "interval": interval, "devices": {"m1": {"tags": [
            {"name": f"t{i}", "signal": "sine"} for i in range(20)]}}}},
        "sinks": {
            "store": {"type": "sqlite", "path": str(tmp_path / "store.db"), "batch_max_samples": batch},
            # a broker that is never there: this sink acks nothing and fills its share of the spool
            "uplink": {"type": "mqtt", "port": uplink_port, "reconnect_min": "1s"},
        },
    }))
    return path


def stored_points(tmp_path: Path) -> int:
    db = sqlite3.connect(tmp_path / "store.db")
    try:
        return int(db.execute("SELECT count(*) FROM points").fetchone()[0])
    finally:
        db.close()


def sink(runtime: Runtime, name: str) -> Any:
    return next(s for s in runtime.sink_states() if s.name == name)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("overflow", ["drop_newest", "drop_oldest"])
async def test_a_down_uplink_never_starves_the_local_store_and_counts_add_up_across_a_reload(
        tmp_path: Path, overflow: str) -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    port = free_port()
    cfg = write_config(tmp_path / "gw.yaml", tmp_path, overflow, port)
    runtime = Runtime(load_config(cfg))
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    try:
        await asyncio.wait_for(runtime.started.wait(), 10)
        await wait_for(lambda: sink(runtime, "uplink").dropped >= 2000)
        # A hot reload that replaces the source and the healthy sink: their counts must carry on.
        write_config(cfg, tmp_path, overflow, port, interval="25ms", batch=4000)
        await runtime.apply(load_config(cfg))
        assert runtime.reloads == 1
        before = sink(runtime, "store").delivered
        await wait_for(lambda: sink(runtime, "store").delivered > before + 1000)
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    summary = next(e for e in lines if e["event"] == "gateway stopped")
    samples_in = summary["samples_in"]
    store, uplink = summary["sinks"]["store"], summary["sinks"]["uplink"]
    # The local store took every sample while the uplink was down, and stored them.
    assert (store["dropped"], store["pending"]) == (0, 0)
    assert store["delivered"] == samples_in == stored_points(tmp_path)
    # The uplink lost only its own share, and each of its samples is accounted for once.
    assert uplink["dropped"] >= 2000
    assert uplink["delivered"] == 0
    assert uplink["delivered"] + uplink["pending"] + uplink["dropped"] == samples_in
    # The log's drop figures add up to the metric's.
    logged = sum(sum(e["samples"].get("uplink", {}).values()) for e in lines if e["event"] == "spool dropped data")
    metric = runtime.metrics.registry.get_sample_value(
        "edgegw_sink_dropped_samples_total", {"sink": "uplink", "reason": "overflow"})
    assert logged == metric == uplink["dropped"]
