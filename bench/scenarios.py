"""Engine benchmark scenarios. Each runs inside the harness's child process and returns a BenchResult.

Targets (issue "engine core"), on one core: 200,000 samples/s appended to the spool, 200,000 samples/s
drained from it to a sink, and 100,000 samples/s in and out at once from the synthetic source through
processing. The end-to-end scenarios (simulators, MQTT, the time-series store) live in ``bench.e2e``.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.result import BenchResult, ProcessMeter


def _lazy(module: str, function: str) -> Callable[[dict[str, Any]], BenchResult]:
    """A scenario whose code lives with its connector, imported only when that scenario runs."""

    def run(params: dict[str, Any]) -> BenchResult:
        result: BenchResult = getattr(importlib.import_module(module), function)(params)
        return result

    return run


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    run: Callable[[dict[str, Any]], BenchResult]


def _spool(kind: str, target: str) -> Callable[[dict[str, Any]], BenchResult]:
    def run(params: dict[str, Any]) -> BenchResult:
        from bench.spool import run_spool_benchmark

        samples = int(params.get("samples", 2_000_000))
        batch = int(params.get("batch", 1000))
        with tempfile.TemporaryDirectory() as tmp, ProcessMeter() as meter:
            figures = run_spool_benchmark(kind, samples, batch, Path(tmp) / "spool.db")  # type: ignore[arg-type]
        # The spool helper times its own measured window (excluding pre-fill for "drain").
        wall = float(figures.get("seconds", meter.wall_s))
        n_in = int(figures.get("appended", 0))
        n_out = int(figures.get("drained", 0))
        return BenchResult(
            scenario=f"spool-{kind}", wall_s=wall,
            cpu_s=min(meter.cpu_s, float(figures.get("cpu_seconds", meter.cpu_s))),
            samples_in=n_in, samples_out=n_out, peak_rss_mib=meter.peak_rss_mib, target=target,
            notes={"batch": batch, "samples": samples},
        )

    return run


def _pipeline_config(tmp: Path, devices: int, tags: int, interval_s: float, sink: str) -> Path:
    """Synthetic source (devices x tags every interval) -> one sink, written as a real config file."""
    signals = ["sine", "ramp", "random_walk", "counter", "square"]
    source = {
        "type": "synthetic",
        "interval": f"{interval_s * 1000:g}ms",
        "seed": 7,
        "devices": {
            f"machine_{d}": {
                "tags": [
                    {"name": f"t{t}", "signal": signals[t % len(signals)], "unit": "u",
                     **({"scale": 0.1, "offset": 1.0} if t % 2 else {})}
                    for t in range(tags)
                ]
            }
            for d in range(devices)
        },
    }
    sink_cfg: dict[str, Any] = {"type": sink, "batch_max_samples": 20000}
    cfg = {
        "data_dir": str(tmp / "data"),
        "log": {"level": "warning", "format": "json"},
        "sources": {"bench": source},
        "sinks": {"out": sink_cfg},
    }
    path = tmp / "bench.yaml"
    # JSON is YAML too, and writing it costs the measured process next to nothing (PyYAML's dumper would
    # dominate its peak RSS with 10,000 tags).
    path.write_text(json.dumps(cfg))
    return path


def _pipeline(sink: str, target: str) -> Callable[[dict[str, Any]], BenchResult]:
    def run(params: dict[str, Any]) -> BenchResult:
        rate = int(params.get("rate", 100_000))
        duration = float(params.get("duration", 10.0))
        devices, interval = 10, 0.1
        tags = max(1, rate // devices // int(1 / interval))
        with tempfile.TemporaryDirectory() as tmp:
            path = _pipeline_config(Path(tmp), devices, tags, interval, sink)
            return asyncio.run(_measure_runtime(path, duration, target, f"pipeline-{sink}",
                                                {"offered/s": devices * tags * int(1 / interval)}))

    return run


async def _measure_runtime(path: Path, duration: float, target: str, name: str,
                           notes: dict[str, float | int | str]) -> BenchResult:
    from bench.running import start_runtime

    runtime, stop, task = await start_runtime(path)
    await asyncio.sleep(2.0)  # warm-up: connections, first ticks, caches
    in0 = sum(p.samples_in for p in runtime.pipelines.values())
    out0 = sum(d.delivered for d in runtime.deliveries.values())
    with ProcessMeter() as meter:
        await asyncio.sleep(duration)
        in1 = sum(p.samples_in for p in runtime.pipelines.values())
        out1 = sum(d.delivered for d in runtime.deliveries.values())
    backlog = sum(s.pending for s in runtime.sink_states())
    t0 = time.monotonic()
    stop.set()
    await task
    notes = {**notes, "backlog_at_end": backlog, "stop_s": round(time.monotonic() - t0, 2)}
    return BenchResult(scenario=name, wall_s=meter.wall_s, cpu_s=meter.cpu_s, samples_in=in1 - in0,
                       samples_out=out1 - out0, peak_rss_mib=meter.peak_rss_mib, target=target, notes=notes)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("spool-append", "append pre-built batches to the spool, flat out",
                 _spool("append", ">= 200,000 in/s")),
        Scenario("spool-drain", "drain a pre-filled spool through one reader and ack",
                 _spool("drain", ">= 200,000 out/s")),
        Scenario("spool-both", "append and drain at the same time", _spool("both", ">= 100,000 in and out/s")),
        Scenario("pipeline", "synthetic source -> processing -> spool -> discard sink, at --rate for --duration",
                 _pipeline("discard", ">= 100,000 in and out/s, < 100% CPU")),
        Scenario("pipeline-store", "synthetic source -> processing -> spool -> embedded sqlite store",
                 _pipeline("sqlite", "informative")),
        Scenario("modbus", "10 simulated devices x 1,000 float32 tags polled every second -> discard sink "
                 "(-p sink=mqtt: mosquitto, QoS 1, one message per device; -p device=loadgen: the load generator; "
                 "-p phase=0s: every source polls on the second)",
                 _lazy("bench.modbus", "run_modbus")),
        Scenario("modbus-ceiling", "the modbus scenario against the load generator (bench.loadgen, -p workers=N) "
                 "with shorter intervals until the gateway falls behind",
                 _lazy("bench.modbus", "run_ceiling")),
        Scenario("opcua", "10,000 OPC-UA monitored items changing every second (simulator process) -> discard sink",
                 _lazy("bench.opcua", "run_opcua")),
        Scenario("footprint", "memory per configured tag (Modbus 1,000 vs 100,000 tags; OPC-UA 1,000 vs 10,000 "
                 "items), 10 x 1,000 Modbus -> MQTT QoS 1 CPU and RSS, the embedded demo's RSS, a 100,000-tag start",
                 _lazy("bench.footprint", "run_footprint")),
        Scenario("startup", "-p devices=100 -p tags=1000 Modbus tags (one source a device, load generator): config "
                 "load, start, first full scan, peak RSS", _lazy("bench.footprint", "run_startup")),
        Scenario("sparkplug", "-p tags=10000 synthetic tags changing every second -> Sparkplug B (DDATA by exception, "
                 "QoS 1) -> mosquitto -> a host process decoding every metric; a broker restart mid-run: metrics/s, "
                 "CPU, drain rate, values lost", _lazy("bench.sparkplug", "run_sparkplug")),
        Scenario("sinks", "synthetic --rate -> spool -> MQTT (per device, QoS 1) + InfluxDB (VictoriaMetrics); "
                 "then a 60 s outage of both uplinks at 10,000/s and the rate the backlog drains",
                 _lazy("bench.sinks", "run_sinks")),
        Scenario("e2e", "-p tags=N (10000) half Modbus, half OPC-UA at 1 s, simulators in their own processes -> "
                 "MQTT + VictoriaMetrics -> a test subscriber: values/s, CPU, RSS, latency p50/p99, loss",
                 _lazy("bench.e2e.scenario", "run_e2e")),
        Scenario("e2e-sweep", "e2e at -p tags=500,2000,10000,50000 (-p duration=20 each); writes -p out=bench/ "
                 "e2e.md, e2e.svg and appends to RESULTS.md", _lazy("bench.e2e.scenario", "run_sweep")),
    )
}
