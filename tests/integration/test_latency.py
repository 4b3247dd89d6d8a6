"""Latency: a caught-up sink is woken by the commit (no linger wait), and the stage timings are exported."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.stages import STAGES
from tests.gateways import StartGateway, get
from tests.mqtt_subscriber import Received, Subscriber
from tests.servers import Mosquitto
from tests.waiting import until

LINGER = 5.0  # s: a sink that waited it out would deliver ~once per this


def config(tmp_path: Path, broker: int, client_id: str) -> dict[str, Any]:
    return {
        "data_dir": str(tmp_path / "data"),
        "site": {"enterprise": "lat", "site": client_id, "area": "a", "line": "l"},
        "http": {"port": 0},
        "sources": {"gen": {"type": "synthetic", "interval": "200ms", "devices": {
            "m": {"tags": [{"name": "c", "signal": "counter"}]}}}},
        "sinks": {"up": {"type": "mqtt", "host": "127.0.0.1", "port": broker, "qos": 1, "layout": "device",
                         "client_id": client_id, "linger": f"{LINGER:g}s"}},
    }


def latencies(received: list[Received]) -> list[float]:
    """Seconds from each data message's payload timestamp to its arrival (``Subscriber`` keeps arrival)."""
    out = []
    for r in received:
        doc = json.loads(r.payload)
        ts = datetime.fromisoformat(doc["ts"]).timestamp()
        out.append(r.arrived - ts)
    return out


async def test_a_caught_up_sink_delivers_each_commit_without_waiting_for_its_linger(
        tmp_path: Path, gateway: StartGateway, mosquitto_server: Mosquitto) -> None:
    topic = "lat/caught-up/a/l/m"
    with Subscriber(mosquitto_server.port, [topic]) as sub:
        await gateway(config(tmp_path, mosquitto_server.port, "caught-up"))
        # 10 ticks at 200 ms: a sink waiting out its 5 s linger after each write would have delivered
        # one or two writes by now, far from ten
        got = await sub.wait_for(lambda m: len(m) >= 10, timeout=LINGER)
    values = [json.loads(r.payload)["values"]["c"] for r in got]
    assert values == list(range(values[0], values[0] + len(values)))  # in order, none lost
    lat = latencies(got)
    assert all(-0.01 < x < 0.5 for x in lat), lat  # each one within well under the linger
    assert sorted(lat)[len(lat) // 2] < 0.1, lat


def stage_series(text: str) -> dict[str, dict[str, float]]:
    """``edgegw_stage_seconds`` from a /metrics page: stage -> {count, sum, +Inf bucket}."""
    out: dict[str, dict[str, float]] = {}
    for m in re.finditer(r'^edgegw_stage_seconds_(count|sum|bucket)\{(.*?)\} (\S+)$', text, re.M):
        kind, labels, value = m.groups()
        stage = re.search(r'stage="([^"]+)"', labels)
        assert stage is not None
        if kind == "bucket":
            if 'le="+Inf"' not in labels:
                continue
            kind = "inf"
        out.setdefault(stage.group(1), {})[kind] = float(value)
    return out


async def test_metrics_export_each_stage_from_the_read_to_the_uplinks_ack(
        tmp_path: Path, gateway: StartGateway, mosquitto_server: Mosquitto) -> None:
    rt = await gateway(config(tmp_path, mosquitto_server.port, "stages"))
    await until(lambda: rt.deliveries["up"].delivered >= 5, timeout=10, what="five deliveries")
    t0 = time.monotonic()
    status, _, text = await get(rt, "/metrics")
    assert status == 200
    series = stage_series(text)
    assert set(series) == set(STAGES)
    for stage, s in series.items():
        assert s["count"] >= 1 and s["inf"] == s["count"], (stage, s)
        mean = s["sum"] / s["count"]
        assert 0 <= mean < 1.0, (stage, mean)  # a loopback broker and a 200 ms source: milliseconds, not seconds
    # one observation per unit of work, never per sample: a write is one, however many samples it carries
    writes = series["publish_ack"]["count"]
    assert writes == series["sink_publish"]["count"] == series["commit_sink"]["count"]
    assert writes <= series["read_emit"]["count"] + 1  # at most one write per emitted batch (plus the racing one)
    assert time.monotonic() - t0 < 5
