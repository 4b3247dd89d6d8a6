"""The shipped bottling-line config against its line run 10x fast: the capper's scheduled fault (code 302)
is an active alarm with its start time and then clears, both as samples in the store; the filler's frozen
temperature turns UNCERTAIN (stale) while it is frozen; machine states carry their words."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from connectors.sqlite.query import query_points
from gateway.config.loader import load_config
from gateway.model import Quality
from gateway.runtime import Runtime
from gateway.status_codes import UNCERTAIN_LAST_USABLE_VALUE
from simulators.line.model import LineModel
from simulators.line.scenario import load_scenario
from simulators.line.server import LineServer, Placement
from simulators.scenarios import scenario_path
from tests.servers import free_port
from tests.waiting import until

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
SPEED = 10.0


def _tag(runtime: Runtime, source: str, device: str, tag: str) -> dict[str, Any] | None:
    body = runtime.board.tags(f"{source}.{device}.{tag}")
    return next((t for t in body["tags"] if (t["device"], t["tag"]) == (device, tag)), None)


@pytest.mark.timeout(120)
async def test_scheduled_fault_is_an_alarm_and_a_frozen_value_turns_stale(tmp_path: Path) -> None:
    scenario = load_scenario(scenario_path("bottling-line"))
    model = LineModel(scenario)
    mb, ua = free_port(), free_port()
    placement = Placement(modbus_port=mb, opcua_port=ua, namespace=scenario.opcua.namespace,
                          path=scenario.opcua.path, folder=scenario.opcua.folder)
    line = LineServer(model, placement, next_time=model.next_time, speed=SPEED)
    text = (REPO / "configs" / "bottling-gateway.yaml").read_text()
    assert "stale_after: 20s" in text and "alarm: [{not_equals: 0" in text  # what the shipped config says
    text = text.replace(f"port: {scenario.modbus.port}", f"port: {mb}").replace(f":{scenario.opcua.port}/", f":{ua}/")
    # the freeze lasts 60 s of line time, 6 s here: a shorter stale_after, and a faster subscription
    text = text.replace("stale_after: 20s", "stale_after: 2s")
    text = text.replace("publishing_interval: 1s", "publishing_interval: 200ms")
    text = text.replace("sampling_interval: 500ms", "sampling_interval: 100ms")
    text = text.replace("./data/bottling-line", str(tmp_path / "data")) + "\nhttp: {port: 0}\n"
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    runtime = Runtime(load_config(path, env={}))
    stop = asyncio.Event()
    await line.start()
    task = asyncio.create_task(runtime.run(stop))
    try:
        state = await until(lambda: (t := _tag(runtime, "line_opcua", "capper", "state")) and t.get("state") and t,
                            timeout=30, what="the capper's state with its word")
        assert (state["value"], state["state"]) == (1, "running")

        # capper fault from 90 s to 135 s of line time (9.0 to 13.5 s here)
        alarm = await until(lambda: next((a for a in runtime.board.alarms() if a["device"] == "capper"), None),
                            timeout=30, what="the capper's fault alarm")
        assert (alarm["source"], alarm["tag"], alarm["severity"], alarm["text"], alarm["value"]) == (
            "line_opcua", "alarm_code", "high", "machine fault", 302)
        assert model.time >= 89.0
        assert alarm["since"].endswith("Z") and alarm["duration_s"] >= 0
        _, status = runtime.board.health()
        assert status["alarms"][0]["device"] == "capper"
        fault_state = await until(lambda: (t := _tag(runtime, "line_opcua", "capper", "state")) and
                                  t.get("state") == "fault" and t, timeout=10, what="the capper's state word fault")
        assert fault_state["value"] == 4

        # the frozen filler temperature, 150 s to 210 s of line time
        stale = await until(lambda: (t := _tag(runtime, "line_opcua", "filler", "fill_temp")) and t.get("stale") and t,
                            timeout=30, what="the filler's temperature flagged stale")
        assert (stale["quality"], stale["status"]) == ("uncertain", UNCERTAIN_LAST_USABLE_VALUE)
        assert not [a for a in runtime.board.alarms() if a["device"] == "capper"]  # cleared at 135 s
        thawed = await until(lambda: (t := _tag(runtime, "line_opcua", "filler", "fill_temp")) and
                             not t.get("stale") and t["quality"] == "good" and t, timeout=30,
                             what="the filler's temperature moving again")
        assert model.time >= 209.0 and thawed["status"] == 0
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await line.stop()

    points = query_points(tmp_path / "data" / "store.db", source="line_opcua")
    alarms = [p.value for p in points if (p.device, p.tag) == ("capper", "alarm_code.alarm")]
    assert alarms[:2] == [3, 0]  # raised (high), cleared: both reached the store through the spool
    temps = [(p.quality, p.status) for p in points if (p.device, p.tag) == ("filler", "fill_temp")]
    assert (Quality.UNCERTAIN, UNCERTAIN_LAST_USABLE_VALUE) in temps
    assert temps[-1] == (Quality.GOOD, 0)


@pytest.mark.timeout(150)
async def test_each_scheduled_fault_shows_on_the_page_as_what_it_is(tmp_path: Path) -> None:
    """The shipped line config against the bottling line at 10x through its first 5 min: the capper's fault is
    an alarm, the labeller offline, the filler's temperature frozen, the power meter answers exceptions, the
    conveyor replies slowly, the OPC-UA server restarts; the page in Chromium shows each."""
    from tests.webdriver import Browser

    scenario = load_scenario(scenario_path("bottling-line"))
    model = LineModel(scenario)
    mb, ua = free_port(), free_port()
    placement = Placement(modbus_port=mb, opcua_port=ua, namespace=scenario.opcua.namespace,
                          path=scenario.opcua.path, folder=scenario.opcua.folder)
    line = LineServer(model, placement, next_time=model.next_time, speed=SPEED)
    text = (REPO / "configs" / "bottling-gateway.yaml").read_text()
    text = text.replace(f"port: {scenario.modbus.port}", f"port: {mb}").replace(f":{scenario.opcua.port}/", f":{ua}/")
    text = text.replace("stale_after: 20s", "stale_after: 2s")
    text = text.replace("publishing_interval: 1s", "publishing_interval: 200ms")
    text = text.replace("sampling_interval: 500ms", "sampling_interval: 100ms")
    text = text.replace("\n    interval: 1s", "\n    interval: 200ms")  # the Modbus poll
    text = text.replace("./data/bottling-line", str(tmp_path / "data")) + "\nhttp: {port: 0, device_grace: 0s}\n"
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    runtime = Runtime(load_config(path, env={}))
    stop = asyncio.Event()
    browser = Browser()
    await line.start()
    task = asyncio.create_task(runtime.run(stop))
    seen_api: dict[str, set[str]] = {}
    seen_page: dict[str, set[str]] = {}
    alarms_page: set[str] = set()
    frozen_page: set[str] = set()
    page_js = ("return {devices: [...document.querySelectorAll('#devices tbody tr')].map(r => [r.dataset.device, "
               "r.className]), alarms: [...document.querySelectorAll('#alarms tbody tr')].map(r => r.dataset.alarm), "
               "frozen: [...document.querySelectorAll('#tags tbody tr')].filter(r => r.querySelector('.stale'))"
               ".map(r => r.dataset.tag)}")
    try:
        await asyncio.wait_for(runtime.started.wait(), 10)
        assert runtime.http is not None
        await asyncio.to_thread(browser.open, f"http://127.0.0.1:{runtime.http.port}/")
        browser.js("const f = document.getElementById('filter'); f.value = 'fill_temp'; "
                   "f.dispatchEvent(new Event('input'))")  # the frozen tag's row on the first page
        while model.time < 312:  # past the OPC-UA restart at 5 min (and back)
            for d in runtime.board.devices():
                seen_api.setdefault(d["device"], set()).add(d["state"])
            page = await asyncio.to_thread(browser.js, page_js)
            for device, cls in page["devices"]:
                seen_page.setdefault(device.split(".")[1], set()).add(cls.removeprefix("state-"))
            alarms_page.update(page["alarms"])
            frozen_page.update(page["frozen"])
            await asyncio.sleep(0.1)
        await asyncio.to_thread(browser.screenshot, tmp_path / "page.png")
    finally:
        browser.close()
        stop.set()
        await asyncio.wait_for(task, 30)
        await line.stop()
    # what the page showed, each fault as what it is
    assert "line_opcua.capper.alarm_code" in alarms_page, alarms_page
    assert "offline" in seen_page["labeller"], seen_page
    assert "line_opcua.filler.fill_temp" in frozen_page, frozen_page
    assert "exception" in seen_page["power_meter"], seen_page
    assert "slow" in seen_page["conveyor"], seen_page
    # the OPC-UA restart: its machines' link down, then back (the page refreshes each second: the API says it)
    assert "link_down" in seen_api["filler"] and "link_down" in seen_api["capper"], seen_api
