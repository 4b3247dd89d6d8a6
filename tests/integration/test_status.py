"""Health, tag API, basic auth and hot reload, over real HTTP against a running runtime."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.live import LiveTags
from gateway.model import Quality, Sample
from gateway.runtime import Runtime
from tests.fakes import RecordingSink, ToggleSource
from tests.gateways import StartGateway, write_config
from tests.gateways import get as get_text
from tests.waiting import until

pytestmark = pytest.mark.usefixtures("fake_plugins")


def base_config(tmp_path: Path, **http: Any) -> dict[str, Any]:
    return {
        "data_dir": str(tmp_path / "data"),
        "http": {"port": 0, "device_grace": "0s", **http},
        "sources": {"line": {"type": "toggle", "devices": ["m1", "m2"]}},
        "sinks": {"rec": {"type": "recording", "max_pending_age": "300ms", "retry_initial": "10ms",
                          "retry_max": "50ms"}},
    }


async def get(runtime: Runtime, path: str, auth: tuple[str, str] | None = None) -> tuple[int, Any]:
    status, _, body = await get_text(runtime, path, auth)
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body


async def test_health_follows_devices_and_sinks(tmp_path: Path, gateway: StartGateway) -> None:
    rt = await gateway(base_config(tmp_path))

    async def health_is(code: int) -> Any:
        status, body = await get(rt, "/health")
        return body if status == code else None

    body = await until(lambda: health_is(200))
    assert body == {"status": "ok", "problems": []}  # public: the status and reasons, nothing else
    _, detail = await get(rt, "/api/status")
    assert {(d["device"], d["state"]) for d in detail["devices"]} == {("m1", "ok"), ("m2", "ok")}

    ToggleSource.down = {"m2"}  # the PLC is unplugged
    body = await until(lambda: health_is(503))
    assert body["problems"] == ["device line.m2: not connected"]
    ToggleSource.down = set()
    await until(lambda: health_is(200))

    RecordingSink.outage = True  # the uplink goes down: backlog ages past max_pending_age
    body = await until(lambda: health_is(503))
    (problem,) = body["problems"]
    assert problem.startswith("sink rec: backlog ") and problem.endswith(" s old (limit 0 s)")
    _, detail = await get(rt, "/api/status")
    (sink,) = detail["sinks"]
    assert sink["failing"] is True and sink["pending"] > 0
    assert sink["last_error"] == "uplink down (test outage)"  # the detail stays behind auth
    RecordingSink.outage = False
    await until(lambda: health_is(200))
    _, detail = await get(rt, "/api/status")
    assert detail["sinks"][0]["failing"] is False


async def test_tags_api_filters_pages_and_keeps_history(tmp_path: Path, gateway: StartGateway) -> None:
    cfg = base_config(tmp_path)
    cfg["sources"]["line"]["devices"] = [f"m{i:02d}" for i in range(30)]
    rt = await gateway(cfg)

    async def all_tags() -> Any:
        _, body = await get(rt, "/api/tags")
        return body if body["total"] == 30 else None

    body = await all_tags() or await until(all_tags)
    first = body["tags"][0]
    assert (first["source"], first["device"], first["tag"], first["quality"]) == ("line", "m00", "v", "good")
    assert isinstance(first["value"], int) and first["ts"].endswith("Z") and first["age_s"] < 5
    _, page = await get(rt, "/api/tags?offset=10&limit=5")
    assert page["total"] == 30 and [t["device"] for t in page["tags"]] == ["m10", "m11", "m12", "m13", "m14"]
    _, filtered = await get(rt, "/api/tags?q=M2")
    assert [t["device"] for t in filtered["tags"]] == [f"m2{i}" for i in range(10)]

    async def history() -> Any:
        _, b = await get(rt, "/api/tags?q=m00&history=1")
        return b if len(b["tags"][0]["history"]) >= 2 else None

    hist = (await until(history))["tags"][0]["history"]
    assert hist == sorted(hist)  # the toggle source counts up: its sparkline rises
    status, page_html = await get(rt, "/")
    assert status == 200 and "<title>Edge gateway status</title>" in page_html


def test_history_keeps_the_last_seconds_of_numeric_values() -> None:
    live = LiveTags(history_points=3)
    live.record("a", [Sample("m", "x", 1.5), Sample("m", "s", "text"), Sample("m", "b", True)])
    live.sample_history()
    live.record("b", [Sample("n", "y", 10)])  # a source and a tag that appear later
    live.record("a", [Sample("m", "x", None, Quality.BAD), Sample("m", "z", 7)])
    live.sample_history()
    for i in range(2):
        live.record("a", [Sample("m", "x", float(i)), Sample("m", "z", 10**400)])  # no double holds 10**400
        live.sample_history()

    def history() -> dict[str, tuple[float, ...]]:
        return {f"{v.source}.{v.sample.tag}": v.history for v in live.select(history=True)[1]}

    assert history() == {"a.b": (1.0, 1.0, 1.0), "a.s": (), "a.x": (0.0, 1.0), "a.z": (7.0,),
                         "b.y": (10.0, 10.0, 10.0)}  # three seconds; BAD, text and too large leave gaps
    assert [v.history for v in live.select("b.n.y")[1]] == [()]  # only on request
    live.forget_source("a")
    live.record("a", [Sample("m", "new", 2.5)])  # takes the old tags' places, not their history
    assert history() == {"a.new": (), "b.y": (10.0, 10.0, 10.0)}
    off = LiveTags(history_points=0)  # no endpoint, nothing kept
    off.record("a", [Sample("m", "x", 1.0)])
    off.sample_history()
    assert [v.history for v in off.select(history=True)[1]] == [()]


async def test_basic_auth_protects_everything_but_health(tmp_path: Path, gateway: StartGateway) -> None:
    rt = await gateway(base_config(tmp_path, username="ops", password="s3cret"))
    assert (await get(rt, "/api/tags"))[0] == 401
    assert (await get(rt, "/metrics", ("ops", "wrong")))[0] == 401
    assert (await get(rt, "/metrics", ("ops", "s3cret")))[0] == 200
    assert (await get(rt, "/api/status", ("ops", "s3cret")))[0] == 200
    assert (await get(rt, "/health"))[0] in (200, 503)


async def test_hot_reload_restarts_only_what_changed(tmp_path: Path, gateway: StartGateway) -> None:
    cfg = base_config(tmp_path)
    cfg["sources"]["line"]["devices"] = ["m1"]
    cfg["sinks"] = {"keep": {"type": "recording"}, "changing": {"type": "recording"}}
    rt = await gateway(cfg)
    keep, changing = RecordingSink.instances["keep"], RecordingSink.instances["changing"]
    await until(lambda: len(keep.received) >= 5)

    # An invalid edit is rejected and the old config keeps running.
    (tmp_path / "gw.yaml").write_text(yaml.safe_dump({**cfg, "sinks": {"keep": {"type": "recording", "bogus": 1}}}))
    assert await rt.reload_from_file() is False
    assert rt.reloads == 0 and rt.config.sinks.keys() == {"keep", "changing"}
    n = len(keep.received)
    await until(lambda: len(keep.received) > n + 5)

    # Add a device, change one sink: the device appears, only that sink restarts.
    cfg2 = {**cfg, "sources": {"line": {"type": "toggle", "devices": ["m1", "m2"]}},
            "sinks": {"keep": {"type": "recording"}, "changing": {"type": "recording", "batch_max_samples": 7}}}
    write_config(tmp_path / "gw.yaml", cfg2)
    assert await rt.reload_from_file() is True
    assert rt.reloads == 1
    assert RecordingSink.instances["keep"] is keep  # untouched
    assert RecordingSink.instances["changing"] is not changing
    await until(lambda: any(s.device == "m2" for s in keep.received))

    # Remove the source so the stream ends, then check the unchanged sink got every sample exactly once.
    write_config(tmp_path / "gw.yaml", {**cfg2, "sources": {}})
    assert await rt.reload_from_file() is True
    taken = rt.metrics.registry.get_sample_value("edgegw_samples_in_total", {"source": "line"})
    await until(lambda: len(keep.received) == taken)
    keys = [(s.device, s.value, s.gateway_ts) for s in keep.received]
    assert len(set(keys)) == len(keys) == taken
    _, tags = await get(rt, "/api/tags")
    assert tags["total"] == 0  # the removed source left the live view


def test_tag_json_names_the_status_and_shows_arrays_and_the_value_age() -> None:
    from gateway.live import TagView
    from gateway.status import _tag_json

    now = 1_800_000_000 * 10**9
    stale = Sample("filler", "recipe", [1, float("nan")], Quality.GOOD, 0, now - 600 * 10**9, now - 10**9, None,
                   now - 599 * 10**9)
    hole = Sample("conveyor", "spare", None, Quality.BAD, 2, now, now, None)
    a = _tag_json(TagView("line", "filler", stale, ()), now, False)
    assert a["value"] == [1, None] and a["value_age_s"] == 600.0 and a["age_s"] == 1.0
    assert a["server_ts"].startswith("2027-01-15T") and "status_name" not in a
    b = _tag_json(TagView("line", "conveyor", hole, ()), now, False)
    assert b["status"] == 2 and b["status_name"] == "IllegalDataAddress"
    insane = Sample("x", "t", 1.0, Quality.GOOD, 0, 10**21, now, None)  # beyond year 9999
    assert _tag_json(TagView("line", "x", insane, ()), now, False)["ts"].startswith("invalid")
