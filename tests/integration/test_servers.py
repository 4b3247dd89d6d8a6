"""The real servers the integration suites use start, answer, and keep what they are given.

These guard the install step of ``./dev test``: on a machine where mosquitto or VictoriaMetrics is
missing they fail, loudly, instead of letting later sink tests skip.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
import urllib.request

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.servers import Mosquitto, VictoriaMetrics


def test_mosquitto_round_trip(mosquitto_server: Mosquitto) -> None:
    got: list[bytes] = []
    arrived = threading.Event()
    subscribed = threading.Event()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="t-sub")
    sub.on_subscribe = lambda *a: subscribed.set()

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        got.append(msg.payload)
        arrived.set()

    sub.on_message = on_message
    sub.connect("127.0.0.1", mosquitto_server.port)
    sub.subscribe("t/#", qos=1)
    sub.loop_start()
    try:
        assert subscribed.wait(5)
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="t-pub")
        pub.connect("127.0.0.1", mosquitto_server.port)
        pub.loop_start()
        pub.publish("t/x", b"42.5", qos=1).wait_for_publish(5)
        pub.loop_stop()
        pub.disconnect()
        assert arrived.wait(5)
        assert got == [b"42.5"]
    finally:
        sub.loop_stop()
        sub.disconnect()


def test_victoria_metrics_accepts_influx_line_protocol(victoria_metrics_server: VictoriaMetrics) -> None:
    vm = victoria_metrics_server
    ts_ms = int(time.time() * 1000)
    body = f"probe,device=plc1 temperature=21.5 {ts_ms}".encode()
    req = urllib.request.Request(f"{vm.url}/api/v2/write?precision=ms", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 204
    query = urllib.parse.urlencode({"match[]": '{__name__="probe_temperature"}'})
    deadline = time.monotonic() + 10
    rows: list[dict[str, object]] = []
    while time.monotonic() < deadline and not rows:  # VM ingests asynchronously: poll with a deadline
        vm.force_flush()
        with urllib.request.urlopen(f"{vm.url}/api/v1/export?{query}", timeout=5) as resp:
            rows = [json.loads(line) for line in resp.read().splitlines()]
        if not rows:
            time.sleep(0.2)
    assert rows, "VictoriaMetrics never exported the written point"
    assert rows[0]["metric"] == {"__name__": "probe_temperature", "device": "plc1"}
    assert rows[0]["values"] == [21.5]
    assert rows[0]["timestamps"] == [ts_ms]
