"""The OPC-UA source against node-opcua's own sample address space (namespace urn://node-opcua-simulator,
served by tests/interop/server.js), configured from that server's documented node ids: changing
simulation variables of every common type, arrays, a matrix and the access-right nodes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from connectors.sqlite.query import query_points
from gateway.config.loader import load_config
from gateway.model import Quality
from gateway.runtime import Runtime
from gateway.status_codes import status_name
from tests.connectors.opcua.support import running
from tests.waiting import until as wait_until

SIM = "urn://node-opcua-simulator"
CHANGING = {  # Objects/Simulation/Dynamic/Scalar_Simulation: a new random value every 200 ms
    "sim_bool": "Boolean", "sim_text": "String", "sim_time": "DateTime", "sim_double": "Double",
    "sim_int32": "Int32", "sim_byte": "Byte",
}


def tags() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"name": name, "node": f"nsu={SIM};s=Scalar_Simulation_{t}"}
                                 for name, t in CHANGING.items()]
    out[3]["server_timestamp"] = True  # sim_double carries the server timestamp too
    out += [
        {"name": "levels", "node": f"nsu={SIM};s=Static_Array_Int32", "writable": True},
        {"name": "names", "node": f"nsu={SIM};s=Static_Array_String"},
        {"name": "grid", "node": f"nsu={SIM};s=Static_MultiDimensional_Array_Double"},
        {"name": "read_only", "node": f"nsu={SIM};s=AccessLevel_CurrentRead", "writable": True},
        {"name": "write_only", "node": f"nsu={SIM};s=AccessLevel_CurrentWrite"},
        {"name": "denied", "node": f"nsu={SIM};s=AccessLevel_DeniedAll"},
        {"name": "flag", "node": f"nsu={SIM};s=Scalar_Simulation_Boolean", "writable": True},
    ]
    return out


def config(url: str, data_dir: Path) -> dict[str, Any]:
    return {
        "data_dir": str(data_dir), "http": {"enabled": False},
        "sources": {"sample": {"type": "opcua", "devices": {"sim": {
            "endpoint": url, "publishing_interval": "100ms", "sampling_interval": "100ms", "tags": tags()}}}},
        "sinks": {"store": {"type": "sqlite", "path": str(data_dir / "store.db")}},
    }


@pytest.mark.timeout(60)
async def test_every_changing_node_keeps_changing_in_the_store(node_opcua_url: str, tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config(node_opcua_url, tmp_path)))
    runtime = Runtime(load_config(path))
    stop = asyncio.Event()
    db = str(tmp_path / "store.db")

    def by_tag() -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = defaultdict(list)
        try:
            for p in query_points(db, order="asc"):
                out[p.tag].append(p)
        except Exception:  # no store yet
            pass
        return out

    task = asyncio.create_task(runtime.run(stop))
    try:
        # a StatusValue filter made node-opcua report String, Boolean and DateTime once and never again
        await wait_until(lambda: all(len({p.value for p in by_tag()[t]}) >= 4 for t in CHANGING if t != "sim_bool")
                         and len(by_tag()["sim_bool"]) >= 3, timeout=30, what="every simulation node changing")
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
    points = by_tag()
    for tag in CHANGING:
        assert all(p.quality is Quality.GOOD for p in points[tag]), tag
    assert {p.value for p in points["sim_bool"]} <= {True, False}
    assert all(type(p.value) is str and datetime.fromisoformat(p.value) for p in points["sim_time"])  # ISO text
    assert all(type(p.value) is int for p in points["sim_int32"] + points["sim_byte"])
    # node-opcua sends these notifications with the server timestamp at DateTime.MinValue (1601-01-01):
    # outside the sane window, so it is dropped rather than stored as a date four centuries ago
    assert all(p.server_ts == 0 or abs(p.server_ts - p.gateway_ts) < 5 * 10**9 for p in points["sim_double"])
    assert all(p.server_ts == 0 for p in points["sim_int32"])
    levels, names, grid = points["levels"][-1].value, points["names"][-1].value, points["grid"][-1].value
    assert isinstance(levels, list) and len(levels) == 10 and all(type(v) is int for v in levels)
    assert isinstance(names, list) and all(type(v) is str for v in names)
    assert isinstance(grid, list) and len(grid) == 2 and all(isinstance(r, list) and len(r) == 3 for r in grid)
    assert all(type(v) is float for row in grid for v in row)
    assert points["read_only"][-1].quality is Quality.GOOD
    for tag in ("write_only", "denied"):  # nothing to read there: BAD with the server's reason, no crash
        last = points[tag][-1]
        assert last.quality is Quality.BAD and status_name(last.status) in ("BadNotReadable", "BadUserAccessDenied")


def cli(config_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli.main", "write", "-c", str(config_path), *args],
                          capture_output=True, text=True, timeout=60, env={**os.environ})


@pytest.mark.timeout(120)
async def test_the_write_command_connects_and_writes_arrays_and_refuses_what_does_not_fit(
        node_opcua_url: str, tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    cfg = config(node_opcua_url, tmp_path)
    path.write_text(yaml.safe_dump(cfg))
    ok = await asyncio.to_thread(cli, path, "sample.sim", "levels", "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]")
    assert ok.returncode == 0, ok.stderr
    assert "sample.sim.levels <- [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]" in ok.stdout
    assert '"write executed"' in ok.stderr or "write executed" in ok.stderr + ok.stdout  # the audit event
    refusals = {
        ("levels", "[1, 2.5]"): "not a whole number",
        ("levels", "7"): "JSON array",
        ("flag", "maybe"): "expected true, false, 1 or 0",
        ("read_only", "1"): "Bad",  # the server's own refusal (BadNotWritable / BadUserAccessDenied)
    }
    for (tag, text), reason in refusals.items():
        res = await asyncio.to_thread(cli, path, "sample.sim", tag, text)
        assert res.returncode == 1 and reason in res.stderr, (tag, text, res.stderr[-2000:])
        assert "Traceback" not in res.stderr
    source_cfg = {"devices": {"sim": {**cfg["sources"]["sample"]["devices"]["sim"], "mode": "poll",
                                      "poll_interval": "200ms"}}}
    async with running(source_cfg, tmp_path) as r:
        await wait_until(lambda: r.last("levels") is not None, timeout=20, what="a poll")
        assert r.last("levels").value == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]  # type: ignore[union-attr]
        started = time.monotonic()
        await r.source.write("sim", "levels", [5] * 10)  # the source's own write: an array of the node's type
        await wait_until(lambda: r.last("levels").value == [5] * 10, what="array written")  # type: ignore[union-attr]
        assert time.monotonic() - started < 10
