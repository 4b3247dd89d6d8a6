"""The link's paho client takes a short way for PUBACKs without properties and paho's own for the rest."""

from __future__ import annotations

from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.exception import MalformedPacket

from connectors.mqtt.adapter import _Client


def _client(protocol: int) -> tuple[_Client, list[tuple[int, int, str, Any]]]:
    client = _Client(CallbackAPIVersion.VERSION2, client_id="t", protocol=protocol)
    acks: list[tuple[int, int, str, Any]] = []
    client.on_publish = lambda _c, _u, mid, reason, props: acks.append(
        (mid, reason.value, reason.getName(), getattr(props, "ReasonString", None)))
    return client, acks


def _queued(client: _Client) -> int:
    info = client.publish("plant/line1", b"21.5", qos=1)  # not connected: paho keeps it until acked
    assert info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and info.mid in client._out_messages
    return int(info.mid)


def _puback(client: _Client, body: bytes) -> MQTTErrorCode:
    client._in_packet["command"] = 0x40
    client._in_packet["packet"] = bytearray(body)
    return client._packet_handle()  # as paho's read loop hands a complete packet over


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5])
def test_a_plain_puback_acks_its_message_the_short_way(protocol: int, decoded: list[bytes]) -> None:
    client, acks = _client(protocol)
    mid = _queued(client)
    other = _queued(client)
    assert _puback(client, mid.to_bytes(2, "big")) == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert acks == [(mid, 0, "Success", None)]
    assert mid not in client._out_messages and other in client._out_messages
    assert _puback(client, mid.to_bytes(2, "big")) == MQTTErrorCode.MQTT_ERR_SUCCESS  # a repeat: acked once
    assert len(acks) == 1 and decoded == []


def test_mqtt5_reason_codes_reach_the_callback_the_short_way(decoded: list[bytes]) -> None:
    client, acks = _client(mqtt.MQTTv5)
    a, b, c = _queued(client), _queued(client), _queued(client)
    _puback(client, a.to_bytes(2, "big") + b"\x10")  # no matching subscribers: a success
    _puback(client, b.to_bytes(2, "big") + b"\x87\x00")  # not authorized, empty properties
    _puback(client, c.to_bytes(2, "big") + b"\x97")  # quota exceeded
    assert [(m, v, n) for m, v, n, _ in acks] == [
        (a, 0x10, "No matching subscribers"), (b, 0x87, "Not authorized"), (c, 0x97, "Quota exceeded")]
    assert decoded == []


def test_a_puback_with_properties_takes_paho_s_way(decoded: list[bytes]) -> None:
    client, acks = _client(mqtt.MQTTv5)
    mid = _queued(client)
    reason = b"\x1f\x00\x04full"  # Reason String "full"
    body = mid.to_bytes(2, "big") + b"\x97" + bytes([len(reason)]) + reason
    _puback(client, body)
    assert acks == [(mid, 0x97, "Quota exceeded", "full")]
    assert decoded == [body]


def test_what_is_not_a_short_puback_takes_paho_s_way(decoded: list[bytes]) -> None:
    client, acks = _client(mqtt.MQTTv311)
    mid = _queued(client)
    # 3.1.1 has no reason code: paho's decoder refuses the packet (its read loop then drops the connection)
    with pytest.raises(MalformedPacket):
        _puback(client, mid.to_bytes(2, "big") + b"\x00")
    assert acks == [] and len(decoded) == 1
    client5, acks5 = _client(mqtt.MQTTv5)
    mid5 = _queued(client5)
    with pytest.raises(MalformedPacket):  # not a PUBACK reason code: paho's decoder says so
        _puback(client5, mid5.to_bytes(2, "big") + b"\x42")
    assert acks5 == [] and len(decoded) == 2 and mid5 in client5._out_messages
