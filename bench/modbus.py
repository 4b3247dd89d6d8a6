"""``edge-gateway bench modbus`` / ``modbus-ceiling``: the Modbus source against the simulator in its own process.

Ten simulated devices (units 1..10 on one simulator process, one TCP connection each, i.e. ten sources)
with 1,000 float32 tags each, polled into the ``discard`` sink. ``modbus`` runs the issue's load
(every second); ``modbus-ceiling`` shortens the interval step by step until the gateway falls behind
(ticks skipped, or under 95 % of the offered values delivered) and reports the last rate it held. Each
step's gateway and device CPU are in the notes: requests on one connection are serialised, so a device that
answers slowly makes the polls overrun before the gateway's CPU is the limit. ``modbus`` runs against the
pymodbus line simulator by default (``-p device=loadgen`` for the load generator); ``modbus-ceiling`` runs
against ``bench.loadgen`` (``-p workers=N`` processes), which is not the bottleneck.

``-p phase=0s`` sets every source's ``phase`` (polls aligned on the wall clock) instead of the default spread.
With ``-p sink=mqtt`` (a mosquitto of its own, QoS 1, one message per device and timestamp) the test
subscriber (``bench.subscriber``, its own process) times every value of the measured window from its
payload timestamp to its arrival: the gateway-added latency (p50/p99/max). Both scenarios report the
gateway's stage histogram (``gateway.stages``: read -> emit -> committed -> handed to the sink ->
published -> acknowledged) over the window as p50/p99 per stage.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.result import BenchResult, ProcessMeter
from bench.servers import cpu_of as _cpu_of
from bench.servers import free_port as _free_port
from bench.servers import stop_processes, wait_port


def _write_files(tmp: Path, port: int, devices: int, tags: int, interval: float,
                 mqtt_port: int | None = None, phase: str | None = None) -> tuple[Path, Path]:
    sim = {"seed": 1, "devices": {
        f"dev_{d}": {"unit": d + 1, "tags": [
            {"name": f"t{t}", "address": 2 * t, "type": "float32", "signal": "sine", "period": 60,
             "amplitude": 10, "phase": t % 360} for t in range(tags)]}
        for d in range(devices)}}
    sim_path = tmp / "sim.json"
    sim_path.write_text(json.dumps(sim))
    sources = {
        f"plc_{d}": {"type": "modbus", "host": "127.0.0.1", "port": port, "interval": f"{interval * 1000:g}ms",
                     "timeout": "2s", **({"phase": phase} if phase is not None else {}),
                     "devices": {f"dev_{d}": {"unit": d + 1, "tags": [
                         {"name": f"t{t}", "address": 2 * t, "type": "float32"} for t in range(tags)]}}}
        for d in range(devices)}
    # the workload publishes per device to a broker at QoS 1; without one, a discard sink
    sink: dict[str, Any] = {"type": "discard", "batch_max_samples": 20000}
    if mqtt_port:
        sink = {**sink, "type": "mqtt", "host": "127.0.0.1", "port": mqtt_port, "qos": 1, "layout": "device"}
    cfg = {"data_dir": str(tmp / "data"), "http": {"enabled": False}, "log": {"level": "warning", "format": "json"},
           "sources": sources, "sinks": {"out": sink}}
    cfg_path = tmp / "gateway.json"
    cfg_path.write_text(json.dumps(cfg))  # JSON is YAML; cheaper for the measured process than PyYAML dumping
    return sim_path, cfg_path


async def _measure(cfg_path: Path, sim_pids: list[int], duration: float,
                   sub: subprocess.Popen[str] | None = None) -> dict[str, Any]:
    from bench import stages
    from connectors.modbus.source import ModbusSource
    from gateway.config.loader import load_config
    from gateway.logs import configure_logging
    from gateway.runtime import Runtime

    cfg = load_config(cfg_path)
    configure_logging(cfg.log.level, cfg.log.format)
    runtime = Runtime(cfg)
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    started = asyncio.create_task(runtime.started.wait())
    await asyncio.wait([task, started], return_when=asyncio.FIRST_COMPLETED)
    if task.done():  # the runtime failed to start: report it rather than wait forever
        started.cancel()
        task.result()
        raise RuntimeError("the gateway stopped before it started")
    await asyncio.sleep(3.0)  # connect, first polls, caches

    def counters() -> tuple[int, int, int, int]:
        srcs = [s for s in runtime.sources.values() if isinstance(s, ModbusSource)]
        return (sum(p.samples_in for p in runtime.pipelines.values()),
                sum(d.delivered for d in runtime.deliveries.values()),
                sum(s.requests for s in srcs), sum(s.skipped_ticks for s in srcs))

    t0_ms = time.time_ns() // 1_000_000 + 1
    if sub is not None:  # count what is read from now on (its payload timestamp is the read's)
        assert sub.stdin is not None
        sub.stdin.write(f"window {t0_ms} {t0_ms + round(duration * 1000)}\n")
        sub.stdin.flush()
        await asyncio.sleep(t0_ms / 1000 - time.time())
    c0, sim0 = counters(), sum(_cpu_of(pid) for pid in sim_pids)
    h0 = stages.snapshot(runtime.metrics.registry)
    with ProcessMeter() as meter:
        await asyncio.sleep(duration)
        c1 = counters()
    sim_cpu = sum(_cpu_of(pid) for pid in sim_pids) - sim0
    report = None
    if sub is not None:
        await asyncio.sleep(1.5)  # the window's last values reach the subscriber
        report = await asyncio.get_running_loop().run_in_executor(None, _report, sub)
    stage_hist = stages.since(stages.snapshot(runtime.metrics.registry), h0)
    stop.set()
    try:
        await asyncio.wait_for(task, 60)
    except TimeoutError:
        stuck = [t.get_name() for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        raise RuntimeError(f"the gateway did not stop within 60 s; pending tasks: {stuck}") from None
    return {"meter": meter, "in": c1[0] - c0[0], "out": c1[1] - c0[1], "requests": c1[2] - c0[2],
            "skipped": c1[3] - c0[3], "sim_cpu_pct": round(100 * sim_cpu / meter.wall_s), "report": report,
            "stages": stages.summary(stage_hist)}


def _report(sub: subprocess.Popen[str]) -> dict[str, Any]:
    from bench.e2e.scenario import _readline

    assert sub.stdin is not None
    sub.stdin.write("report\n")
    sub.stdin.flush()
    report: dict[str, Any] = json.loads(_readline(sub.stdout, 60))
    return report


def _latency_notes(report: dict[str, Any] | None) -> dict[str, float | int | str]:
    """Payload timestamp -> arrival at the subscriber, over the window's values."""
    if report is None:
        return {}
    from bench.e2e.scenario import percentile

    hist = Counter({int(b): int(n) for b, n in report["latency"]["modbus"]})
    return {"latency_p50_ms": round(percentile(hist, 0.5), 1), "latency_p99_ms": round(percentile(hist, 0.99), 1),
            "latency_max_ms": round(percentile(hist, 1.0), 1), "values_timed": sum(hist.values()),
            "duplicates": report["duplicates"]}


