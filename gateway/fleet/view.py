"""``fleet status``: the gateways' retained status messages judged against each other and the plan.

A gateway is flagged when it is ``offline`` (its last will or a clean stop), ``silent`` (online, but its
last status is older than three of its status intervals, at least 30 s: a hung process, or a link the
broker has not noticed is dead yet), ``behind`` (its oldest undelivered sample is older than the threshold,
or it holds a backlog and delivered last longer ago than that), ``config`` (its config hash is not the
plan's), ``missing`` (planned, no status at all), ``not in plan`` or ``unreadable``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from gateway.fleet.message import GatewayStatus
from gateway.fleet.shards import Manifest
from gateway.status import iso

SILENT_INTERVALS = 3
SILENT_MIN = 30.0


@dataclass(slots=True)
class Row:
    id: str
    topic: str | None = None
    status: GatewayStatus | None = None
    problem: str | None = None
    """Why the message on the gateway's topic could not be read."""
    planned: dict[str, Any] | None = None
    flags: list[str] = field(default_factory=list)


def judge(messages: Iterable[tuple[str, bytes]], manifest: Manifest | None, now_ns: int,
          behind_s: float = 60.0) -> list[Row]:
    """One row per gateway: the plan's in its order, then the others by id."""
    planned = manifest.gateways if manifest is not None else {}
    rows: dict[str, Row] = {gid: Row(gid, planned=gw) for gid, gw in planned.items()}
    for topic, payload in messages:  # the last message of a topic counts (retained first, then live ones)
        if not payload:  # a retained message cleared
            continue
        try:
            status = GatewayStatus.parse(payload)
        except ValueError as exc:
            gid = _id_from_topic(topic)
            row = rows.setdefault(gid, Row(gid, planned=planned.get(gid)))
            row.topic, row.status, row.problem = topic, None, str(exc)
            continue
        row = rows.setdefault(status.id, Row(status.id, planned=planned.get(status.id)))
        row.topic, row.status, row.problem = topic, status, None
    for row in rows.values():
        row.flags = _flags(row, manifest is not None, now_ns, behind_s)
    ordered = [rows[g] for g in planned]
    return ordered + sorted((r for g, r in rows.items() if g not in planned), key=lambda r: r.id)


def _id_from_topic(topic: str) -> str:
    parts = topic.split("/")
    return parts[-2] if len(parts) >= 2 and parts[-1] == "status" else topic


def _flags(row: Row, have_plan: bool, now_ns: int, behind_s: float) -> list[str]:
    flags = []
    st = row.status
    if have_plan and row.planned is None:
        flags.append("not in plan")
    if row.problem is not None:
        return [*flags, "unreadable"]
    if st is None:
        return [*flags, "missing"]
    if st.state == "offline":
        flags.append("offline")
    elif (now_ns - st.ts_ns) / 1e9 > max(SILENT_INTERVALS * st.status_interval, SILENT_MIN):
        flags.append("silent")
    delivered_ago = (st.ts_ns - st.last_delivery_ns) / 1e9 if st.last_delivery_ns else None
    if st.backlog_age_s > behind_s or (st.backlog and delivered_ago is not None and delivered_ago > behind_s):
        flags.append("behind")
    if row.planned is not None and st.config_hash != row.planned.get("config_hash"):
        flags.append("config")
    return flags


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def table(rows: list[Row], now_ns: int) -> str:
    head = ["GATEWAY", "STATE", "HOST", "VERSION", "UP", "DEVICES ok/bad/all", "BACKLOG", "DELIVERED", "CONFIG",
            "FLAGS"]
    lines = [head]
    for r in rows:
        st = r.status
        if st is None:
            state = "?" if r.problem else "-"
            lines.append([r.id, state, "-", "-", "-", "-", "-", "-", "-", ", ".join(r.flags) or "ok"])
            continue
        seen = "" if st.state == "online" else f" ({_age((now_ns - st.ts_ns) / 1e9)} ago)"
        backlog = f"{st.backlog}" + (f" ({_age(st.backlog_age_s)})" if st.backlog else "")
        delivered = f"{_age((now_ns - st.last_delivery_ns) / 1e9)} ago" if st.last_delivery_ns else "never"
        config = st.config_hash
        if r.planned is not None:
            config += " = plan" if st.config_hash == r.planned.get("config_hash") else " != plan"
        up = (now_ns - st.started_ns) / 1e9 if st.state == "online" else st.uptime_s  # running for / ran for
        lines.append([r.id, st.state + seen, st.host, st.version, _age(up),
                      f"{st.devices_ok}/{st.devices_bad}/{st.devices_total}", backlog, delivered, config,
                      ", ".join(r.flags) or "ok"])
    widths = [max(len(line[c]) for line in lines) for c in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines)


def as_json(rows: list[Row]) -> str:
    out = []
    for r in rows:
        item: dict[str, Any] = {"id": r.id, "flags": r.flags, "topic": r.topic}
        if r.status is not None:
            item["status"] = json.loads(r.status.to_json())
        if r.problem is not None:
            item["problem"] = r.problem
        if r.planned is not None:
            item["planned_config_hash"] = r.planned.get("config_hash")
            item["planned_devices"] = len(r.planned.get("devices", []))
        out.append(item)
    return json.dumps({"gateways": out, "flagged": sum(1 for r in rows if r.flags), "at": iso(time.time_ns())},
                      indent=2)
