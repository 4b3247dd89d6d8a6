"""Zero loss across an uplink outage: mosquitto and VictoriaMetrics stopped for 10 s and restarted while
the gateway collects, once with the gateway running through it and once killed by SIGKILL mid-outage.

The gateway also writes the embedded SQLite store, which never goes down: it is the record of what was
collected. Every (device, tag, timestamp) in it must reach the MQTT subscriber (persistent session) and
VictoriaMetrics, and on MQTT each tag's values arrive in order (at-least-once: a message re-sent after
an outage may repeat, so order is checked on first arrivals).
"""

from __future__ import annotations

import calendar
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.mqtt_subscriber import Subscriber
from tests.servers import free_port, mosquitto, victoria_metrics
from tests.waiting import poll

OUTAGE_S = 10.0


def start_gateway(config: Path) -> subprocess.Popen[str]:
    log = (config.parent / "gateway.log").open("a")  # a file: an unread pipe would block the gateway
    return subprocess.Popen([sys.executable, "-m", "gateway.cli.main", "run", "-c", str(config)],
                            stdout=subprocess.DEVNULL, stderr=log, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))


def sink_gauges(http_port: int) -> dict[str, float]:
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=2).read().decode()
    except OSError:
        return {}
    return {s.labels["sink"]: s.value for fam in text_string_to_metric_families(body) for s in fam.samples
            if s.name == "edgegw_sink_pending_samples"}


def iso_ms(ts: str) -> int:
    secs = calendar.timegm(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S"))
    return secs * 1000 + int(ts[20:23])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kill", [False, True], ids=["running", "sigkill"])
def test_broker_and_store_outage_loses_nothing(tmp_path: Path, kill: bool) -> None:
    mq_dir, vm_dir, data = tmp_path / "mosquitto", tmp_path / "vm", tmp_path / "data"
    http_port = free_port()
    with contextlib.ExitStack() as outer:
        broker_cm = mosquitto(mq_dir)
        vm_cm = victoria_metrics(vm_dir)
        broker, vm = broker_cm.__enter__(), vm_cm.__enter__()
        servers_up = True
        config = tmp_path / "gateway.yaml"
        config.write_text(yaml.safe_dump({
            "data_dir": str(data),
            "http": {"port": http_port},
            "log": {"format": "json"},
            "sources": {"line": {"type": "synthetic", "interval": "20ms", "devices": {
                "m1": {"tags": [{"name": "c", "signal": "counter"}, {"name": "s", "signal": "sine"}]},
                "m2": {"tags": [{"name": "c", "signal": "counter"}]},
            }}},
            "sinks": {
                "store": {"type": "sqlite"},
                "cloud": {"type": "mqtt", "port": broker.port, "reconnect_min": "1s", "reconnect_max": "1s",
                          "retry_max": "1s", "ack_timeout": "5s"},
                "tsdb": {"type": "influxdb", "url": vm.url, "measurement": "outage", "retry_max": "1s"},
            },
        }))
        sub = outer.enter_context(Subscriber(broker.port, ["acme/#"], client_id=f"outage-{kill}"))
        proc = start_gateway(config)
        try:
            poll(lambda: len(sub.snapshot()) >= 30, 20, "first messages")
            broker_cm.__exit__(None, None, None)
            vm_cm.__exit__(None, None, None)
            servers_up = False
            t_down = time.monotonic()
            if kill:
                time.sleep(OUTAGE_S / 3)  # the spool holds a few seconds of undelivered data
                proc.kill()
                proc.wait(10)
                proc = start_gateway(config)
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - t_down)))  # the outage itself, not a sync
            broker_cm = mosquitto(mq_dir, port=broker.port)
            vm_cm = victoria_metrics(vm_dir, port=vm.port)
            broker_cm.__enter__()
            vm_cm.__enter__()
            servers_up = True
            # drained: both sinks have less than a second of production pending (the gauge is refreshed
            # every second; a lingering sink always holds the last few ticks). Delivery is in order, so
            # everything older than that, i.e. everything before t_check (2.5 s earlier), was delivered.
            t_check = time.time_ns()
            log = config.parent / "gateway.log"
            per_second = 3 / 0.02
            try:
                poll(lambda: (g := sink_gauges(http_port)).get("cloud", 1e9) < per_second
                     and g.get("tsdb", 1e9) < per_second and time.time_ns() > t_check + 2_500_000_000, 40,
                     "backlog drained")
            except AssertionError as exc:
                tail = log.read_text()[-4000:]
                raise AssertionError(f"{exc}; pending {sink_gauges(http_port)}; log:\n{tail}") from None
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
            assert proc.returncode == 0, log.read_text()[-3000:]
            # everything collected until the drain check must be in both uplinks
            db = sqlite3.connect(data / "store.db")
            expected = {(d, t, ts // 10**6) for d, t, ts in db.execute(
                "SELECT s.device, s.tag, p.ts_ns FROM points p JOIN series s ON s.id = p.series_id "
                "WHERE p.ts_ns < ?", (t_check,))}
            assert len(expected) > 3 * (OUTAGE_S / 0.02) * 0.8, len(expected)  # the outage was collected
            got = sub.snapshot()
            firsts: dict[tuple[str, str], list[int]] = {}
            seen: set[tuple[str, str, int]] = set()
            for m in got:
                if m.topic.endswith("/status"):
                    continue
                doc = json.loads(m.payload)
                ms = iso_ms(doc["ts"])
                for tag in doc["values"]:
                    key = (doc["device"], tag, ms)
                    if key not in seen:
                        seen.add(key)
                        firsts.setdefault((doc["device"], tag), []).append(ms)
            missing_mqtt = expected - seen
            assert not missing_mqtt, f"{len(missing_mqtt)} of {len(expected)} missing on MQTT"
            for key, stamps in firsts.items():
                assert stamps == sorted(stamps), f"{key}: out of order on MQTT"
            q = urllib.parse.urlencode({"match[]": '{__name__=~"outage_.*"}'})

            def in_vm() -> set[tuple[str, str, int]]:
                urllib.request.urlopen(f"{vm.url}/internal/force_flush", timeout=5).read()
                body = urllib.request.urlopen(f"{vm.url}/api/v1/export?{q}", timeout=5).read()
                out = set()
                for line in body.splitlines():
                    row = json.loads(line)
                    tag = row["metric"]["__name__"].removeprefix("outage_")
                    out.update((row["metric"]["device"], tag, ts) for ts in row["timestamps"])
                return out

            poll(lambda: expected <= in_vm(), 20, "all points in VictoriaMetrics")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            if servers_up:
                broker_cm.__exit__(None, None, None)
                vm_cm.__exit__(None, None, None)
