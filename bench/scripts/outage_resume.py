"""(A script run from a checkout, not part of the installed harness: it uses the tests' helpers.)

How much of an uplink outage reaches the broker after it, with a spool too small to hold it all.

A gateway (its own process) collects 10,000 samples/s (100 tags every 10 ms) and publishes them to a real
mosquitto at QoS 1 through a spool sized for about 16 s of data (``overflow: drop_oldest``). The broker
is stopped for ``--outage`` seconds (60) and restarted; a subscriber with a persistent session counts,
per sample, what arrives. The figure: samples stamped during the outage that reached the subscriber,
and how long after the broker came back the first of them arrived.

    python bench/scripts/outage_resume.py [--outage 60] [--gateway-root DIR]

``--gateway-root`` runs another checkout's gateway (e.g. a ``git worktree`` of an older commit) with this
venv, for a before/after comparison.
"""

from __future__ import annotations

import argparse
import calendar
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.mqtt_subscriber import Subscriber  # noqa: E402
from tests.servers import free_port, mosquitto  # noqa: E402

TAGS = 100
INTERVAL_MS = 10
RATE = TAGS * 1000 // INTERVAL_MS


def iso_s(ts: str) -> float:
    return calendar.timegm(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S")) + int(ts[20:23]) / 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--outage", type=float, default=60.0)
    ap.add_argument("--spool-seconds", type=float, default=16.0)
    ap.add_argument("--gateway-root", type=Path, default=ROOT)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="outage-resume-"))
    port = free_port()
    arrivals: list[tuple[float, float, int]] = []  # (arrival time, sample time, samples)
    lock = threading.Lock()
    with mosquitto(work / "broker", port=port) as broker:
        spool_bytes = int(RATE * args.spool_seconds * spooled_bytes_per_sample())
        cfg = work / "gw.yaml"
        cfg.write_text(yaml.safe_dump({
            "data_dir": str(work / "data"), "http": {"enabled": False}, "log": {"level": "info"},
            "spool": {"max_size": spool_bytes, "overflow": "drop_oldest"},
            "sources": {"line": {"type": "synthetic", "interval": f"{INTERVAL_MS}ms", "devices": {
                "m1": {"tags": [{"name": f"t{i}", "signal": "sine"} for i in range(TAGS)]}}}},
            "sinks": {"plant": {"type": "mqtt", "port": broker.port, "qos": 1}},
        }))
        with Subscriber(broker.port, ["#"], client_id="outage-counter") as sub:
            orig = sub._on_message

            def count(client: object, ud: object, msg: object) -> None:
                try:
                    body = json.loads(msg.payload)  # type: ignore[attr-defined]
                except ValueError:
                    return
                if isinstance(body, dict) and "values" in body:
                    with lock:
                        arrivals.append((time.time(), iso_s(body["ts"]), len(body["values"])))

            sub.client.on_message = count
            del orig
            env = dict(os.environ, PYTHONPATH=str(args.gateway_root))
            gw = subprocess.Popen([sys.executable, "-m", "gateway.cli.main", "run", "-c", str(cfg)],
                                  cwd=args.gateway_root, env=env, stdout=subprocess.DEVNULL,
                                  stderr=(work / "gateway.log").open("w"))
            try:
                time.sleep(10)
                down_at = time.time()
                broker_proc_stop(broker)
                time.sleep(args.outage)
                up_at = time.time()
                with mosquitto(work / "broker", port=port):
                    time.sleep(args.outage)  # time enough to drain what is left
                    with lock:
                        got = [a for a in arrivals if down_at <= a[1] < up_at]
                    outage_samples = sum(n for *_, n in got)
                    first = min((a[0] for a in got), default=None)
                    print(json.dumps({
                        "gateway": str(args.gateway_root), "rate": RATE, "outage_s": args.outage,
                        "spool_s": args.spool_seconds, "produced_during_outage": int(RATE * (up_at - down_at)),
                        "arrived_from_outage": outage_samples,
                        "first_outage_sample_after_up_s": round(first - up_at, 2) if first else None,
                    }))
            finally:
                gw.terminate()
                gw.wait(10)


def spooled_bytes_per_sample() -> float:
    """What one of this workload's samples takes in the spool (one batch of TAGS float tags)."""
    import math

    from gateway.samples import good
    from gateway.spool_codec import encode

    ts = time.time_ns()
    return len(encode([good("m1", f"t{i}", math.sin(i + 0.5), ts, None) for i in range(TAGS)])) / TAGS


def broker_proc_stop(broker: object) -> None:
    """Stop the mosquitto the context manager started (find it by its config file)."""
    subprocess.run(["pkill", "-f", f"mosquitto -c {broker.data_dir}/mosquitto.conf"], check=False)  # type: ignore[attr-defined]
    time.sleep(0.5)


if __name__ == "__main__":
    main()
