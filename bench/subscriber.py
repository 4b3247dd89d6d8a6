"""The e2e benchmark's test subscriber (paho lives with the MQTT connector, not in gateway/), in its own
process so its CPU is not the gateway's.

``python -m bench.subscriber PORT``: subscribes to ``#`` (QoS 1) on the broker at
127.0.0.1:PORT, prints ``ready``, then reads commands from stdin, one per line:

- ``window T0_MS T1_MS``: from now on count the values whose sample timestamp is in [T0, T1) (ms since
  the epoch, the resolution of the per-device payload's ``ts``);
- ``report``: print one JSON line (counts per ``device/tag``, messages, duplicates, a latency histogram
  in 0.1 ms buckets per protocol, and each in-window message's ``[device, ts ms, arrival ns, values]``,
  which the benchmark pairs with the time the gateway received those values) and exit.

Latency of a value = its arrival wall time (taken first thing in the message callback) minus its ``ts``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from collections import Counter
from datetime import datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

_BUCKET_NS = 100_000  # 0.1 ms


class Tally:
    """Everything counted from the messages; touched only under ``lock``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.t0_ms = self.t1_ms = -1
        self.counts: Counter[str] = Counter()
        self.latency: dict[str, Counter[int]] = {"modbus": Counter(), "opcua": Counter()}
        self.messages = 0
        self.in_window: Counter[str] = Counter()  # messages with values in the window, per protocol
        self.outside = 0  # values whose ts lies outside the window (warm-up, drain)
        self.duplicates = 0
        self.arrivals: list[tuple[str, int, int, int]] = []  # first deliveries in the window
        self._seen: set[int] = set()
        self._ts_ms: dict[str, int] = {}

    def ts_ms(self, ts: str) -> int:
        """``2026-11-23T21:07:51.123Z`` -> ms since the epoch; a scan's messages share it, so cache it."""
        ms = self._ts_ms.get(ts)
        if ms is None:
            if len(self._ts_ms) > 100_000:
                self._ts_ms.clear()
            ms = self._ts_ms[ts] = round(datetime.fromisoformat(ts).timestamp() * 1000)
        return ms

    def on_payload(self, arrived_ns: int, payload: bytes) -> None:
        try:
            doc = json.loads(payload)
        except ValueError:
            return
        if not isinstance(doc, dict) or "values" not in doc:
            return  # the gateway's status topic
        with self.lock:
            self.messages += 1
            h = hash(payload)  # a QoS 1 redelivery carries the identical payload
            if h in self._seen:
                self.duplicates += 1
                return
            ms = self.ts_ms(doc["ts"])
            values: dict[str, Any] = doc["values"]
            if not self.t0_ms <= ms < self.t1_ms:
                self.outside += len(values)
                return
            self._seen.add(h)
            device: str = doc["device"]
            counts = self.counts
            for tag in values:
                counts[f"{device}/{tag}"] += 1
            kind = "opcua" if device.startswith("ua") else "modbus"
            self.in_window[kind] += 1
            self.latency[kind][(arrived_ns - ms * 1_000_000) // _BUCKET_NS] += len(values)
            self.arrivals.append((device, ms, arrived_ns, len(values)))

    def report(self) -> dict[str, Any]:
        with self.lock:
            return {"counts": dict(self.counts), "messages": self.messages, "in_window": dict(self.in_window),
                    "outside": self.outside,
                    "duplicates": self.duplicates, "bucket_ns": _BUCKET_NS,
                    "latency": {k: [[b, n] for b, n in sorted(c.items())] for k, c in self.latency.items()},
                    "arrivals": self.arrivals}


def main() -> int:
    port = int(sys.argv[1])
    tally = Tally()
    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"e2e-{uuid.uuid4().hex[:8]}",
                         protocol=mqtt.MQTTv5)
    client.on_connect = lambda c, *a: c.subscribe("#", 1)
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_message = lambda c, ud, msg: tally.on_payload(time.time_ns(), bytes(msg.payload))
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    if not subscribed.wait(15):
        print("error: not subscribed within 15 s", flush=True)
        return 1
    print("ready", flush=True)
    for line in sys.stdin:
        parts = line.split()
        if parts[:1] == ["window"]:
            with tally.lock:
                tally.t0_ms, tally.t1_ms = int(parts[1]), int(parts[2])
        elif parts[:1] == ["report"]:
            break
    client.disconnect()
    client.loop_stop()
    sys.stdout.write(json.dumps(tally.report()) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