def _one_run(devices: int, tags: int, interval: float, duration: float, device: str = "simulator",
             workers: int = 1, sink: str = "discard", phase: str | None = None) -> dict[str, Any]:
    """One measured run against ``device``: ``simulator`` (the pymodbus line simulator, values per tag) or
    ``loadgen`` (``bench.loadgen``: precomputed blocks, ``workers`` processes sharing the port), into
    ``sink``: ``discard``, or ``mqtt`` (a mosquitto started for the run, QoS 1, one message per device)."""
    from bench.e2e.scenario import _BROKER_CONF, _start_subscriber
    from bench.loadgen import start as start_loadgen
    from bench.servers import mosquitto
    from simulators.modbus.process import start_subprocess

    with tempfile.TemporaryDirectory() as tmp_name, contextlib.ExitStack() as stack:
        tmp = Path(tmp_name)
        port = _free_port()
        broker = sub = None
        if sink == "mqtt":
            broker = mosquitto(tmp, _BROKER_CONF)
            broker.start()
            stack.callback(broker.stop)
            sub = _start_subscriber(broker.port)
            stack.callback(stop_processes, [sub])
        elif sink != "discard":
            raise ValueError(f"sink must be discard or mqtt, not {sink!r}")
        sim_path, cfg_path = _write_files(tmp, port, devices, tags, interval, broker.port if broker else None, phase)
        if device == "loadgen":
            procs = start_loadgen(port, devices, tags, period=1.0, workers=workers)
        elif device == "simulator":
            procs = [start_subprocess(sim_path, port=port)]
        else:
            raise ValueError(f"device must be simulator or loadgen, not {device!r}")
        try:
            wait_port(port, timeout=30.0)
            result = asyncio.run(_measure(cfg_path, [p.pid for p in procs], duration, sub))
        finally:
            stop_processes(procs)
    result["offered"] = devices * tags / interval
    return result


