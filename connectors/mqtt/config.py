"""Configuration of the MQTT sink (``type: mqtt``) and its optional command path."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from gateway.config.base import (
    TEMPLATE_FIELDS,
    Duration,
    SinkConfigBase,
    StrictModel,
    check_at_least,
    check_template,
)

TOPIC_FIELDS = TEMPLATE_FIELDS
STATUS_FIELDS = frozenset({"enterprise", "site", "area", "line", "gateway"})
"""Placeholders of the status topic: the site's and the gateway's id (``gateway.id``)."""


def check_hosts(value: list[str] | None) -> list[str] | None:
    """A cluster's brokers (``hosts``): at least one, each ``host:port``, none twice."""
    if value is None:
        return None
    if not value:
        raise ValueError("list at least one broker (host:port), or leave hosts out and set host/port")
    seen: dict[tuple[str, int], int] = {}
    for i, entry in enumerate(value):
        try:
            host, port = parse_endpoint(entry)
        except ValueError as exc:
            raise ValueError(f"entry {i}: {exc}") from None
        key = (host.lower(), port)
        if key in seen:
            raise ValueError(f"entry {i}: {entry!r} repeats entry {seen[key]}")
        seen[key] = i
    return value


def check_hosts_or_host(hosts: list[str] | None, fields_set: set[str]) -> None:
    both = sorted({"host", "port"} & fields_set)
    if hosts is not None and both:
        raise ValueError(f"hosts replaces host and port: set hosts, or {' and '.join(both)}, not both")


