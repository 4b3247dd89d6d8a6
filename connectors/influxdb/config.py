"""Configuration of the InfluxDB v2 sink (``type: influxdb``): connection and the sample -> point mapping."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from gateway.config.base import TEMPLATE_FIELDS, Duration, SinkConfigBase, check_template
from gateway.redact import redact

SERIES_FIELDS = TEMPLATE_FIELDS


def check_url(value: str) -> str:
    """An http(s) URL with a host and a valid port; ValueError names what is wrong (credentials masked)."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL with a host, such as http://influx:8086; "
                         f"got {redact(value)!r}")
    try:
        parts.port  # noqa: B018  # raises on a port that is not a number or out of range
    except ValueError:
        raise ValueError(f"the port of {redact(value)!r} is not a number from 1 to 65535") from None
    return value


class InfluxSinkConfig(SinkConfigBase):
    """Writes samples as line protocol through the InfluxDB v2 write API (InfluxDB 2.x/3.x, VictoriaMetrics)."""

    type: Literal["influxdb"] = "influxdb"
    url: str = Field("http://127.0.0.1:8086", description="base URL of the server, e.g. http://influx:8086")
    urls: list[str] | None = Field(
        None, description="write endpoints to fail over between (several InfluxDB or vminsert nodes), instead "
        "of url: writes go to the first that answers and stay on it; a connection error, a timeout or a 5xx "
        "moves the write to the next at once",
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return check_url(value)

    @field_validator("urls")
    @classmethod
    def _http_urls(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("list at least one write endpoint (http://host:port), or leave urls out and set url")
        seen: dict[str, int] = {}
        for i, entry in enumerate(value):
            try:
                check_url(entry)
            except ValueError as exc:
                raise ValueError(f"entry {i}: {exc}") from None
            key = entry.rstrip("/").lower()
            if key in seen:
                raise ValueError(f"entry {i}: {redact(entry)!r} repeats entry {seen[key]}")
            seen[key] = i
        return value

    @model_validator(mode="after")
    def _urls_or_url(self) -> InfluxSinkConfig:
        if self.urls is not None and "url" in self.model_fields_set:
            raise ValueError("urls replaces url: set urls, or url, not both")
        return self

    def endpoints(self) -> list[str]:
        """The write endpoints, in order: ``urls``, else ``url``."""
        return list(self.urls) if self.urls is not None else [self.url]
    token: SecretStr = Field(SecretStr(""), description="API token (sent as `Authorization: Token ...`)")
    org: str = ""
    bucket: str = "edge"
    precision: Literal["s", "ms", "us", "ns"] = Field(
        "ms", description="timestamp precision written (and declared to the server)"
    )
    gzip: bool = Field(True, description="compress request bodies")
    gzip_level: int = Field(
        1, ge=1, le=9, description="gzip level: 1 is fastest; 9 makes bodies ~15-20 % smaller for ~8x the "
        "compression CPU"
    )
    timeout: Duration = Field(10.0, gt=0, description="HTTP request timeout")
    max_request_lines: int = Field(5000, ge=1, le=1_000_000, description="most points in one HTTP request")
    measurement: str = Field("{source}", description="measurement template")
    tags: dict[str, str] = Field(
        default_factory=lambda: {"site": "{site}", "device": "{device}"},
        description="tag key -> value template, e.g. {device: '{device}', line: '{line}'}",
    )
    fields: Literal["per_tag", "value"] = Field(
        "per_tag",
        description="per_tag: one point per device and timestamp with one field per tag (compact); "
        "value: one point per sample with a `tag` tag and a `value` field",
    )
    quality: Literal["tag", "field", "none"] = Field(
        "tag",
        description="tag: a `quality` tag (good/uncertain/bad); field: an integer field (0 good, 1 uncertain, "
        "2 bad; `quality`, or `<tag>_quality` with fields per_tag); none: not written",
    )
    time_basis: Literal["source", "gateway"] = Field(
        "source", description="source: the device's timestamp (else the receive time); gateway: the receive time"
    )
    # Kept so configs written for older gateways still load: a removed key would be refused as unknown and
    # stop the gateway at its upgrade. Building the sink logs that it is ignored and where dead letters went.
    dead_letter_path: str | None = Field(
        None, json_schema_extra={"deprecated": True},
        description="deprecated and ignored: points the server rejects (400/413) go to the spool's dead letters; "
        "read them with `edge-gateway deadletters list`",
    )

    @field_validator("measurement")
    @classmethod
    def _measurement(cls, value: str) -> str:
        return check_template(value, SERIES_FIELDS)

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: dict[str, str]) -> dict[str, str]:
        for key, template in value.items():
            if not key:
                raise ValueError("a tag key cannot be empty")
            check_template(template, SERIES_FIELDS)
        return value

    @model_validator(mode="after")
    def _tag_placeholder(self) -> InfluxSinkConfig:
        if self.fields == "per_tag":
            uses = [t for t in (self.measurement, *self.tags.values()) if "{tag}" in t]
            if uses:
                raise ValueError("with fields: per_tag each tag is a field: {tag} cannot appear in measurement or tags")
        elif "tag" in self.tags:
            raise ValueError("with fields: value the tag key `tag` carries the tag name; pick another key")
        if self.quality == "tag" and "quality" in self.tags:
            raise ValueError("quality: tag writes the tag key `quality`; pick another key")
        return self
