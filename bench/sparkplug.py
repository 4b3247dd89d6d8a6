"""``edge-gateway bench sparkplug``: a 10,000-tag line published as Sparkplug B to mosquitto, counted by a host in
its own process (``bench.sparkplug_subscriber``), with the broker restarted in the middle.

The line is a synthetic source (``devices`` x ``tags``/``devices`` counters, ramps and sines, all changing every
tick, so report by exception sends every value) read every ``interval``. Phases:

1. steady, ``duration`` s: the metrics the host decoded per second (by their timestamps) and the gateway's CPU;
2. outage: the broker stopped for ``outage`` s while the line goes on (the spool holds it), then started
   again: the time until the first delivery and the rate the backlog drains (births first);
3. zero loss: every sample the source produced with a timestamp in the whole window (phases 1 and 2) is
   looked for at the host, by metric and timestamp, in a DBIRTH or a DDATA.

Parameters (``-p k=v``): tags (10000), devices (10), interval (1 s), duration (20 s), outage (10 s).
mosquitto keeps the host's session across its restart (persistence on), as a plant broker would.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.result import BenchResult, ProcessMeter
from bench.servers import Server, mosquitto


class _Produced:
    """What the host must receive, by timestamp (ms): the samples the source produced whose value differs from
    the one before (report by exception sends nothing else), counted as the gateway's pipeline takes them.
    Nearly every value changes every tick; one that does not (a tick read twice at the same generator time
    after a stall) is not owed."""

    def __init__(self) -> None:
        self.per_ts: Counter[int] = Counter()
        self.unchanged = 0

    def install(self) -> Any:
        from gateway.pipeline import SourcePipeline

        original = SourcePipeline.__call__
        per_ts = self.per_ts
        last: dict[tuple[str, str], Any] = {}
        produced = self

        async def counted(pipeline: SourcePipeline, batch: Any) -> None:
            for s in batch.samples:
                key = (s[0], s[1])
                if last.get(key, last) != s[2]:
                    per_ts[s[5] // 1_000_000] += 1
                else:
                    produced.unchanged += 1
                last[key] = s[2]
            await original(pipeline, batch)

        SourcePipeline.__call__ = counted  # type: ignore[method-assign,assignment]
        return original

    def between(self, t0: int, t1: int) -> dict[int, int]:
        return {ts: n for ts, n in self.per_ts.items() if t0 <= ts < t1}


def _config(tmp: Path, port: int, devices: int, tags: int, interval: float) -> Path:
    kinds: list[dict[str, Any]] = [{"signal": "counter"}, {"signal": "ramp", "period": "37s"},
             {"signal": "sine", "period": "53s", "amplitude": 10}]
    per = max(1, tags // devices)
    source = {"type": "synthetic", "interval": f"{interval * 1000:g}ms", "seed": 7, "devices": {
        f"machine_{d}": {"tags": [{"name": f"t{t}", **kinds[t % 3], "unit": "u"} for t in range(per)]}
        for d in range(devices)}}
    cfg = {"data_dir": str(tmp / "data"), "http": {"enabled": False}, "log": {"level": "warning", "format": "json"},
           "spool": {"max_size": "4GiB"}, "site": {"site": "bench", "line": "line1"},
           "sources": {"line": source},
           "sinks": {"scada": {"type": "sparkplug", "port": port, "reconnect_min": "1s", "reconnect_max": "1s",
                               "retry_max": "1s"}}}
    path = tmp / "bench.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML too
    return path


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _report(sub: subprocess.Popen[str], t0: int, t1: int) -> dict[str, Any]:
    from bench.e2e.scenario import _readline

    assert sub.stdin is not None
    sub.stdin.write(f"report {t0} {t1}\n")
    sub.stdin.flush()
    report: dict[str, Any] = json.loads(_readline(sub.stdout, 120))
    return report


async def _run(path: Path, broker: Server, tags: int, interval: float, duration: float,
               outage: float) -> dict[str, Any]:
    from bench.running import start_runtime

    runtime, stop, task = await start_runtime(path)
    try:
        await asyncio.sleep(3.0)  # connect, births, the first ticks
        t0 = _now_ms()
        with ProcessMeter() as steady:
            await asyncio.sleep(duration)
        t_steady = _now_ms()
        loop = asyncio.get_running_loop()
        delivery = runtime.deliveries["scada"]
        await loop.run_in_executor(None, broker.stop)
        await asyncio.sleep(outage)
        backlog = next(s.pending for s in runtime.sink_states() if s.name == "scada")
        delivered0 = delivery.delivered
        await loop.run_in_executor(None, broker.start)
        up = time.monotonic()
        first: tuple[float, int] | None = None
        drained: tuple[float, int] | None = None
        before = up  # the last look at the sink before its first delivery: the drain is timed from there
        with ProcessMeter() as drain_meter:
            while time.monotonic() - up < max(120.0, 5 * outage):
                await asyncio.sleep(0.005)
                now, n = time.monotonic(), delivery.delivered
                if first is None:
                    if n == delivered0:
                        before = now
                        continue
                    first = (before, delivered0)
                pending = next(s.pending for s in runtime.sink_states() if s.name == "scada")
                if first is not None and pending < tags:
                    drained = (now, n)
                    break
        await asyncio.sleep(2 * interval + 1.0)  # the last ticks reach the host
        t_end = _now_ms() - round(2 * interval * 1000)
    finally:
        stop.set()
        await task
    return {"t0": t0, "t_steady": t_steady, "t_end": t_end, "steady": steady, "drain": drain_meter,
            "backlog": backlog, "first": first, "drained": drained, "up": up}


def run_sparkplug(params: dict[str, Any]) -> BenchResult:
    from bench.e2e.scenario import _readline

    tags = int(params.get("tags", 10_000))
    devices = int(params.get("devices", 10))
    interval = float(params.get("interval", 1.0))
    duration = float(params.get("duration", 20.0))
    outage = float(params.get("outage", 10.0))
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        broker = mosquitto(tmp, f"persistence true\npersistence_location {tmp}/\nmax_queued_messages 0\n"
                                "max_inflight_messages 1000\n")
        broker.start()
        sub = subprocess.Popen([sys.executable, "-m", "bench.sparkplug_subscriber", str(broker.port)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            if _readline(sub.stdout, 20).strip() != "ready":
                raise RuntimeError("the Sparkplug host did not start")
            produced = _Produced()
            original = produced.install()
            try:
                fig = asyncio.run(_run(_config(tmp, broker.port, devices, tags, interval), broker, tags, interval,
                                       duration, outage))
            finally:
                from gateway.pipeline import SourcePipeline

                SourcePipeline.__call__ = original  # type: ignore[method-assign]
            report = _report(sub, fig["t0"], fig["t_end"])
        finally:
            if sub.poll() is None:
                sub.kill()
            broker.stop()
    got = {int(ts): n for ts, n in report["per_ts"].items()}
    expected = produced.between(fig["t0"], fig["t_end"])
    lost = sum(max(0, n - got.get(ts, 0)) for ts, n in expected.items())
    extra = sum(max(0, n - expected.get(ts, 0)) for ts, n in got.items())
    steady_in = sum(n for ts, n in expected.items() if ts < fig["t_steady"])
    steady_out = sum(n for ts, n in got.items() if ts < fig["t_steady"])
    meter: ProcessMeter = fig["steady"]
    notes: dict[str, float | int | str] = {
        "tags": tags, "interval_s": interval, "metrics/s at the host": round(steady_out / meter.wall_s),
        "outage_s": outage, "backlog": fig["backlog"],
        "values in window": sum(expected.values()), "lost": lost, "unexpected": extra,
        "unchanged (not owed)": produced.unchanged,
        "births (node/device)": f"{report['births'].get('NBIRTH', 0)}/{report['births'].get('DBIRTH', 0)}",
        "redelivered": report["redelivered"], "threads %": meter.threads_pct(),
    }
    if fig["first"] is not None and fig["drained"] is not None:
        (t_first, n_first), (t_done, n_done) = fig["first"], fig["drained"]
        notes["first delivery after restart_s"] = round(t_first - fig["up"], 2)
        notes["drain/s"] = round((n_done - n_first) / max(t_done - t_first, 1e-3))
        notes["drain CPU %"] = round(100 * fig["drain"].cpu_s / fig["drain"].wall_s)
    else:
        notes["drain/s"] = "not drained"
    return BenchResult(scenario="sparkplug", wall_s=meter.wall_s, cpu_s=meter.cpu_s, samples_in=steady_in,
                       samples_out=steady_out, peak_rss_mib=meter.peak_rss_mib,
                       target=">= 10,000 metrics/s DDATA on one core; zero loss across a broker restart",
                       notes=notes)