def parse_endpoint(text: str) -> tuple[str, int]:
    """``host:port`` (``[v6 address]:port`` for IPv6) -> (host, port); ValueError says what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("an empty entry; expected host:port")
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not host or not rest.startswith(":"):
            raise ValueError(f"{text!r} is not [IPv6 address]:port, e.g. [fd00::10]:1883")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"{text!r} has no port; expected host:port, e.g. broker-a:1883")
        if ":" in host:
            raise ValueError(f"{text!r}: put an IPv6 address in brackets, e.g. [{host}]:{port_text}")
    if any(c.isspace() or c in "/[]@" for c in host):
        raise ValueError(f"{text!r}: {host!r} is not a host name or address")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
    return host, int(port_text)


def check_topic(template: str, allowed: frozenset[str] = TOPIC_FIELDS) -> str:
    """A topic template: known placeholders only, and no MQTT wildcards (we publish to it)."""
    check_template(template, allowed)
    if "#" in template or "+" in template:
        raise ValueError("a topic to publish to cannot contain the wildcards + or #")
    return template


class TlsConfig(StrictModel):
    """TLS to the broker; with no ``ca_file`` the system's CA store is used."""

    enabled: bool = True
    ca_file: str | None = Field(None, description="PEM file of the CA(s) that signed the broker's certificate")
    cert_file: str | None = Field(None, description="client certificate (PEM) for mutual TLS")
    key_file: str | None = Field(None, description="private key (PEM) of the client certificate")
    check_hostname: bool = Field(True, description="verify the broker's name against its certificate")

    @model_validator(mode="after")
    def _cert_and_key(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (mutual TLS needs both)")
        return self


class CommandConfig(StrictModel):
    """Writes from MQTT to devices: ``<topic_prefix>/<source>/<device>/<tag>/set``. Off unless enabled."""

    enabled: bool = False
    topic_prefix: str = Field(
        "{enterprise}/{site}/{area}/{line}/cmd",
        description="commands arrive on <prefix>/<source>/<device>/<tag>/set; site placeholders allowed",
    )
    response_prefix: str = Field(
        "{enterprise}/{site}/{area}/{line}/cmd-response",
        description="results go to <prefix>/<source>/<device>/<tag> unless the request names a response topic",
    )
    max_age: Duration = Field(
        10.0, gt=0, description="refuse commands older than this (payload `ts`, or the v5 message expiry)"
    )
    rate: float = Field(5.0, gt=0, description="most commands executed per second (token bucket)")
    burst: int = Field(10, ge=1, description="commands allowed back to back before `rate` applies")
    qos: Literal[0, 1, 2] = 1

    @field_validator("topic_prefix", "response_prefix")
    @classmethod
    def _site_only(cls, value: str) -> str:
        return check_topic(value, frozenset({"enterprise", "site", "area", "line"}))


class MqttSinkConfig(SinkConfigBase):
    """Publishes samples to an MQTT broker (3.1.1 or 5), or to one of a cluster's (``hosts``); counts a write
    delivered only once acked."""

    type: Literal["mqtt"] = "mqtt"
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    hosts: list[str] | None = Field(
        None, description="brokers of one cluster to fail over between, `host:port` each (IPv6: `[addr]:port`), "
        "instead of host/port: the sink connects to the first that answers and moves to the next when the link "
        "is lost or a connect fails",
    )
    protocol: Literal["3.1.1", "5"] = Field(
        "5", description="MQTT version; 3.1.1 for brokers without MQTT 5 (nats-server's MQTT, older brokers)")
    client_id: str = Field(
        "", description="default: edge-gateway-<site>-<sink name>, or edge-gateway-<site>-<gateway.id>-<sink name> "
        "when gateway.id is set (every gateway of a fleet needs its own)")
    username: str | None = None
    password: SecretStr | None = None
    keepalive: Duration = Field(30.0, ge=5, description="MQTT keep-alive")
    clean_start: bool = Field(
        False, description="start with a fresh session (v3.1.1 clean session) instead of resuming"
    )
    session_expiry: Duration = Field(
        3600.0, description="v5: how long the broker keeps the session after a disconnect"
    )
    tls: TlsConfig | None = None
    qos: Literal[0, 1, 2] = 1
    layout: Literal["device", "tag"] = Field(
        "device", description="device: one message per device and scan with all its tags; tag: one per tag"
    )
    topic: str | None = Field(
        None,
        description="topic template; default {enterprise}/{site}/{area}/{line}/{device} for layout device, "
        "…/{device}/{tag} for layout tag",
    )
    retain: bool = Field(False, description="publish values retained (a new subscriber sees the last value)")
    units: bool = Field(True, description="carry each tag's unit in the payload")
    status_topic: str = Field(
        "{enterprise}/{site}/{area}/{line}/gateway/{gateway}/status",
        description="the gateway's retained status message (JSON: id, state online/offline, version, uptime, "
        "devices ok/bad, backlog, last delivery, config hash): on connect, every gateway.status_interval and on "
        "a change; state offline as last will and on a clean stop. {gateway} is gateway.id",
    )
    max_pending: int = Field(
        10_000, ge=1, le=60_000, description="messages published but not yet acked (paho refuses past 65,535)"
    )
    max_inflight: int = Field(1000, ge=1, le=65_535, description="paho's in-flight window for QoS 1/2")
    ack_timeout: Duration = Field(
        30.0, gt=0, description="a write not fully acked within this long is retried from the spool"
    )
    reconnect_min: Duration = Field(1.0, gt=0, description="first reconnect delay")
    reconnect_max: Duration = Field(
        5.0, gt=0, description="longest reconnect delay (doubling); short, so a broker that is back is caught"
        " within seconds (an attempt to a broker that is down costs one refused TCP connect)")
    commands: CommandConfig = Field(default_factory=CommandConfig)

    @model_validator(mode="after")
    def _reconnect_order(self) -> MqttSinkConfig:
        check_at_least(self, "reconnect_max", "reconnect_min")
        return self

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, value: list[str] | None) -> list[str] | None:
        return check_hosts(value)

    @model_validator(mode="after")
    def _hosts_or_host(self) -> MqttSinkConfig:
        check_hosts_or_host(self.hosts, self.model_fields_set)
        return self

    def endpoints(self) -> list[tuple[str, int]]:
        """The brokers to connect to, in order: ``hosts``, else ``host``/``port``."""
        if self.hosts is None:
            return [(self.host, self.port)]
        return [parse_endpoint(h) for h in self.hosts]

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str | None) -> str | None:
        return None if value is None else check_topic(value, TOPIC_FIELDS)

    @field_validator("status_topic")
    @classmethod
    def _status_topic(cls, value: str) -> str:
        return check_topic(value, STATUS_FIELDS)

    @model_validator(mode="after")
    def _layout_fields(self) -> MqttSinkConfig:
        if self.layout == "device" and self.topic is not None and "{tag}" in self.topic:
            raise ValueError("layout device publishes one message per device: its topic cannot use {tag}")
        if self.password is not None and self.username is None:
            raise ValueError("password needs a username")
        return self

    def topic_template(self) -> str:
        if self.topic is not None:
            return self.topic
        base = "{enterprise}/{site}/{area}/{line}/{device}"
        return base if self.layout == "device" else base + "/{tag}"
