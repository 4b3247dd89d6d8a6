"""The real servers the integration suites use start, answer, and keep what they are given.

These guard the install step of ``./dev test``: on a machine where mosquitto, VictoriaMetrics or nats-server
is missing they fail, loudly, instead of letting later sink tests skip.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
import urllib.request
import uuid

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.servers import Mosquitto, NatsCluster, VictoriaMetrics


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


def _client(port: int, name: str) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{name}-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv311,
                    clean_session=False)
    c.connect("127.0.0.1", port, keepalive=10)
    c.loop_start()
    return c


@pytest.mark.timeout(60)
def test_nats_cluster_serves_mqtt_across_nodes_and_a_killed_node_comes_back(nats_cluster: NatsCluster) -> None:
    n1, _, n3 = nats_cluster.nodes
    got: list[bytes] = []
    subscribed = threading.Event()
    sub = _client(n3.mqtt_port, "t-sub")
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.on_message = lambda _c, _u, msg: got.append(msg.payload)
    sub.subscribe("fixture/#", qos=1)

    def publish(payload: bytes) -> None:
        pub = _client(n1.mqtt_port, "t-pub")
        try:
            info = pub.publish("fixture/x", payload, qos=1)
            info.wait_for_publish(30)
            assert info.is_published(), "node 1 did not acknowledge"
        finally:
            pub.loop_stop()
            pub.disconnect()

    try:
        assert subscribed.wait(10)
        publish(b"1")  # acknowledged by node 1, read on node 3
        nats_cluster.kill("n1")
        assert not n1.running and not n1.ready()
        nats_cluster.restart("n1")  # same ports, same store
        assert n1.ready() and n1.meta_leader() in {"n1", "n2", "n3"}
        publish(b"2")
        deadline = time.monotonic() + 10
        while len(got) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert got == [b"1", b"2"]
    finally:
        sub.loop_stop()
        sub.disconnect()
