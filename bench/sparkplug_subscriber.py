"""The ``bench sparkplug`` host: a Sparkplug subscriber in its own process (its CPU is not the gateway's).

``python -m bench.sparkplug_subscriber PORT``: a persistent MQTT session (QoS 1, so a broker restart loses
nothing queued for it) on ``spBv1.0/#``; prints ``ready`` once subscribed, then reads commands on stdin:

- ``report T0_MS T1_MS``: print one JSON line: for each metric timestamp (ms) in [T0, T1), how many distinct
  metrics (device, alias) carried a value with it, in a DBIRTH or a DDATA; messages and metrics decoded,
  births, and the messages the broker delivered twice; then exit.

Payloads are decoded with the protobuf module generated from Eclipse Tahu's ``sparkplug_b.proto``.
"""

from __future__ import annotations

import json
import sys
import threading
from collections import Counter
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from connectors.sparkplug.sparkplug_b_pb2 import Payload


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.values: dict[tuple[str, int], set[int]] = {}  # (device, alias) -> metric timestamps (ms)
        self.messages = 0
        self.metrics = 0
        self.births = Counter[str]()
        self.redelivered = 0

    def on_message(self, msg: Any) -> None:
        parts = msg.topic.split("/")
        if len(parts) < 5 or parts[2] not in ("DBIRTH", "DDATA"):
            if len(parts) > 2 and parts[2] == "NBIRTH":
                with self.lock:
                    self.births["NBIRTH"] += 1
            return
        payload = Payload.FromString(msg.payload)
        device = parts[4]
        with self.lock:
            self.messages += 1
            self.redelivered += bool(msg.dup)
            if parts[2] == "DBIRTH":
                self.births["DBIRTH"] += 1
            values = self.values
            for m in payload.metrics:
                key = (device, m.alias)
                seen = values.get(key)
                if seen is None:
                    seen = values[key] = set()
                seen.add(m.timestamp)
            self.metrics += len(payload.metrics)

    def report(self, t0: int, t1: int) -> dict[str, Any]:
        with self.lock:
            per_ts: Counter[int] = Counter()
            for stamps in self.values.values():
                per_ts.update(ts for ts in stamps if t0 <= ts < t1)
            return {"per_ts": {str(ts): n for ts, n in sorted(per_ts.items())}, "messages": self.messages,
                    "metrics": self.metrics, "births": dict(self.births), "redelivered": self.redelivered}


def main() -> int:
    port = int(sys.argv[1])
    tally = Tally()
    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-sparkplug-host", protocol=mqtt.MQTTv5)
    client.on_connect = lambda c, *a: c.subscribe("spBv1.0/#", 1)
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_message = lambda c, ud, msg: tally.on_message(msg)
    client.reconnect_delay_set(1, 1)
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    client.connect("127.0.0.1", port, keepalive=30, clean_start=False, properties=props)
    client.loop_start()
    if not subscribed.wait(15):
        print("error: not subscribed within 15 s", flush=True)
        return 1
    print("ready", flush=True)
    for line in sys.stdin:
        parts = line.split()
        if parts[:1] == ["report"]:
            sys.stdout.write(json.dumps(tally.report(int(parts[1]), int(parts[2]))) + "\n")
            sys.stdout.flush()
            break
    client.disconnect()
    client.loop_stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
