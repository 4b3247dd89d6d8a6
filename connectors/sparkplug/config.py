"""Configuration of the Sparkplug B sink (``type: sparkplug``): the broker, the node's identity, its writes."""

from __future__ import annotations

import string
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from connectors.mqtt.config import MqttSinkConfig, TlsConfig, check_hosts, check_hosts_or_host
from gateway.config.base import Duration, SinkConfigBase, StrictModel, check_at_least, check_template

SITE_FIELDS = frozenset({"enterprise", "site", "area", "line"})
DEVICE_FIELDS = SITE_FIELDS | {"source", "device"}

Datatype = Literal[
    "Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64", "Float", "Double", "Boolean",
    "String", "DateTime", "Text", "Int8Array", "Int16Array", "Int32Array", "Int64Array", "UInt8Array",
    "UInt16Array", "UInt32Array", "UInt64Array", "FloatArray", "DoubleArray", "BooleanArray", "StringArray",
    "DateTimeArray",
]
"""Sparkplug B datatypes a metric can be given (``connectors.sparkplug.codec.NAMES``, checked by a test)."""

_RESERVED = "/+#"


def check_id(template: str, allowed: frozenset[str]) -> str:
    """A Sparkplug id template: known placeholders, and no character an MQTT topic level cannot hold."""
    check_template(template, allowed)
    literal = "".join(text for text, _, _, _ in string.Formatter().parse(template))
    bad = sorted({c for c in literal if c in _RESERVED})
    if bad:
        raise ValueError(f"a Sparkplug id cannot contain {' or '.join(bad)} (it is one level of a topic)")
    if not template.strip():
        raise ValueError("a Sparkplug id cannot be empty")
    return template


class DeviceCommandConfig(StrictModel):
    """Writes from Sparkplug DCMD messages to device tags (``writable: true`` ones only). Off unless enabled."""

    enabled: bool = False
    max_age: Duration = Field(
        10.0, gt=0, description="refuse a DCMD whose payload timestamp is older than this (or has none)"
    )
    rate: float = Field(5.0, gt=0, description="most writes executed per second (token bucket)")
    burst: int = Field(10, ge=1, description="writes allowed back to back before `rate` applies")


class SparkplugSinkConfig(SinkConfigBase):
    """A Sparkplug B edge node on an MQTT broker: one Sparkplug device per gateway device."""

    type: Literal["sparkplug"] = "sparkplug"
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    hosts: list[str] | None = Field(
        None, description="brokers of one cluster to fail over between, `host:port` each (IPv6: `[addr]:port`), "
        "instead of host/port; every connection to any of them is a new Sparkplug session (NBIRTH, bdSeq + 1)",
    )
    protocol: Literal["3.1.1", "5"] = Field(
        "3.1.1", description="MQTT version; either way with a clean session, as Sparkplug requires")
    client_id: str = Field("", description="default: edge-gateway-<group_id>-<edge_node_id>")
    username: str | None = None
    password: SecretStr | None = None
    keepalive: Duration = Field(30.0, ge=5, description="MQTT keep-alive; a dead gateway's NDEATH comes after ~1.5x")
    tls: TlsConfig | None = None
    group_id: str = Field("{site}", description="Sparkplug group id; placeholders {enterprise} {site} {area} {line}")
    edge_node_id: str = Field("{line}", description="Sparkplug edge node id (unique in the group); site placeholders")
    device_id: str = Field(
        "{device}", description="Sparkplug device id of a gateway device: {source} {device} and site placeholders")
    primary_host_id: str | None = Field(
        None, description="wait for this host application's STATE (online) before births and data; hold the data "
        "in the spool while it is offline")
    qos: Literal[0, 1] = Field(
        1, description="1: a write is delivered once the broker acknowledged it (zero loss); 0: as Sparkplug 3.0 "
        "says, fire and forget")
    report_by_exception: bool = Field(
        True, description="DDATA carries only metrics whose value, quality or status changed")
    datatypes: dict[str, Datatype] = Field(
        default_factory=dict,
        description="'device/tag' glob -> Sparkplug datatype, for metrics whose type the values do not tell "
        "(Int16, Float, DateTime, ...); others are inferred (Boolean, Int64, Double, String, arrays)")
    commands: DeviceCommandConfig = Field(default_factory=DeviceCommandConfig)
    batch_max_samples: int = Field(
        20_000, ge=1, le=1_000_000, description="most samples handed to the sink in one write (one DDATA per device)")
    max_pending: int = Field(10_000, ge=1, le=60_000, description="messages published but not yet acknowledged")
    max_inflight: int = Field(1000, ge=1, le=65_535, description="paho's in-flight window for QoS 1")
    ack_timeout: Duration = Field(
        30.0, gt=0, description="a write not fully acked within this long is retried from the spool (after births)")
    reconnect_min: Duration = Field(1.0, gt=0, description="first reconnect delay")
    reconnect_max: Duration = Field(5.0, gt=0, description="longest reconnect delay (doubling)")

    @field_validator("group_id", "edge_node_id")
    @classmethod
    def _node_ids(cls, value: str) -> str:
        return check_id(value, SITE_FIELDS)

    @field_validator("device_id")
    @classmethod
    def _device_ids(cls, value: str) -> str:
        return check_id(value, DEVICE_FIELDS)

    @field_validator("primary_host_id")
    @classmethod
    def _host_id(cls, value: str | None) -> str | None:
        return None if value is None else check_id(value, frozenset())

    @field_validator("datatypes")
    @classmethod
    def _patterns(cls, value: dict[str, str]) -> dict[str, str]:
        for pattern in value:
            if pattern.count("/") != 1 or not all(pattern.split("/")):
                raise ValueError(f"{pattern!r}: expected 'device/tag' (glob patterns allowed, e.g. '*/temp*')")
        return value

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, value: list[str] | None) -> list[str] | None:
        return check_hosts(value)

    @model_validator(mode="after")
    def _checks(self) -> SparkplugSinkConfig:
        check_hosts_or_host(self.hosts, self.model_fields_set)
        check_at_least(self, "reconnect_max", "reconnect_min")
        if self.password is not None and self.username is None:
            raise ValueError("password needs a username")
        return self

    def mqtt(self, client_id: str) -> MqttSinkConfig:
        """The MQTT connection's settings: a clean session every time (Sparkplug: Clean Session true, or
        Clean Start true with a session expiry of 0)."""
        where: dict[str, Any] = ({"hosts": self.hosts} if self.hosts is not None
                                 else {"host": self.host, "port": self.port})
        return MqttSinkConfig(
            **where, protocol=self.protocol, client_id=client_id, username=self.username,
            password=self.password, keepalive=self.keepalive, clean_start=True, session_expiry=0.0, tls=self.tls,
            qos=self.qos, max_pending=self.max_pending, max_inflight=self.max_inflight,
            ack_timeout=self.ack_timeout, reconnect_min=self.reconnect_min, reconnect_max=self.reconnect_max,
        )
