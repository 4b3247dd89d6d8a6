"""``edge-gateway bench opcua``: 10,000 monitored items changing once per second, the server in its own process.

The simulators (``edge-gateway simulate opcua``) serve 20 machines x 500 Double variables, each a random
walk rewritten every second, so every item changes once per second. The gateway runs in this process:
one OPC-UA device per server (one session, one subscription, publishing every second) into the
``discard`` sink. Reported: notifications/s, CPU of one core and peak RSS of the gateway process, and
the gateway-added latency per sample, from the moment its notification reached the source (the decoded
PublishResponse, stamped as ``gateway_ts``) to its hand-off to the spool (``Spool.append``), p50/p99.
The simulators' CPU is reported beside the gateway's: one asyncua server process tops out near 7,000
changing values/s (it encodes in pure Python), so the 10,000 items are split over two server processes
(``servers`` parameter), one device/session each; the gateway side is unchanged by the split.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path
from typing import Any

from bench.result import BenchResult, ProcessMeter
from bench.servers import cpu_of as _cpu_of
from bench.servers import free_port as _free_port
from bench.servers import stop_processes

NS = "urn:edge-gateway:bench"


def _files(tmp: Path, ports: list[int], machines: int, per_machine: int, publishing: float) -> tuple[list[Path], Path]:
    """One simulator description per server (machines split evenly), and the gateway config: one device each."""
    per_server = machines // len(ports)
    sim_paths: list[Path] = []
    devices: dict[str, Any] = {}
    for k, port in enumerate(ports):
        ms = range(k * per_server, (k + 1) * per_server)
        sim = {"seed": 1, "namespace": NS, "update_interval": "1s", "devices": {
            f"m{m}": {"variables": [{"name": f"v{i}", "type": "Double", "signal": "random_walk", "low": 0,
                                     "high": 100, "step": 1} for i in range(per_machine)]}
            for m in ms}}
        path = tmp / f"sim{k}.json"
        path.write_text(json.dumps(sim))
        sim_paths.append(path)
        devices[f"plant_{k}"] = {
            "endpoint": f"opc.tcp://127.0.0.1:{port}/sim", "publishing_interval": f"{publishing * 1000:g}ms",
            # queue_size 10: a change is never folded into the next one when the simulator's 1 s tick and
            # the publishing timer drift past each other
            "sampling_interval": "1s", "queue_size": 10, "timeout": "30s", "watchdog": "60s",
            "tags": [{"name": f"m{m}.v{i}", "node": f"nsu={NS};s=m{m}.v{i}"} for m in ms for i in range(per_machine)],
        }
    cfg = {"data_dir": str(tmp / "data"), "http": {"enabled": False}, "log": {"level": "warning", "format": "json"},
           "sources": {"ua": {"type": "opcua", "queue_max": 1000, "devices": devices}},
           "sinks": {"out": {"type": "discard", "batch_max_samples": 20000}}}
    cfg_path = tmp / "gateway.json"
    cfg_path.write_text(json.dumps(cfg))  # JSON is YAML; cheaper for the measured process than PyYAML dumping
    return sim_paths, cfg_path


def _percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))] / 1e6


async def _measure(cfg_path: Path, sim_pids: list[int], duration: float, expected: int) -> dict[str, Any]:
    from bench.running import start_runtime
    from connectors.opcua.source import OpcUaSource
    from gateway.model import Batch
    from gateway.spool import Spool

    latencies = array("q")  # 8 bytes a sample in the measured process, not a boxed int each (~36 B)
    recording = False
    original = Spool.append

    async def timed_append(self: Spool, batch: Batch) -> None:
        if recording:
            now = time.time_ns()
            latencies.extend([now - s[6] for s in batch.samples])
        await original(self, batch)

    Spool.append = timed_append  # type: ignore[method-assign]
    try:
        runtime, stop, task = await start_runtime(cfg_path)
        t0 = time.monotonic()
        # warm-up: connect, 10,000 monitored items created, the first full publish delivered
        while sum(p.samples_in for p in runtime.pipelines.values()) < 2 * expected:
            if time.monotonic() - t0 > 120:
                raise RuntimeError("the OPC-UA source did not deliver two rounds of values within 120 s")
            await asyncio.sleep(0.2)
        setup_s = time.monotonic() - t0
        source = next(s for s in runtime.sources.values() if isinstance(s, OpcUaSource))
        devs = list(source.devices.values())
        n0 = sum(d.notifications for d in devs)
        in0 = sum(p.samples_in for p in runtime.pipelines.values())
        sim0 = [_cpu_of(p) for p in sim_pids]
        recording = True
        with ProcessMeter() as meter:
            await asyncio.sleep(duration)
        recording = False
        n1 = sum(d.notifications for d in devs)
        in1 = sum(p.samples_in for p in runtime.pipelines.values())
        sim_cpu = max(_cpu_of(p) - c for p, c in zip(sim_pids, sim0, strict=True))
        out = sum(d.delivered for d in runtime.deliveries.values())
        stop.set()
        await task
    finally:
        Spool.append = original  # type: ignore[method-assign]
    ordered = sorted(latencies)
    return {"meter": meter, "notifications": n1 - n0, "samples_in": in1 - in0, "delivered": out,
            "p50_ms": _percentile(ordered, 0.50), "p99_ms": _percentile(ordered, 0.99),
            "max_ms": _percentile(ordered, 1.0), "sim_cpu_pct": 100 * sim_cpu / meter.wall_s,
            "setup_s": setup_s, "dropped": source.dropped, "sessions": sum(d.sessions_opened for d in devs)}


def run_opcua(params: dict[str, Any]) -> BenchResult:
    items = int(params.get("items", 10_000))
    duration = float(params.get("duration", 20.0))
    publishing = float(params.get("publishing", 1.0))
    per_machine = 500
    machines = max(1, items // per_machine)
    items = machines * per_machine
    servers = int(params.get("servers", 2))
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        ports = [_free_port() for _ in range(servers)]
        sim_paths, cfg_path = _files(tmp, ports, machines, per_machine, publishing)
        sims = [subprocess.Popen(
            [sys.executable, "-m", "gateway.cli.main", "simulate", "opcua", str(path), "--port", str(port),
             "--no-stdin"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=tmp,
        ) for path, port in zip(sim_paths, ports, strict=True)]
        try:
            for sim in sims:
                assert sim.stdout is not None
                line = sim.stdout.readline()
                if not line.startswith("ready "):
                    raise RuntimeError(f"OPC-UA simulator did not start: {line!r}")
            fig = asyncio.run(_measure(cfg_path, [s.pid for s in sims], duration, items))
        finally:
            stop_processes(sims)
    meter = fig["meter"]
    return BenchResult(
        scenario="opcua", wall_s=meter.wall_s, cpu_s=meter.cpu_s, samples_in=fig["notifications"],
        samples_out=fig["samples_in"], peak_rss_mib=meter.peak_rss_mib,
        target=">= 10,000 notifications/s at <= 25% of one core; added latency p99 < 50 ms",
        notes={"items": items, "offered/s": items, "latency_p50_ms": round(fig["p50_ms"], 2),
               "latency_p99_ms": round(fig["p99_ms"], 2), "latency_max_ms": round(fig["max_ms"], 2),
               "servers": servers, "busiest_simulator_cpu_%": round(fig["sim_cpu_pct"], 1),
               "setup_s": round(fig["setup_s"], 1),
               "queue_dropped": fig["dropped"], "sessions": fig["sessions"]},
    )
