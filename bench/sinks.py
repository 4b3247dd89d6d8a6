"""Benchmark scenario ``sinks``: synthetic source -> spool -> MQTT (per-device, QoS 1) and InfluxDB
(VictoriaMetrics) together, then an outage of both uplinks and the rate at which the backlog drains.

mosquitto and VictoriaMetrics are started here on free ports (their binaries must be installed).
Parameters (``edge-gateway bench sinks --param k=v``): ``rate`` (samples/s, default 100000),
``duration`` (s, 10), ``outage`` (s, 60), ``outage_rate`` (samples/s during the outage phase, 10000).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.result import BenchResult, ProcessMeter
from bench.running import start_runtime
from bench.servers import Server as _Server
from bench.servers import servers as _servers


def _config(tmp: Path, rate: int, mq_port: int, vm_port: int) -> Path:
    devices, interval = 10, 0.1
    tags = max(1, rate // devices // int(1 / interval))
    signals = ["sine", "ramp", "random_walk", "counter", "square"]
    cfg = {
        "data_dir": str(tmp / "data"),
        "log": {"level": "warning", "format": "json"},
        "http": {"enabled": False},
        "spool": {"max_size": "4GiB"},
        "sources": {"bench": {"type": "synthetic", "interval": f"{interval * 1000:g}ms", "seed": 7, "devices": {
            f"machine_{d}": {"tags": [{"name": f"t{t}", "signal": signals[t % 5], "unit": "u"} for t in range(tags)]}
            for d in range(devices)}}},
        "sinks": {
            "mqtt": {"type": "mqtt", "port": mq_port, "qos": 1, "layout": "device", "batch_max_samples": 20000,
                     "reconnect_min": "1s", "reconnect_max": "2s", "retry_max": "2s"},
            "tsdb": {"type": "influxdb", "url": f"http://127.0.0.1:{vm_port}", "batch_max_samples": 20000,
                     "max_request_lines": 5000, "retry_max": "2s"},
        },
    }
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / f"bench-{rate}.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML too
    return path


def run_sinks(params: dict[str, Any]) -> BenchResult:
    rate = int(params.get("rate", 100_000))
    duration = float(params.get("duration", 10.0))
    outage = float(params.get("outage", 60.0))
    outage_rate = int(params.get("outage_rate", 10_000))
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        with _servers(tmp) as (broker, vm):
            steady = asyncio.run(_steady(_config(tmp / "steady", rate, broker.port, vm.port), duration))
            drain = asyncio.run(_outage(_config(tmp / "outage", outage_rate, broker.port, vm.port),
                                        outage, broker, vm)) if outage > 0 else {}
    meter, delivered, offered, backlog = steady
    notes: dict[str, float | int | str] = {
        "offered/s": offered,
        "mqtt delivered/s": round(delivered["mqtt"] / meter.wall_s),
        "tsdb delivered/s": round(delivered["tsdb"] / meter.wall_s),
        "backlog_at_end": backlog,
        **drain,
    }
    return BenchResult(scenario="sinks", wall_s=meter.wall_s, cpu_s=meter.cpu_s,
                       samples_in=int(delivered["in"]), samples_out=int(min(delivered["mqtt"], delivered["tsdb"])),
                       peak_rss_mib=meter.peak_rss_mib,
                       target=">= 100,000/s to both sinks on one core; backlog drains >= 100,000/s", notes=notes)


def _counts(runtime: Any) -> dict[str, float]:
    return {"in": sum(p.samples_in for p in runtime.pipelines.values()),
            **{name: d.delivered for name, d in runtime.deliveries.items()}}


async def _steady(path: Path, duration: float) -> tuple[ProcessMeter, dict[str, float], int, int]:
    runtime, stop, task = await start_runtime(path)
    await asyncio.sleep(2.0)  # warm-up: connections, first ticks, caches
    c0 = _counts(runtime)
    with ProcessMeter() as meter:
        await asyncio.sleep(duration)
        c1 = _counts(runtime)
    backlog = sum(s.pending for s in runtime.sink_states())
    stop.set()
    await task
    offered = sum(len(list(s.iter_tags())) for s in runtime.config.sources.values()) * 10
    return meter, {k: c1[k] - c0[k] for k in c1}, offered, backlog


async def _outage(path: Path, outage: float, broker: _Server, vm: _Server) -> dict[str, float | int | str]:
    runtime, stop, task = await start_runtime(path)
    await asyncio.sleep(2.0)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, broker.stop)
    await loop.run_in_executor(None, vm.stop)
    await asyncio.sleep(outage)
    pending = {s.name: s.pending for s in runtime.sink_states()}
    before = _counts(runtime)
    await loop.run_in_executor(None, broker.start)
    await loop.run_in_executor(None, vm.start)
    t0 = time.monotonic()
    # The drain is timed from a sink's first delivery after the restart (reconnect delays excluded)
    # until its backlog is down to what one more write carries.
    first: dict[str, tuple[float, float]] = {}
    drained: dict[str, tuple[float, float]] = {}
    deadline = t0 + max(120.0, outage * 3)
    while len(drained) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        now, counts = time.monotonic(), _counts(runtime)
        for s in runtime.sink_states():
            if s.name not in first and counts[s.name] > before[s.name]:
                first[s.name] = (now, before[s.name])
            if s.name in first and s.name not in drained and \
                    s.pending < 2 * runtime.config.sinks[s.name].batch_max_samples:
                drained[s.name] = (now, counts[s.name])
    stop.set()
    await task
    out: dict[str, float | int | str] = {"outage_s": outage}
    for name in ("mqtt", "tsdb"):
        out[f"{name} backlog"] = pending.get(name, 0)
        if name in drained:
            (t_first, n_first), (t_done, n_done) = first[name], drained[name]
            out[f"{name} reconnect_s"] = round(t_first - t0, 1)
            out[f"{name} drain/s"] = round((n_done - n_first) / max(t_done - t_first, 1e-3))
        else:
            out[f"{name} drain/s"] = "not drained"
    return out
