"""The status message, how ``fleet status`` judges a fleet from it, and who owns a gateway id (presence rules)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from connectors.mqtt.presence import Presence
from gateway.fleet.member import FleetMember
from gateway.fleet.message import GatewayStatus
from gateway.fleet.shards import Manifest
from gateway.fleet.view import as_json, judge, table
from gateway.logs import get_logger
from gateway.status import SinkState
from tests.fakes import fleet_member

NOW = 1_795_460_550_000_000_000
S = 1_000_000_000


def status(gid: str = "gw01", **kw: object) -> GatewayStatus:
    base = GatewayStatus(id=gid, state="online", instance="i-" + gid, host="box-" + gid, version="0.1.0",
                         started_ns=NOW - 3600 * S, ts_ns=NOW - 2 * S, config_hash="h-" + gid, devices_total=5,
                         devices_ok=5, last_delivery_ns=NOW - 1 * S)
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def test_the_message_round_trips_and_refuses_what_it_is_not() -> None:
    st = status(devices_ok=4, devices_bad=1, bad_names=("line1.capper",), backlog=120, backlog_age_s=3.25)
    body = json.loads(st.to_json())
    assert body["state"] == "online" and body["uptime_s"] == 3598.0
    assert body["devices"] == {"total": 5, "ok": 4, "bad": 1, "bad_names": ["line1.capper"]}
    assert body["backlog"] == {"samples": 120, "oldest_s": 3.2} and body["ts"].endswith("Z")
    back = GatewayStatus.parse(st.to_json())
    assert back == dataclasses.replace(st, backlog_age_s=3.2)
    for bad in (b"online", b"[]", b'{"id": "x"}', b'{"id": "x", "instance": "i", "state": "up"}'):
        with pytest.raises(ValueError):
            GatewayStatus.parse(bad)


def test_member_counts_devices_and_sinks() -> None:
    devices = [{"source": "l1", "device": d, "state": s} for d, s in
               [("a", "ok"), ("b", "slow"), ("c", "partial"), ("d", "link_down"), ("e", "starting"), ("f", "timeout")]]
    sinks = [SinkState("up", "mqtt", 10, 40, 2.5, 300, 1000.0, False, None),
             SinkState("store", "sqlite", 10, 2, 0.1, 300, 1002.0, False, None)]
    member = FleetMember(lambda: "gw03", lambda: "abc", lambda: devices, lambda: sinks, status_interval=5)
    st = member.status()
    assert (st.id, st.devices_total, st.devices_ok, st.devices_bad) == ("gw03", 6, 3, 2)
    assert st.bad_names == ("l1.d", "l1.f") and st.backlog == 42 and st.backlog_age_s == 2.5
    assert st.last_delivery_ns == 1000 * S and st.status_interval == 5 and st.instance == member.instance


def manifest(*gids: str) -> Manifest:
    return Manifest(Path("plan.json"), {"gateways": {g: {"config_hash": "h-" + g, "devices": ["l.d"]} for g in gids}})


def test_fleet_view_flags() -> None:
    msgs = [
        ("p/gateway/gw01/status", status("gw01").to_json()),
        ("p/gateway/gw02/status", status("gw02", state="offline", ts_ns=NOW - 400 * S).to_json()),
        ("p/gateway/gw03/status", status("gw03", ts_ns=NOW - 31 * S).to_json()),  # 3 intervals of 10 s, and 30 s
        ("p/gateway/gw04/status", status("gw04", backlog=5000, backlog_age_s=90.0).to_json()),
        ("p/gateway/gw05/status", status("gw05", config_hash="other").to_json()),
        ("p/gateway/gw07/status", b"online"),
        ("p/gateway/gw09/status", status("gw09").to_json()),
    ]
    rows = judge(msgs, manifest("gw01", "gw02", "gw03", "gw04", "gw05", "gw06", "gw07"), NOW, behind_s=60)
    flags = {r.id: r.flags for r in rows}
    assert flags == {"gw01": [], "gw02": ["offline"], "gw03": ["silent"], "gw04": ["behind"], "gw05": ["config"],
                     "gw06": ["missing"], "gw07": ["unreadable"], "gw09": ["not in plan"]}
    text = table(rows, NOW)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["GATEWAY", "STATE", "HOST"]
    gw01 = next(line for line in lines if line.startswith("gw01"))
    assert "box-gw01" in gw01 and "5/0/5" in gw01 and "h-gw01 = plan" in gw01 and gw01.endswith("ok")
    assert "offline (7m ago)" in next(line for line in lines if line.startswith("gw02"))
    assert "other != plan" in next(line for line in lines if line.startswith("gw05"))
    body = json.loads(as_json(rows))
    assert body["flagged"] == 7 and body["gateways"][0]["status"]["host"] == "box-gw01"
    # without a plan nothing can be missing or off-plan; a backlog delivered long ago is behind
    late = status("gw04", backlog=10, backlog_age_s=1.0, last_delivery_ns=NOW - 200 * S)
    assert [r.flags for r in judge([("t", late.to_json())], None, NOW)] == [["behind"]]


def test_presence_rules() -> None:
    me = fleet_member("gw02")
    presence = Presence(me, "p/gateway/gw02/status", get_logger("test"))
    mine = me.status()
    older = dataclasses.replace(mine, instance="other", started_ns=me.started_ns - S, host="old-box")
    newer = dataclasses.replace(mine, instance="other", started_ns=me.started_ns + S, host="new-box")
    # rules 2 and 3: another instance online that started later has the id; an older one's status does not
    assert presence.replaced_by(newer.to_json()) == GatewayStatus.parse(newer.to_json())
    assert presence.replaced_by(older.to_json()) is None  # the box we replaced, or its re-sent last words
    assert presence.replaced_by(mine.to_json()) is None  # our own
    assert presence.replaced_by(dataclasses.replace(newer, state="offline").to_json()) is None  # it died
    assert presence.replaced_by(dataclasses.replace(newer, id="gw03").to_json()) is None  # another id
    assert presence.replaced_by(b"online") is None  # an older gateway's plain status: no claim
    # the will of the box we replaced (or a status it re-sent) landing after our birth: ours must be retained again
    assert presence.overwritten(dataclasses.replace(older, state="offline").to_json())
    assert presence.overwritten(older.to_json())
    assert not presence.overwritten(dataclasses.replace(mine, state="offline").to_json())
    assert not presence.overwritten(newer.to_json())  # that one wins: we stand down instead
