"""A test-side MQTT subscriber with a persistent session (so a broker restart loses nothing it queued), MQTT 5
or (``protocol="3.1.1"``, e.g. for nats-server) 3.1.1 with clean_session false."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    correlation_data: bytes | None
    arrived: float = 0.0
    """Wall time (s) the message reached this subscriber."""
    dup: bool = False
    """The broker marked it a redelivery."""


class Subscriber:
    def __init__(self, port: int, topics: list[str], *, client_id: str | None = None, qos: int = 1,
                 protocol: str = "5") -> None:
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.topics = topics
        self.qos = qos
        cid = client_id or f"test-{uuid.uuid4().hex[:8]}"
        v5 = protocol == "5"
        c = (mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5) if v5 else
             mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv311, clean_session=False))
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.on_subscribe = lambda *a: self._subscribed.set()
        c.reconnect_delay_set(1, 1)
        if v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 600
            c.connect_async("127.0.0.1", port, keepalive=10, clean_start=False, properties=props)
        else:
            c.connect_async("127.0.0.1", port, keepalive=10)
        self.v5 = v5
        self.client = c

    def __enter__(self) -> Subscriber:
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError("test subscriber did not subscribe")
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, ud: object, flags: object, rc: object, props: object) -> None:
        for t in self.topics:
            client.subscribe(t, self.qos)

    def _on_message(self, client: mqtt.Client, ud: object, msg: mqtt.MQTTMessage) -> None:
        arrived = time.time()
        props = getattr(msg, "properties", None)
        corr = getattr(props, "CorrelationData", None) if props is not None else None
        with self._lock:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain), corr, arrived,
                                          bool(msg.dup)))

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.messages)

    async def wait_for(self, pred: Callable[[list[Received]], bool], timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while True:
            snap = self.snapshot()
            if pred(snap):
                return snap
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout}s; got {len(snap)} messages")
            await asyncio.sleep(0.02)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, response_topic: str | None = None,
                correlation_data: bytes | None = None, expiry: int | None = None) -> None:
        if not self.v5:
            self.client.publish(topic, payload, qos)
            return
        props = Properties(PacketTypes.PUBLISH)
        if response_topic is not None:
            props.ResponseTopic = response_topic
        if correlation_data is not None:
            props.CorrelationData = correlation_data
        if expiry is not None:
            props.MessageExpiryInterval = expiry
        self.client.publish(topic, payload, qos, properties=props)
