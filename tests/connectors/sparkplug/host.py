"""A Sparkplug host application for the tests: it subscribes to a group, keeps each edge node's session as a
host does (births, aliases, devices online and offline) and records every rule of the specification a node
breaks, instead of trusting the node:

- NBIRTH: seq 0, a bdSeq (Int64), ``Node Control/Rebirth`` false without an alias; a new session;
- NDEATH: ends the session whose NBIRTH had its bdSeq, and is ignored otherwise (a will delivered late);
- DBIRTH / DDATA / DDEATH only within a session, DDATA and DDEATH only for a device born and alive, each with
  the next seq (0..255, wrapping); births with name, alias, datatype and timestamp for every metric, aliases
  unique on the node; DDATA metrics with an alias the device's birth declared, no name, a timestamp, in
  chronological order.

It decodes payloads with the protobuf module generated from Eclipse Tahu's ``sparkplug_b.proto`` and reads
values itself; the gateway's value codec is not used. Its MQTT session is persistent (QoS 1), so a broker
restart loses nothing it subscribed to.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from connectors.sparkplug.sparkplug_b_pb2 import Payload

INT32_TYPES = {1: 8, 2: 16, 3: 32}  # Int8/16/32 -> bits, in int_value as two's complement
SIGNED_LONG = {4}  # Int64


@dataclass
class Event:
    kind: str
    device: str | None
    seq: int | None
    bdseq: int | None = None
    matched: bool = True
    """NDEATH: whether it ended the current session (its bdSeq was the NBIRTH's)."""
    metrics: list[str] = field(default_factory=list)


@dataclass
class NodeState:
    online: bool = False
    bdseq: int | None = None
    next_seq: int = 0
    aliases: dict[int, tuple[str, str, int]] = field(default_factory=dict)  # alias -> (device, name, datatype)
    devices: dict[str, bool] = field(default_factory=dict)  # device -> alive


def value_of(m: Any, datatype: int) -> Any:
    if m.is_null:
        return None
    which = m.WhichOneof("value")
    if which == "int_value":
        bits = INT32_TYPES.get(datatype)
        v = m.int_value
        return v - (1 << bits) if bits and v >= 1 << 31 else v
    if which == "long_value":
        v = m.long_value
        return v - (1 << 64) if datatype in SIGNED_LONG and v >= 1 << 63 else v
    return getattr(m, which) if which else None


class Host:
    def __init__(self, port: int, group: str, *, host_id: str = "scada") -> None:
        self.group = group
        self.host_id = host_id
        self.raw: list[tuple[str, bytes]] = []
        self.events: list[Event] = []
        self.violations: list[str] = []
        self.values: dict[tuple[str, str], dict[int, Any]] = {}
        """(device, metric) -> {timestamp ms: value}: everything births and DDATA delivered."""
        self.nodes: dict[str, NodeState] = {}
        self._seen: set[tuple[str, bytes]] = set()
        self.redelivered = 0
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"host-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5)
        c.on_connect = lambda client, *a: client.subscribe(f"spBv1.0/{group}/#", 1)
        c.on_subscribe = lambda *a: self._subscribed.set()
        c.on_message = self._on_message
        c.reconnect_delay_set(1, 1)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 600
        c.connect_async("127.0.0.1", port, keepalive=10, clean_start=False, properties=props)
        self.client = c

    def __enter__(self) -> Host:
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError("host did not subscribe")
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    # --- what a host sends --------------------------------------------------------------------------

    def state(self, online: bool, ts: int | None = None) -> int:
        ts = ts if ts is not None else time.time_ns() // 1_000_000
        self.client.publish(f"spBv1.0/STATE/{self.host_id}", json.dumps({"online": online, "timestamp": ts}),
                            qos=1, retain=True)
        return ts

    def rebirth(self, node: str) -> None:
        p = Payload(timestamp=time.time_ns() // 1_000_000)
        p.metrics.add(name="Node Control/Rebirth", datatype=11, boolean_value=True)
        self.client.publish(f"spBv1.0/{self.group}/NCMD/{node}", p.SerializeToString(), qos=1)

    def dcmd(self, node: str, device: str, name: str, value: Any, *, by_alias: bool = True,
             ts: int | None = None) -> None:
        """A write as a host sends it: the metric by its alias (the birth's), typed as the birth declared."""
        with self._lock:
            alias = next(a for a, (d, n, _) in self.nodes[node].aliases.items() if d == device and n == name)
            datatype = self.nodes[node].aliases[alias][2]
        p = Payload(timestamp=ts if ts is not None else time.time_ns() // 1_000_000)
        m = p.metrics.add(timestamp=p.timestamp, datatype=datatype)
        if by_alias:
            m.alias = alias
        else:
            m.name = name
        if datatype == 11:
            m.boolean_value = value
        elif datatype == 10:
            m.double_value = value
        elif datatype in (4, 8):
            m.long_value = value & (2**64 - 1)
        else:
            raise ValueError(f"datatype {datatype} not handled by the test host")
        self.client.publish(f"spBv1.0/{self.group}/DCMD/{node}/{device}", p.SerializeToString(), qos=1)

    # --- what a host receives ------------------------------------------------------------------------

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            key = (msg.topic, bytes(msg.payload))
            if msg.dup and key in self._seen:
                self.redelivered += 1  # QoS 1 at least once: the broker sent it again (after its restart)
                return
            self._seen.add(key)
            self.raw.append(key)
            try:
                self._check(msg.topic, bytes(msg.payload))
            except Exception as exc:  # a payload the host cannot read is a violation too
                self.violations.append(f"{msg.topic}: {type(exc).__name__}: {exc}")

    def _bad(self, topic: str, what: str) -> None:
        self.violations.append(f"{topic}: {what}")

    def _check(self, topic: str, raw: bytes) -> None:
        parts = topic.split("/")
        if len(parts) < 4 or parts[2] in ("NCMD", "DCMD", "STATE"):
            return
        kind, node_id = parts[2], parts[3]
        device = parts[4] if len(parts) > 4 else None
        p = Payload.FromString(raw)
        node = self.nodes.setdefault(node_id, NodeState())
        if kind == "NDEATH":
            bdseq = [m.long_value for m in p.metrics if m.name == "bdSeq"]
            if len(bdseq) != 1 or p.HasField("seq"):
                self._bad(topic, "NDEATH needs one bdSeq and no seq")
            matched = node.online and bdseq[:1] == [node.bdseq]
            if matched:
                node.online = False
                node.devices = dict.fromkeys(node.devices, False)
            self.events.append(Event("NDEATH", None, None, bdseq[0] if bdseq else None, matched))
            return
        if not p.HasField("seq") or not 0 <= p.seq <= 255:
            self._bad(topic, f"{kind} without a seq in 0..255")
        if kind == "NBIRTH":
            by_name = {m.name: m for m in p.metrics}
            rebirth = by_name.get("Node Control/Rebirth")
            if p.seq != 0:
                self._bad(topic, f"NBIRTH seq {p.seq}, not 0")
            if "bdSeq" not in by_name or by_name["bdSeq"].datatype != 4:
                self._bad(topic, "NBIRTH without an Int64 bdSeq")
            if rebirth is None or rebirth.datatype != 11 or rebirth.boolean_value or rebirth.HasField("alias"):
                self._bad(topic, "NBIRTH needs Node Control/Rebirth: Boolean false, no alias")
            node.online, node.bdseq, node.next_seq = True, by_name["bdSeq"].long_value, 1
            node.aliases, node.devices = {}, {}
            self.events.append(Event("NBIRTH", None, p.seq, node.bdseq))
            return
        if not node.online:
            self._bad(topic, f"{kind} outside a session (no NBIRTH since the last NDEATH)")
            return
        if p.seq != node.next_seq:
            self._bad(topic, f"{kind} seq {p.seq}, expected {node.next_seq}")
        node.next_seq = (p.seq + 1) % 256
        assert device is not None
        if kind == "DBIRTH":
            names = []
            for m in p.metrics:
                if not (m.name and m.HasField("alias") and m.HasField("datatype") and m.HasField("timestamp")):
                    self._bad(topic, f"birth metric {m.name!r} lacks a name, alias, datatype or timestamp")
                owner = node.aliases.get(m.alias)
                if owner is not None and owner[:2] != (device, m.name):
                    self._bad(topic, f"alias {m.alias} of {m.name} is already {owner[0]}/{owner[1]}'s")
                node.aliases[m.alias] = (device, m.name, m.datatype)
                self.values.setdefault((device, m.name), {})[m.timestamp] = value_of(m, m.datatype)
                names.append(m.name)
            node.devices[device] = True
            self.events.append(Event("DBIRTH", device, p.seq, metrics=names))
        elif kind == "DDEATH":
            if not node.devices.get(device):
                self._bad(topic, "DDEATH of a device not alive")
            node.devices[device] = False
            self.events.append(Event("DDEATH", device, p.seq))
        elif kind == "DDATA":
            if not node.devices.get(device):
                self._bad(topic, "DDATA of a device not born or dead")
            last_ts = 0
            names = []
            for m in p.metrics:
                known = node.aliases.get(m.alias)
                if m.name or not m.HasField("alias") or known is None or known[0] != device:
                    self._bad(topic, f"DDATA metric must be an alias of this device's birth (alias {m.alias})")
                    continue
                if not m.HasField("timestamp") or m.timestamp < last_ts:
                    self._bad(topic, "DDATA metrics without timestamps or out of chronological order")
                last_ts = m.timestamp
                self.values.setdefault((device, known[1]), {})[m.timestamp] = value_of(m, known[2])
                names.append(known[1])
            self.events.append(Event("DDATA", device, p.seq, metrics=names))
        else:
            self._bad(topic, f"unexpected message type {kind}")

    # --- for tests ----------------------------------------------------------------------------------

    def snapshot(self) -> list[Event]:
        with self._lock:
            return list(self.events)

    def received(self) -> dict[tuple[str, str], dict[int, Any]]:
        """A copy of ``values``: (device, metric) -> {timestamp ms: value}."""
        with self._lock:
            return {k: dict(v) for k, v in self.values.items()}

    def latest(self, device: str, metric: str) -> int:
        """Timestamp (ms) of the newest value of a metric the host has, 0 for none."""
        with self._lock:
            return max(self.values.get((device, metric), {0: None}))

    async def wait_for(self, pred: Callable[[list[Event]], Any], timeout: float = 15.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            found = pred(self.snapshot())
            if found:
                return found
            if time.monotonic() > deadline:
                kinds = [(e.kind, e.device, e.seq, e.bdseq) for e in self.snapshot()][-20:]
                raise AssertionError(f"{what or 'host condition'} not met within {timeout:g}s; last events: {kinds}")
            await asyncio.sleep(0.02)
