"""Inputs of the fleet sizing (docs/fleet.md) that no other benchmark measures.

1. MQTT payload bytes by layout, for Modbus-shaped data (float32 values, one message per device and read of
   62 registers-pairs in the device layout, one per value in the tag layout), from the sink's own encoder.
2. Spool bytes on disk per sample while the uplink is down (10 devices x 1,000 float tags at 1 s, the file's
   growth over the outage divided by the samples it took).
3. What one gateway delivers into a 3-node nats-server cluster (MQTT 3.1.1, QoS 1, device layout): D
   devices x 62 tags every second, for D in ``--devices``; delivered messages/s, backlog growth and the
   gateway's CPU (this process: the gateway runs in it).

    python bench/scripts/fleet_sizing.py [--devices 250,1000,2000] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import struct
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

TAGS_PER_READ = 62  # float32 values in one Modbus read of 125 registers (124 used)


def f32(x: float) -> float:
    return float(struct.unpack(">f", struct.pack(">f", x))[0])


def payload_sizes() -> dict[str, float]:
    from connectors.mqtt.payloads import Encoder
    from gateway.config.site import SiteConfig
    from gateway.model import Batch
    from gateway.samples import good

    site = SiteConfig(enterprise="acme", site="plant1", area="production", line="all")
    ts = time.time_ns()
    samples = [good("filler", f"tag_{i:04d}", f32(20 + 10 * math.sin(i)), ts, "degC") for i in range(TAGS_PER_READ)]
    out: dict[str, float] = {}
    for layout, template in (("device", "{enterprise}/{site}/{area}/{source}/{device}"),
                             ("tag", "{enterprise}/{site}/{area}/{source}/{device}/{tag}")):
        for units in (True, False):
            enc = Encoder(template, site, layout=layout, units=units)
            msgs = enc.encode([Batch("line07", samples)])
            payload = sum(len(p) for _, p in msgs)
            topic = sum(len(t) for t, _ in msgs)
            key = f"{layout}{'' if units else '_nounits'}"
            out[f"{key}_messages_per_read"] = len(msgs)
            out[f"{key}_payload_B_per_value"] = round(payload / TAGS_PER_READ, 1)
            out[f"{key}_topic_B_per_value"] = round(topic / TAGS_PER_READ, 1)
            out[f"{key}_payload_B_per_message"] = round(payload / len(msgs), 1)
    return out


def _cpu_seconds(pids: list[int]) -> float:
    """user+sys CPU seconds of other processes (the broker nodes), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


async def _run(cfg: dict[str, object], seconds: float, others: list[int] = ()) -> dict[str, float]:  # type: ignore[assignment]
    from bench.running import start_runtime

    workdir = Path(tempfile.mkdtemp(prefix="fleet-sizing-"))
    cfg = {**cfg, "data_dir": str(workdir / "data"), "http": {"enabled": False}, "log": {"level": "warning"}}
    path = workdir / "gw.yaml"
    path.write_text(yaml.safe_dump(cfg))
    runtime, stop, task = await start_runtime(path)
    await asyncio.sleep(3)  # connected, first scans in
    t0, r0, b0 = time.monotonic(), resource.getrusage(resource.RUSAGE_SELF), _cpu_seconds(list(others))
    in0, out0 = runtime.totals()
    spool0 = _spool_bytes(workdir / "data")
    pend0 = sum(s.pending for s in runtime.sink_states())
    await asyncio.sleep(seconds)
    wall, r1 = time.monotonic() - t0, resource.getrusage(resource.RUSAGE_SELF)
    broker = (_cpu_seconds(list(others)) - b0) / wall
    in1, out1 = runtime.totals()
    spool1 = _spool_bytes(workdir / "data")
    pend1 = sum(s.pending for s in runtime.sink_states())
    stop.set()
    await task
    cpu = (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) / wall
    return {"in_per_s": (in1 - in0) / wall, "delivered_per_s": (out1 - out0) / wall, "cpu_pct": 100 * cpu,
            "backlog_growth_per_s": (pend1 - pend0) / wall, "spool_bytes_growth": spool1 - spool0,
            "samples_in": in1 - in0, "others_cpu_pct": 100 * broker}


def _spool_bytes(data: Path) -> int:
    return sum(p.stat().st_size for p in data.glob("spool.db*") if p.is_file())


def synthetic(devices: int, tags: int) -> dict[str, object]:
    return {"type": "synthetic", "interval": "1s", "devices": {
        f"d{d:04d}": {"tags": [{"name": f"tag_{i:04d}", "signal": "sine", "unit": "degC", "period": "60s",
                                "phase": (d * 7 + i) % 360} for i in range(tags)]} for d in range(devices)}}


async def spool_per_sample(seconds: float) -> dict[str, float]:
    from bench.servers import free_port

    cfg = {"sources": {"line": synthetic(10, 1000)},
           "sinks": {"down": {"type": "mqtt", "port": free_port(), "protocol": "3.1.1"}}}
    got = await _run(cfg, seconds)
    return {"spool_B_per_sample": round(got["spool_bytes_growth"] / got["samples_in"], 1),
            "samples_per_s": round(got["in_per_s"])}


async def nats_throughput(devices: list[int], seconds: float) -> list[dict[str, float]]:
    from bench.servers import nats_cluster

    rows = []
    with nats_cluster(Path(tempfile.mkdtemp(prefix="fleet-nats-"))) as cluster:
        for d in devices:
            cfg = {"sources": {"line": synthetic(d, TAGS_PER_READ)},
                   "sinks": {"cluster": {"type": "mqtt", "hosts": cluster.hosts, "protocol": "3.1.1",
                                         "client_id": f"sizing-{d}", "topic": "sz/{device}"}}}
            got = await _run(cfg, seconds, [n.proc.pid for n in cluster.nodes if n.proc is not None])
            rows.append({"offered_msgs_per_s": d, "delivered_msgs_per_s": round(got["delivered_per_s"] / TAGS_PER_READ),
                         "delivered_values_per_s": round(got["delivered_per_s"]),
                         "backlog_growth_values_per_s": round(got["backlog_growth_per_s"]),
                         "gateway_cpu_pct": round(got["cpu_pct"], 1),
                         "cluster_cpu_pct": round(got["others_cpu_pct"], 1)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", default="250,1000,2000")
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    os.environ.setdefault("EDGEGW_LOG__LEVEL", "warning")
    print(json.dumps(payload_sizes()), flush=True)
    print(json.dumps(asyncio.run(spool_per_sample(args.seconds))), flush=True)
    asyncio.run(nats_throughput([int(d) for d in args.devices.split(",")], args.seconds))


if __name__ == "__main__":
    main()
