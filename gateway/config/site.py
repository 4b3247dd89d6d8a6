"""Sections of the root config that belong to the engine itself (not to a plug-in)."""

from __future__ import annotations

from typing import Literal

from pydantic import ByteSize, Field, SecretStr, model_validator

from gateway.config.base import Duration, StrictModel


class SiteConfig(StrictModel):
    """ISA-95 style location of this gateway, used by topic templates and as series tags."""

    enterprise: str = "acme"
    site: str = "site1"
    area: str = "area1"
    line: str = "line1"


GATEWAY_ID_PATTERN = r"^[a-z0-9]+([_-][a-z0-9]+)*$"
"""A gateway id: lowercase letters and digits, single ``-`` or ``_`` between them (it goes into MQTT topics
and client ids, file names and the plan)."""


class GatewaySection(StrictModel):
    """Who this gateway is in a fleet: its id and how it reports itself (``edge-gateway fleet status``)."""

    id: str | None = Field(
        None, pattern=GATEWAY_ID_PATTERN, max_length=64,
        description="stable id of this gateway in a fleet: its status topic (…/gateway/<id>/status) and MQTT "
        "client ids; default <site>-<line> from `site:`. `edge-gateway fleet plan` sets it in each shard",
    )
    status_interval: Duration = Field(
        10.0, ge=1, le=3600,
        description="how often the retained status message is published (and within 2 s of a change of its "
        "devices ok/bad or config)",
    )


class SpoolConfig(StrictModel):
    """The durable store-and-forward spool (SQLite, WAL) between sources and sinks."""

    path: str | None = Field(None, description="spool file; default <data_dir>/spool.db")
    max_size: ByteSize = Field(ByteSize(256 * 1024 * 1024), description="bound on spooled payload, e.g. 256MiB")
    max_age: Duration = Field(7 * 86400.0, description="batches older than this are dropped, e.g. 7d")
    overflow: Literal["drop_oldest", "drop_newest"] = Field(
        "drop_oldest", description="what to drop when the spool is full (or the disk is)"
    )
    synchronous: Literal["off", "normal", "full"] = Field(
        "normal",
        description="SQLite synchronous: normal survives a process crash, full also a power cut",
    )
    commit_interval: Duration = Field(
        0.0, le=60,
        description="group appends for this long before one commit (fewer flash writes, more at risk)",
    )
    memory_batches: int = Field(
        256, ge=16, le=1_000_000,
        description="recent batches kept in memory for sinks at the head; also the bound on uncommitted "
        "batches before sources feel back-pressure",
    )
    memory_samples: int = Field(
        50_000, ge=0, le=10_000_000,
        description="recent samples kept in memory for sinks at the head (about 200 bytes each)",
    )

class HttpConfig(StrictModel):
    """Health, metrics, tag API and the status page."""

    enabled: bool = True
    bind: str = Field("127.0.0.1", description="address to listen on; 0.0.0.0 to reach it from other hosts")
    port: int = Field(8750, ge=0, le=65535)
    username: str | None = Field(None, description="with password: HTTP basic auth on every page")
    password: SecretStr | None = None
    public_health: bool = Field(True, description="serve /health without auth (container/service health checks)")
    device_grace: Duration = Field(
        15.0, description="after start, how long a device may stay silent before /health calls it unhealthy"
    )
    health_window: Duration = Field(
        300.0, gt=0, description="/health stays unhealthy this long after data was dropped, e.g. 5m"
    )

    @model_validator(mode="after")
    def _auth_pair(self) -> HttpConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        return self


class LogConfig(StrictModel):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "console", "json"] = Field(
        "auto", description="auto: console renderer on a TTY, JSON lines otherwise"
    )


class ProcessingDefaults(StrictModel):
    """Engine-wide settings of the processing stage."""

    queue_batches: int = Field(
        256, ge=1, le=100_000, description="batches buffered between sources and the spool before back-pressure"
    )


class EmbeddedLineConfig(StrictModel):
    """A simulated line the gateway serves beside itself (``edge-gateway simulate`` as a child process that
    dies with the gateway; its log in ``<data_dir>/simulators/``): the embedded default's bottling line, or
    any PoC demo that should come up with one command. Not restarted by a reload."""

    scenario: str = Field(
        min_length=1, description="built-in scenario (bottling-line, cnc-cell) or a scenario file "
        "(relative to the config file)"
    )
    host: str = "127.0.0.1"
    modbus_port: int | None = Field(None, ge=1, le=65535, description="default: the scenario's")
    opcua_port: int | None = Field(None, ge=1, le=65535, description="default: the scenario's")
    speed: float = Field(1.0, gt=0, le=1000, description="time factor for the line's state machines")
