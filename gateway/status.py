"""The gateway's state as people and health checks see it: devices, sinks, tags.

Devices are judged on what their sources report (``Source.health``: the link, the last error and its
reason, error counts) and on what arrived (the last sample of each tag): a device answers when it is
connected and not every one of its tags is BAD. Sinks are judged on backlog age and on the problems they
report, so a quiet line with nothing to send is healthy. Nothing here is read back out of metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import countOf, itemgetter
from typing import Any

from gateway.contracts import HistorySource
from gateway.health import UplinkState
from gateway.live import LiveTags, TagView
from gateway.metrics import Metrics
from gateway.model import Quality, Value
from gateway.status_codes import (
    BAD_COMMUNICATION_ERROR,
    BAD_DECODING_ERROR,
    BAD_NOT_CONNECTED,
    BAD_TIMEOUT,
    status_name,
)
from gateway.values import finite
from gateway.watch import ActiveAlarm


@dataclass(frozen=True, slots=True)
class SinkState:
    name: str
    type: str
    delivered: int
    pending: int
    oldest_pending_age: float
    max_pending_age: float
    last_delivery: float | None  # wall time, s
    failing: bool
    last_error: str | None
    dropped: int = 0
    """Samples this sink will never get (spool overflow, age, disk full), kept across reloads."""
    problems: tuple[str, ...] = ()
    """Short public reasons why the sink is unhealthy now (see ``Sink.health_problems``)."""
    uplink: UplinkState | None = None
    """The uplink endpoint it is on, for sinks that report it (``gateway.contracts.UplinkReport``)."""


def iso(ns: int) -> str:
    try:
        return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):  # a device clock no calendar holds: say so, never fail the page
        return f"invalid ({ns} ns)"


def _ago(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


PROBLEM_STATES = frozenset({"down", "link_down", "timeout", "offline", "exception", "bad"})
"""Device states that make ``/health`` unhealthy; ``slow`` and ``partial`` are shown, not alarmed."""
_LINK_CODES = frozenset({BAD_TIMEOUT, BAD_NOT_CONNECTED, BAD_COMMUNICATION_ERROR, BAD_DECODING_ERROR})
_OFFLINE_CODES = frozenset({0x80310000, 0x800D0000, 0x808D0000, 0x80320000})
"""BadNoCommunication, BadServerNotConnected, BadOutOfService, BadWaitingForInitialData: what an OPC-UA
server (or a gateway in front of the machine) says of a machine it cannot reach."""


_quality = itemgetter(3)  # Sample.quality
_gateway_ts = itemgetter(6)  # Sample.gateway_ts


def _device_answer(status: int) -> bool:
    """A BAD status the device itself answered (a Modbus exception, an OPC-UA server's Bad code), not one
    the gateway set for the link."""
    return status not in _LINK_CODES and status != 0


class StatusBoard:
    def __init__(
        self,
        devices: Callable[[], dict[str, list[str]]],
        sinks: Callable[[], Iterable[SinkState]],
        live: LiveTags,
        metrics: Metrics,
        *,
        device_grace: float,
        started_mono: float | None = None,
        last_drop: Callable[[], float | None] = lambda: None,
        health_window: float = 300.0,
        annotate: Callable[[str, str, str, Value], dict[str, Any]] = lambda *_: {},
        alarms: Callable[[], list[ActiveAlarm]] = list,
    ) -> None:
        self._annotate = annotate
        self._alarms = alarms
        self.history: HistorySource | None = None
        """Where tag histories come from (the embedded store's sink), set by the runtime when it has one."""
        self._devices = devices
        self._sinks = sinks
        self.live = live
        self.metrics = metrics
        self.device_grace = device_grace
        self._last_drop = last_drop
        self.health_window = health_window
        self.started_mono = time.monotonic() if started_mono is None else started_mono

    def devices(self) -> list[dict[str, Any]]:
        reported = self.metrics.health.sources
        running = self.metrics.health.source_running()
        starting = time.monotonic() - self.started_mono < self.device_grace
        now_ns = time.time_ns()
        out = []
        for source, names in sorted(self._devices().items()):
            per_device = self.live.per_device(source)
            source_up = running.get(source, True)
            health = reported.get(source)
            for device in sorted(names):
                last = per_device.get(device, [])
                bad = countOf(map(_quality, last), Quality.BAD)  # C-level: this runs for every tag
                newest = max(map(_gateway_ts, last), default=0)
                dev = health.devices.get(device) if health is not None else None
                slow = (dev is not None and dev.reply_s is not None and dev.slow_after is not None
                        and dev.reply_s > dev.slow_after)
                if not source_up:
                    state, reason = "down", "source restarting after a failure"
                elif dev is not None and (dev.link is False or (dev.link is None and dev.connected is False)):
                    state, reason = "link_down", dev.reason or "not connected"
                elif dev is not None and dev.connected is False:  # the link is up, the device does not answer
                    state, reason = "timeout", dev.reason or "not answering"
                elif not last:
                    state, reason = ("starting", "no data yet") if starting else ("down", "no data")
                elif bad == len(last):
                    codes = {s.status for s in last}
                    code_names = ", ".join(sorted(status_name(c) for c in codes))
                    if codes <= _OFFLINE_CODES:  # a server up, the machine behind it not communicating
                        state = "offline"
                    elif all(_device_answer(c) for c in codes):
                        state = "exception"
                    else:
                        state = "bad"
                    reason = f"all tags BAD ({code_names})"
                elif slow:
                    assert dev is not None and dev.reply_s is not None
                    state, reason = "slow", f"replies take {dev.reply_s:.2g} s (slow above {dev.slow_after:g} s)"
                elif bad:
                    code_names = ", ".join(sorted({status_name(s.status) for s in last if s.quality is Quality.BAD}))
                    state, reason = "partial", f"{bad} of {len(last)} tags BAD ({code_names})"
                else:
                    state, reason = "ok", ""
                out.append({
                    "source": source, "device": device, "state": state, "reason": reason,
                    "tags": len(last), "bad_tags": bad,
                    "last_data_age_s": round((now_ns - newest) / 1e9, 3) if newest else None,
                    "errors": dict(dev.errors) if dev is not None else {},
                    "errors_recent": dev.recent_errors() if dev is not None else {},
                    "reply_ms": round(dev.reply_s * 1000, 1) if dev is not None and dev.reply_s is not None else None,
                    "last_error": dev.last_error if dev is not None and dev.last_error else None,
                    "last_good_read": iso(dev.last_good_ns) if dev is not None and dev.last_good_ns else None,
                })
        return out

    def sinks(self) -> list[dict[str, Any]]:
        out = []
        for st in self._sinks():
            out.append({
                "name": st.name, "type": st.type, "delivered": st.delivered, "pending": st.pending,
                "oldest_pending_age_s": round(st.oldest_pending_age, 3),
                "max_pending_age_s": st.max_pending_age,
                "last_delivery": iso(int(st.last_delivery * 1e9)) if st.last_delivery else None,
                "failing": st.failing, "last_error": st.last_error, "dropped": st.dropped,
                "problems": list(st.problems),
                "healthy": st.oldest_pending_age <= st.max_pending_age and not st.problems,
                "uplink": None if st.uplink is None else {
                    "endpoint": st.uplink.endpoint, "connected": st.uplink.connected,
                    "endpoints": st.uplink.endpoints, "failovers": st.uplink.failovers},
            })
        return out

    def alarms(self) -> list[dict[str, Any]]:
        """The process alarms active now (tag alarm rules), highest severity first: what the line is doing,
        not the gateway's health, so they never turn ``/health`` red."""
        now_ns = time.time_ns()
        return [{"source": a.source, "device": a.device, "tag": a.tag, "severity": a.severity, "text": a.text,
                 "since": iso(a.since_ns), "duration_s": round(max(0, now_ns - a.since_ns) / 1e9, 1),
                 "value": finite(a.value)} for a in self._alarms()]

    def health(self) -> tuple[bool, dict[str, Any]]:
        """The whole picture (``/api/status``): the problems, active alarms, every device and sink in detail."""
        devices = self.devices()
        sinks = self.sinks()
        problems = self._problems(devices, sinks)
        ok = not problems
        return ok, {
            "status": "ok" if ok else "unhealthy",
            "problems": problems,
            "uptime_s": round(time.monotonic() - self.started_mono, 1),
            "alarms": self.alarms(),
            "devices": devices,
            "sinks": sinks,
        }

    def public_health(self) -> tuple[bool, dict[str, Any]]:
        """What an unauthenticated ``/health`` may say: the status and one short reason per unhealthy
        component; no hosts, no errors quoted from uplinks, no data counts."""
        ok, body = self.health()
        return ok, {"status": body["status"], "problems": body["problems"]}

    def _problems(self, devices: list[dict[str, Any]], sinks: list[dict[str, Any]]) -> list[str]:
        problems = [f"device {d['source']}.{d['device']}: {d['reason']}" for d in devices
                    if d["state"] in PROBLEM_STATES]
        for source, health in sorted(self.metrics.health.sources.items()):
            problems += [f"source {source}: {r}" for r in health.problems]
        for s in sinks:
            if s["oldest_pending_age_s"] > s["max_pending_age_s"]:
                problems.append(f"sink {s['name']}: backlog {s['oldest_pending_age_s']:.0f} s old "
                                f"(limit {s['max_pending_age_s']:.0f} s)")
            problems += [f"sink {s['name']}: {p}" for p in s["problems"]]
        dropped = self._last_drop()
        if dropped is not None:
            ago = time.monotonic() - dropped
            if ago <= self.health_window:
                lost = sorted(s["name"] for s in sinks if s["dropped"])
                problems.append(f"data dropped {_ago(ago)} ago" + (f" (sinks: {', '.join(lost)})" if lost else ""))
        return problems

    def tags(self, text: str = "", offset: int = 0, limit: int | None = None,
             history: bool = False) -> dict[str, Any]:
        total, views = self.live.select(text, offset, limit, history)
        now_ns = time.time_ns()
        out = []
        for v in views:
            t = _tag_json(v, now_ns, history)
            t.update(self._annotate(v.source, v.device, v.sample.tag, v.sample.value))
            out.append(t)
        return {"total": total, "offset": offset, "tags": out}


def _tag_json(v: TagView, now_ns: int, history: bool) -> dict[str, Any]:
    s = v.sample
    out: dict[str, Any] = {
        "source": v.source, "device": v.device, "tag": s.tag, "value": finite(s.value), "unit": s.unit,
        "quality": s.quality.label, "status": s.status,
        "ts": iso(s.source_ts or s.gateway_ts), "age_s": round((now_ns - s.gateway_ts) / 1e9, 3),
        # since the device last changed (or stamped) the value: a value a server has not changed for long
        # stays GOOD, and this says how old it is
        "value_age_s": round((now_ns - s.source_ts) / 1e9, 3) if s.source_ts else None,
    }
    if s.status:
        out["status_name"] = status_name(s.status)
    if s.server_ts:
        out["server_ts"] = iso(s.server_ts)
    if history:
        out["history"] = v.history
    return out
