"""``edge-gateway bench footprint`` and ``startup``: memory per tag, baseline RSS, and a 100,000-tag start.

``footprint`` runs, each in a fresh interpreter so every figure is that process's own:

- the Modbus source at 10 x 100 and 10 x 10,000 float32 tags (load generator, discard sink): the RSS slope
  between them is the memory per configured tag, the smaller run the baseline;
- OPC-UA at 1,000 and 10,000 monitored items changing every second: the slope per monitored item;
- 10 x 1,000 Modbus tags -> MQTT QoS 1 (mosquitto): the issue's baseline workload, CPU and peak RSS;
- the embedded demo (``edge-gateway run``, no config) as its own process: peak RSS after ``demo_s`` seconds;
- ``startup``: DEVICES x TAGS Modbus tags (one source per device) loaded, started, first full scan.
"""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.result import BenchResult
from bench.servers import free_port, stop_processes, wait_port


def _slope(small: BenchResult, large: BenchResult, n_small: int, n_large: int) -> float:
    """Bytes of peak RSS per tag between two runs."""
    return (large.peak_rss_mib - small.peak_rss_mib) * 1024 * 1024 / (n_large - n_small)


def _demo_peak(seconds: float) -> tuple[float, float]:
    """``edge-gateway run`` on its embedded default in a scratch data dir: (peak RSS MiB, CPU %) of the
    gateway process alone (its simulated line runs in a child process of its own)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, EDGEGW_DATA_DIR=tmp, EDGEGW_HTTP__PORT=str(free_port()), EDGEGW_LOG__LEVEL="warning")
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli.main", "run"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            t0 = time.monotonic()
            deadline = t0 + seconds
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise RuntimeError(f"the demo gateway exited ({proc.returncode}): {proc.stderr.read()[-2000:]}"
                                       if proc.stderr else "the demo gateway exited")
                time.sleep(0.5)
            status = Path(f"/proc/{proc.pid}/status").read_text()
            hwm_kib = int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1])
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            wall = time.monotonic() - t0
        finally:
            stop_processes([proc])
    return hwm_kib / 1024, 100 * cpu_s / wall


def run_footprint(params: dict[str, Any]) -> BenchResult:
    from bench.cli import run_in_child

    duration = float(params.get("duration", 5))
    t0 = time.perf_counter()
    mb_small = run_in_child("modbus", {"device": "loadgen", "tags": 100, "duration": duration})
    mb_large = run_in_child("modbus", {"device": "loadgen", "tags": 10_000, "duration": duration})
    ua_small = run_in_child("opcua", {"items": 1000, "duration": duration})
    ua_large = run_in_child("opcua", {"items": 10_000, "duration": duration})
    mqtt = run_in_child("modbus", {"device": "loadgen", "sink": "mqtt", "duration": float(params.get("mqtt_s", 20))})
    demo_rss, demo_cpu = _demo_peak(float(params.get("demo_s", 35)))
    start = run_in_child("startup", {"devices": 100, "tags": 1000})
    per_tag = _slope(mb_small, mb_large, 1_000, 100_000)
    per_item = _slope(ua_small, ua_large, 1_000, 10_000)
    # the row's rates, CPU and RSS are the baseline workload's (10 x 1,000 Modbus -> MQTT); the rest in notes
    return BenchResult(
        scenario="footprint", wall_s=mqtt.wall_s, cpu_s=mqtt.cpu_s, samples_in=mqtt.samples_in,
        samples_out=mqtt.samples_out, peak_rss_mib=mqtt.peak_rss_mib,
        target="<= 1 KB/tag (Modbus, OPC-UA); 10x1,000 Modbus->MQTT <= 60 MB and <= 12% of a core; demo <= 80 MB; "
               "100,000 tags started <= 10 s at <= 150 MB",
        notes={
            "modbus_1k_MiB": round(mb_small.peak_rss_mib), "modbus_100k_MiB": round(mb_large.peak_rss_mib),
            "modbus_B/tag": round(per_tag),
            "opcua_1k_MiB": round(ua_small.peak_rss_mib), "opcua_10k_MiB": round(ua_large.peak_rss_mib),
            "opcua_B/item": round(per_item),
            "mqtt_10x1000_CPU_%": round(mqtt.cpu_pct, 1), "mqtt_10x1000_MiB": round(mqtt.peak_rss_mib, 1),
            "mqtt_values/s": round(mqtt.out_rate),
            "demo_MiB": round(demo_rss, 1), "demo_CPU_%": round(demo_cpu, 1),
            **{f"100k_{k}": v for k, v in start.notes.items()}, "100k_MiB": round(start.peak_rss_mib),
            "footprint_wall_s": round(time.perf_counter() - t0),
        },
    )


async def _startup(cfg_path: Path, expected: int, t0: float) -> dict[str, float]:
    from gateway.config.loader import load_config
    from gateway.logs import configure_logging
    from gateway.runtime import Runtime

    cfg = load_config(cfg_path)
    loaded = time.monotonic()
    configure_logging("warning", "json")
    runtime = Runtime(cfg)
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    await runtime.started.wait()
    started = time.monotonic()
    # a poll of the pipelines' counters: there is no event to wait on
    while sum(p.samples_in for p in runtime.pipelines.values()) < expected:
        if time.monotonic() - t0 > 120:
            raise RuntimeError("the first full scan took over 120 s")
        await asyncio.sleep(0.05)
    scanned = time.monotonic()
    await asyncio.sleep(5)  # a few cycles of steady polling count in the peak too
    stop.set()
    await task
    return {"load_s": round(loaded - t0, 2), "started_s": round(started - t0, 2),
            "first_scan_s": round(scanned - t0, 2)}


def run_startup(params: dict[str, Any]) -> BenchResult:
    """The clock starts before the config is read (``gateway.runtime`` is already imported by the worker)."""
    from bench.loadgen import start as start_loadgen
    from bench.modbus import _write_files

    devices, tags = int(params.get("devices", 100)), int(params.get("tags", 1000))
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        _, cfg_path = _write_files(Path(tmp), port, devices, tags, 1.0)  # one source a device
        procs = start_loadgen(port, devices, tags)
        try:
            wait_port(port)
            t0 = time.monotonic()
            figures = asyncio.run(_startup(cfg_path, devices * tags, t0))
        finally:
            stop_processes(procs)
    return BenchResult(
        scenario="startup", wall_s=figures["first_scan_s"], cpu_s=0.0, samples_in=0, samples_out=0,
        peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        target="100 x 1,000 tags loaded, validated and started <= 10 s, <= 150 MB",
        notes={"tags": devices * tags, **figures},
    )
