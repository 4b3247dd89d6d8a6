"""The retained status message a gateway publishes on ``…/gateway/<id>/status``: what ``fleet status``
reads, what the last will says, and how a gateway tells that another box has taken its id.

JSON, one object (times UTC, ISO 8601 with milliseconds)::

    {"schema": 1, "id": "gw02", "state": "online", "instance": "5f0c2a9e71d4", "host": "box-7",
     "version": "0.1.0", "started": "...Z", "ts": "...Z", "uptime_s": 3600.2, "status_interval_s": 10.0,
     "config_hash": "3068f009c72f", "devices": {"total": 10, "ok": 9, "bad": 1, "bad_names": ["line3.capper"]},
     "backlog": {"samples": 0, "oldest_s": 0.0}, "last_delivery": "...Z"}

``state`` is ``online`` (birth and heartbeat) or ``offline`` (the last will, and a clean stop). ``instance``
is new with every start of the process: two messages with one ``id`` and different instances are two boxes
(or two runs) claiming the same shard.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from gateway.status import iso

SCHEMA = 1
State = Literal["online", "offline"]


def _ns(text: object, what: str) -> int:
    if not isinstance(text, str):
        raise ValueError(f"{what}: expected an ISO 8601 time")
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{what}: {text!r} is not an ISO 8601 time") from None
    return round(when.timestamp() * 1e9)


@dataclass(frozen=True, slots=True)
class GatewayStatus:
    id: str
    state: State
    instance: str
    host: str
    version: str
    started_ns: int
    ts_ns: int
    config_hash: str
    status_interval: float = 10.0
    devices_total: int = 0
    devices_ok: int = 0
    devices_bad: int = 0
    bad_names: tuple[str, ...] = ()
    backlog: int = 0
    backlog_age_s: float = 0.0
    last_delivery_ns: int | None = None

    @property
    def uptime_s(self) -> float:
        return max(0.0, (self.ts_ns - self.started_ns) / 1e9)

    def to_json(self) -> bytes:
        body: dict[str, Any] = {
            "schema": SCHEMA, "id": self.id, "state": self.state, "instance": self.instance, "host": self.host,
            "version": self.version, "started": iso(self.started_ns), "ts": iso(self.ts_ns),
            "uptime_s": round(self.uptime_s, 1), "status_interval_s": self.status_interval,
            "config_hash": self.config_hash,
            "devices": {"total": self.devices_total, "ok": self.devices_ok, "bad": self.devices_bad,
                        "bad_names": list(self.bad_names)},
            "backlog": {"samples": self.backlog, "oldest_s": round(self.backlog_age_s, 1)},
            "last_delivery": iso(self.last_delivery_ns) if self.last_delivery_ns else None,
        }
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def parse(cls, payload: bytes) -> GatewayStatus:
        """A status message; ValueError says what is wrong with one that is not (an older gateway's plain
        ``online``, a foreign publisher)."""
        try:
            body = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError):
            text = payload[:20].decode(errors="replace")
            raise ValueError(f"not a JSON status message: {text!r}") from None
        if not isinstance(body, dict):
            raise ValueError("not a JSON object")
        if not isinstance(body.get("id"), str) or not isinstance(body.get("instance"), str):
            raise ValueError("no id or instance")
        state = body.get("state")
        if state not in ("online", "offline"):
            raise ValueError(f"state {state!r} is neither online nor offline")
        devices = body.get("devices")
        devices = devices if isinstance(devices, dict) else {}
        backlog = body.get("backlog")
        backlog = backlog if isinstance(backlog, dict) else {}
        last = body.get("last_delivery")
        try:
            return cls(
                id=body["id"], state=state, instance=body["instance"], host=str(body.get("host", "")),
                version=str(body.get("version", "")), started_ns=_ns(body.get("started"), "started"),
                ts_ns=_ns(body.get("ts"), "ts"), config_hash=str(body.get("config_hash", "")),
                status_interval=float(body.get("status_interval_s", 10.0)),
                devices_total=int(devices.get("total", 0)), devices_ok=int(devices.get("ok", 0)),
                devices_bad=int(devices.get("bad", 0)),
                bad_names=tuple(str(n) for n in devices.get("bad_names", ()) or ()),
                backlog=int(backlog.get("samples", 0)), backlog_age_s=float(backlog.get("oldest_s", 0.0)),
                last_delivery_ns=_ns(last, "last_delivery") if last is not None else None,
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"malformed status message: {exc}") from None


@dataclass(frozen=True, slots=True)
class StatusQuery:
    """What ``fleet status`` asks a broker for: the retained messages on ``topics`` (filters)."""

    host: str
    port: int
    topics: tuple[str, ...]
    timeout: float = 5.0
    """Longest wait; the read ends earlier once every ``expect``ed topic answered, or messages stopped."""
    expect: frozenset[str] = frozenset()
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    """TLS with this CA (PEM); None: plain TCP."""
