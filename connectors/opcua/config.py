"""Config of the OPC-UA source: one session per device (endpoint), tags addressed by NodeId or browse path.

Addressing forms accepted in ``node:``::

    nsu=urn:acme:line;s=Line1.Temp      namespace URI form, resolved at every (re)connect (preferred)
    ns=2;s=Line1.Temp  ns=2;i=42  ns=2;g=<guid>  ns=2;b=<base64>  i=2258
    /Objects/2:Line1/2:Filler/2:Temperature      browse path from the root (index:BrowseName per step)
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from gateway.config.base import (
    DeviceLoad,
    Duration,
    Name,
    SourceConfigBase,
    StrictModel,
    TagBase,
    check_at_least,
    config_dataclass,
)

_NODE = re.compile(r"^(nsu=[^;]+;|ns=\d+;)?[isgb]=.+$")
_PATH_STEP = re.compile(r"^(\d+:)?[^/]+$")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_BASE64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")

Policy = Literal["None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"]
Trigger = Literal["status", "status_value", "status_value_timestamp"]


def check_node(node: str) -> str:
    """A NodeId string (``ns=``/``nsu=`` + ``i=``/``s=``/``g=``/``b=``) or a ``/``-separated browse path."""
    if node.startswith("/"):
        steps = node.strip("/").split("/")
        if not steps or not all(_PATH_STEP.match(s) for s in steps):
            raise ValueError(f"browse path {node!r}: each step is [index:]BrowseName, e.g. /Objects/2:Line1")
        return node
    if not _NODE.match(node):
        raise ValueError(
            f"{node!r} is neither a NodeId (ns=2;s=Name, nsu=URI;i=42, i=2258) nor a browse path (/Objects/...)"
        )
    kind, _, ident = node.rpartition(";")[2].partition("=")
    if kind == "i" and not (ident.isdigit() and int(ident) < 2**32):
        raise ValueError(f"{node!r}: a numeric NodeId (i=) takes a whole number from 0 to 4294967295, not {ident!r}")
    if kind == "g" and not _GUID.match(ident):
        raise ValueError(f"{node!r}: a GUID NodeId (g=) looks like 72962b91-fa75-4ae6-8d28-b404dc7daf63")
    if kind == "b" and not _BASE64.match(ident):
        raise ValueError(f"{node!r}: an opaque NodeId (b=) is base64 text")
    return node


@config_dataclass(slots=True)
class OpcUaTag(TagBase):
    node: Annotated[
        str, Field(description="NodeId (nsu=URI;s=..., ns=2;i=..., ...) or browse path /Objects/2:Line1/2:Temp")
    ]
    sampling_interval: Annotated[
        Duration | None, Field(description="server sampling interval; default the device's")
    ] = None
    queue_size: Annotated[
        int | None, Field(ge=1, le=10_000, description="server-side queue; default the device's")
    ] = None
    trigger: Annotated[Trigger | None, Field(
        description="data-change trigger; default: no filter at all (the server reports every change of "
        "status or value), or with a server deadband status_value for numbers, status_value_timestamp otherwise"
    )] = None
    server_timestamp: Annotated[
        bool | None, Field(description="carry the server timestamp beside the source timestamp; default the device's")
    ] = None
    server_deadband: Annotated[float | None, Field(ge=0, description="absolute deadband applied by the server")] = None
    server_deadband_percent: Annotated[
        float | None, Field(ge=0, le=100, description="percent-of-EURange deadband applied by the server")
    ] = None

    _check_node = field_validator("node")(classmethod(lambda cls, v: check_node(v)))

    @model_validator(mode="after")
    def _one_deadband(self) -> OpcUaTag:
        if self.server_deadband is not None and self.server_deadband_percent is not None:
            raise ValueError("server_deadband and server_deadband_percent exclude each other")
        return self


class SecurityConfig(StrictModel):
    policy: Policy = "None"
    mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    username: str | None = None
    password: SecretStr | None = None
    certificate: str | None = Field(
        None, description="identity certificate (DER) for certificate identity; private key in `private_key`"
    )
    private_key: str | None = None
    application_uri: str | None = Field(
        None, description="the client's application URI (in its certificate); default urn:HOSTNAME:edge-gateway"
    )

    @model_validator(mode="after")
    def _consistent(self) -> SecurityConfig:
        if (self.policy == "None") != (self.mode == "None"):
            raise ValueError("policy None goes with mode None; a secure policy needs mode Sign or SignAndEncrypt")
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("certificate and private_key go together")
        if self.username is not None and self.certificate is not None:
            raise ValueError("choose one identity: username/password or certificate")
        return self


class Discovery(StrictModel):
    """Tags found by browsing below ``root``: variables whose browse name matches include and not exclude."""

    root: str = Field(description="NodeId or browse path of the subtree to browse")
    include: list[str] = Field(default_factory=lambda: ["*"], description="glob patterns over browse names")
    exclude: list[str] = Field(default_factory=list)
    depth: int = Field(3, ge=1, le=20)
    max_nodes: int = Field(1000, ge=1, le=100_000, description="stop after this many variables")

    _check_root = field_validator("root")(classmethod(lambda cls, v: check_node(v)))


class OpcUaDevice(StrictModel):
    endpoint: str = Field(pattern=r"^opc\.tcp://", description="opc.tcp://host:port/path")
    mode: Literal["subscribe", "poll"] = "subscribe"
    publishing_interval: Duration = Field(1.0, gt=0, description="subscription publishing interval")
    sampling_interval: Duration = Field(1.0, ge=0, description="default per-tag sampling interval")
    queue_size: int = Field(1, ge=1, le=10_000, description="default per-tag server queue size")
    poll_interval: Duration = Field(1.0, gt=0, description="time between batched reads in poll mode")
    timestamp: Literal["source", "server", "gateway"] = Field(
        "source", description="which timestamp becomes the sample's source_ts; only that one is requested with "
        "subscribed values (a value the server sends without it gets the gateway's time)"
    )
    server_timestamp: bool = Field(
        False, description="carry each value's server timestamp too (Sample.server_ts: the store, MQTT and line "
        "protocol get a server_ts field); asks the server for both timestamps"
    )
    timeout: Duration = Field(5.0, gt=0, description="per-request timeout")
    watchdog: Duration = Field(
        30.0, gt=0, description="no keep-alive nor data for this long forces a clean reconnect"
    )
    reconnect_initial: Duration = Field(0.5, gt=0)
    reconnect_max: Duration = Field(30.0, gt=0)
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    tags: list[OpcUaTag] = Field(default_factory=list)
    discover: list[Discovery] = Field(default_factory=list)

    @model_validator(mode="after")
    def _reconnect_order(self) -> OpcUaDevice:
        check_at_least(self, "reconnect_max", "reconnect_initial")
        return self

    @model_validator(mode="after")
    def _shape(self) -> OpcUaDevice:
        if not self.tags and not self.discover:
            raise ValueError("a device needs tags or discover")
        names = [t.name for t in self.tags]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"tag names must be unique within a device; repeated: {', '.join(dupes)}")
        return self


class OpcUaSourceConfig(SourceConfigBase):
    """OPC-UA servers, read by subscription (default) or by batched polling."""

    type: Literal["opcua"] = "opcua"
    queue_max: int = Field(
        10_000, ge=10, le=1_000_000, description="bounded notification queue (batches); overflow is counted"
    )
    data_dir: str | None = Field(None, description="PKI location; default the gateway's data_dir")
    devices: dict[Name, OpcUaDevice] = Field(min_length=1)

    def iter_tags(self) -> Iterator[tuple[str, TagBase]]:
        for device, dev in self.devices.items():
            for tag in dev.tags:
                yield device, tag

    def device_loads(self) -> dict[str, DeviceLoad]:
        """Subscriptions: at most one value per item and publishing cycle, no faster than it is sampled (every
        item changing), one publish request per cycle; polling: every tag per poll, one batched read. Tags
        that ``discover`` will find are not known here and not counted."""
        out = {}
        for device, dev in self.devices.items():
            if dev.mode == "poll":
                out[device] = DeviceLoad(len(dev.tags), len(dev.tags) / dev.poll_interval, 1 / dev.poll_interval)
                continue
            values = 0.0
            for tag in dev.tags:
                sampling = dev.sampling_interval if tag.sampling_interval is None else tag.sampling_interval
                values += 1 / max(sampling, dev.publishing_interval)
            out[device] = DeviceLoad(len(dev.tags), values, 1 / dev.publishing_interval)
        return out