def run_modbus(params: dict[str, Any]) -> BenchResult:
    devices, tags = int(params.get("devices", 10)), int(params.get("tags", 1000))
    interval, duration = float(params.get("interval", 1.0)), float(params.get("duration", 10.0))
    device, sink = str(params.get("device", "simulator")), str(params.get("sink", "discard"))
    phase = str(params["phase"]) if "phase" in params else None
    r = _one_run(devices, tags, interval, duration, device, int(params.get("workers", 1)), sink, phase)
    m = r["meter"]
    return BenchResult(
        scenario="modbus", wall_s=m.wall_s, cpu_s=m.cpu_s, samples_in=r["in"], samples_out=r["out"],
        peak_rss_mib=m.peak_rss_mib, target="10,000 values/s at <= 5% of one core, <= 60 MB RSS, 17 req/device/cycle; "
        "mqtt: latency p50 <= 10 ms, p99 <= 50 ms",
        notes={"offered/s": int(r["offered"]), "requests/s": round(r["requests"] / m.wall_s),
               "requests/device/cycle": round(r["requests"] / m.wall_s * interval / devices, 1),
               "skipped_ticks": r["skipped"], "device": device, "device_cpu_%": r["sim_cpu_pct"], "sink": sink,
               **_latency_notes(r["report"]), "stages p50/p99": r["stages"], "threads CPU %": m.threads_pct()},
    )


def run_ceiling(params: dict[str, Any]) -> BenchResult:
    devices, tags = int(params.get("devices", 10)), int(params.get("tags", 1000))
    duration = float(params.get("duration", 5.0))
    device, workers = str(params.get("device", "loadgen")), int(params.get("workers", 1))
    best: dict[str, Any] | None = None
    steps: list[str] = []
    interval = float(params.get("interval", 0.5))
    while interval >= 0.01:
        r = _one_run(devices, tags, interval, duration, device, workers)
        rate = r["out"] / r["meter"].wall_s
        held = r["skipped"] == 0 and rate >= 0.95 * r["offered"]
        gw_cpu = 100 * r["meter"].cpu_s / r["meter"].wall_s
        steps.append(f"{r['offered']:.0f}->{rate:.0f} (gw {gw_cpu:.0f}%, device {r['sim_cpu_pct']}%"
                     f"{', behind' if not held else ''})")
        if not held:
            break
        best = r
        interval /= 1.5
    final = best or r
    m = final["meter"]
    return BenchResult(
        scenario="modbus-ceiling", wall_s=m.wall_s, cpu_s=m.cpu_s, samples_in=final["in"], samples_out=final["out"],
        peak_rss_mib=m.peak_rss_mib, target=">= 150,000 values/s on one core",
        notes={"steps offered->delivered/s": "; ".join(steps), "requests/s": round(final["requests"] / m.wall_s),
               "device": f"{device} x{workers}", "device_cpu_%": final["sim_cpu_pct"]},
    )
