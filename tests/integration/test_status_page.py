"""The status page in headless Chromium: live values change, a device whose simulator stops turns red, the
tag table stays usable with 10,000 tags (filter, paging); an alarm appears on top and clears, a frozen value
is flagged, values show their state words. Screenshots are kept in test-artifacts/."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config.loader import load_config
from gateway.runtime import Runtime
from simulators.modbus.config import SimulatorConfig
from simulators.modbus.server import ModbusSimulator
from tests.servers import free_port
from tests.webdriver import Browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

DEVICE_STATES = "return [...document.querySelectorAll('#devices tbody tr')].map(r => [r.dataset.device, r.className])"
TAG_VALUE = ("const r = document.querySelector(`#tags tr[data-tag='${arguments[0]}'] td.value`); "
             "return r && r.textContent")


@pytest.fixture
def browser() -> Iterator[Browser]:
    b = Browser()
    try:
        yield b
    finally:
        b.close()


async def eventually(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(check)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("page never showed the expected state")
        await asyncio.sleep(0.2)


@pytest.mark.timeout(120)
async def test_status_page_live_values_red_device_and_10k_tags(
    tmp_path: Path, fake_plugins: None, browser: Browser
) -> None:
    # Two simulated PLCs (real Modbus servers), one per machine, plus 10,000 tags of bulk data.
    sims: dict[str, ModbusSimulator] = {}
    sources: dict[str, Any] = {}
    for machine, tag in (("filler", "speed"), ("capper", "torque")):
        port = free_port()
        sims[machine] = ModbusSimulator(SimulatorConfig.model_validate({"devices": {machine: {"unit": 1, "tags": [
            {"name": tag, "address": 0, "type": "int16", "signal": "counter"}]}}}), port=port)
        await sims[machine].start()
        sources[f"{machine}_plc"] = {
            "type": "modbus", "host": "127.0.0.1", "port": port, "interval": "200ms", "timeout": "300ms",
            "reconnect_initial": "100ms", "reconnect_max": "300ms",
            "devices": {machine: {"unit": 1, "tags": [{"name": tag, "address": 0, "type": "int16"}]}}}
    sources["bulk"] = {"type": "toggle", "devices": [f"plc{i}" for i in range(10)], "tags": 1000, "interval": 1.0}
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(yaml.safe_dump({
        "data_dir": str(tmp_path / "data"), "http": {"port": 0, "device_grace": "0s"},
        "sources": sources, "sinks": {"rec": {"type": "recording"}},
    }))
    runtime = Runtime(load_config(cfg))
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    try:
        await asyncio.wait_for(runtime.started.wait(), 10)
        assert runtime.http is not None
        await asyncio.to_thread(browser.open, f"http://127.0.0.1:{runtime.http.port}/")

        # 10,000 tags: one page of 100 rows, paging and the filter box work.
        await eventually(lambda: browser.js("return document.getElementById('page').textContent")
                         == "1\u2013100 of 10002")
        assert browser.js("return document.querySelectorAll('#tags tbody tr').length") == 100
        browser.js("const f = document.getElementById('filter'); f.value = '_plc.'; "
                   "f.dispatchEvent(new Event('input'))")
        await eventually(lambda: browser.js("return document.getElementById('page').textContent") == "1\u20132 of 2")

        # Live values: the filler's counter moves on screen.
        first = await eventually(lambda: browser.js(TAG_VALUE, "filler_plc.filler.speed"))
        await eventually(lambda: browser.js(TAG_VALUE, "filler_plc.filler.speed") not in (None, first))

        # The capper's simulator stops: its row turns red (state-link_down), the filler stays green.
        await sims["capper"].stop()
        states = await eventually(lambda: dict(browser.js(DEVICE_STATES)).get("capper_plc.capper") == "state-link_down"
                                  and dict(browser.js(DEVICE_STATES)))
        assert states["filler_plc.filler"] == "state-ok"
        assert browser.js("return getComputedStyle(document.querySelector(\"tr[data-device='capper_plc.capper']\"))"
                          ".backgroundColor") == "rgb(255, 235, 233)"
        assert browser.js("return document.getElementById('health').textContent") == "unhealthy"
        await asyncio.to_thread(browser.screenshot, ARTIFACTS / "status-page.png")
        assert (ARTIFACTS / "status-page.png").stat().st_size > 10_000
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        await sims["filler"].stop()


CHART = ("const svg = document.querySelector('#chart-svg svg'); if (!svg) return null; "
         "const line = svg.querySelector('polyline.mean'); "
         "return {title: document.getElementById('chart-title').textContent, "
         "unit: svg.querySelector('text.unit').textContent, ticks: svg.querySelectorAll('text.v-tick').length, "
         "points: Number(svg.dataset.points), line_points: line ? line.points.numberOfItems : 0}")
SWIPE = ("const svg = document.querySelector('#chart-svg svg'), b = svg.getBoundingClientRect(); "
         "const at = (f) => ({clientX: b.left + f * b.width, clientY: b.top + b.height / 2, bubbles: true, "
         "pointerId: 7, pointerType: 'touch'}); "
         "svg.dispatchEvent(new PointerEvent('pointerdown', at(arguments[0]))); "
         "svg.dispatchEvent(new PointerEvent('pointerup', at(arguments[1])))")
SPAN = "const s = document.querySelector('#chart-svg svg'); return s && s.dataset.until - s.dataset.since"
ALARM_ROWS = ("return [...document.querySelectorAll('#alarms tbody tr')].map(r => [r.dataset.alarm, "
              "r.querySelector('td.severity').textContent, r.cells[3].textContent])")
TAG_CELLS = ("const r = document.querySelector(`#tags tr[data-tag='${arguments[0]}']`); "
             "return r && [r.querySelector('td.value').textContent, r.querySelector('td.quality').textContent]")


@pytest.mark.timeout(120)
async def test_alarm_appears_and_clears_a_frozen_value_and_state_words(
    tmp_path: Path, fake_plugins: None, browser: Browser
) -> None:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(yaml.safe_dump({
        "data_dir": str(tmp_path / "data"), "http": {"port": 0, "device_grace": "0s"},
        "sources": {"line": {"type": "synthetic", "interval": "200ms", "devices": {"oven": {"tags": [
            {"name": "temp", "signal": "constant", "value": 50.0, "writable": True, "unit": "degC",
             "alarm": [{"above": 80, "severity": "critical", "message": "oven overheating"}]},
            {"name": "state", "signal": "constant", "value": 1, "writable": True,
             "states": {1: "running", 4: "fault"}, "stale_after": "1s"},
        ]}}}},
        "sinks": {"rec": {"type": "recording"}, "store": {"type": "sqlite"}},
    }))
    runtime = Runtime(load_config(cfg))
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    try:
        await asyncio.wait_for(runtime.started.wait(), 10)
        assert runtime.http is not None
        await asyncio.to_thread(browser.open, f"http://127.0.0.1:{runtime.http.port}/")
        # a value with its word; the same value for over a second: frozen, shown on its row
        cells = await eventually(lambda: (c := browser.js(TAG_CELLS, "line.oven.state")) and "frozen" in c[1] and c)
        assert cells[0] == "1 running" and cells[1].startswith("uncertain (UncertainLastUsableValue)")
        assert browser.js("return document.getElementById('no-alarms').hidden") is False

        await runtime.write_tag("line", "oven", "temp", 90.0)
        rows = await eventually(lambda: browser.js(ALARM_ROWS))
        assert rows == [["line.oven.temp", "critical", "oven overheating"]]
        assert browser.js("return document.getElementById('alarm-count').textContent") == "1 active alarm"
        assert browser.js("return getComputedStyle(document.querySelector('#alarms tbody tr')).backgroundColor") \
            == "rgb(255, 235, 233)"
        await runtime.write_tag("line", "oven", "state", 4)  # a new value: no longer frozen, its word follows
        cells = await eventually(lambda: (c := browser.js(TAG_CELLS, "line.oven.state")) and c[0] == "4 fault" and c)
        assert "frozen" not in cells[1] and cells[1] == "good"
        await asyncio.to_thread(browser.screenshot, ARTIFACTS / "status-page-alarm.png")
        assert (ARTIFACTS / "status-page-alarm.png").stat().st_size > 10_000

        # the temperature's history, drawn from the store: clicking its row opens the chart
        browser.js("document.querySelector(`#tags tr[data-tag='line.oven.temp']`).click()")
        drawn = await eventually(lambda: browser.js(CHART))
        assert drawn["title"] == "line.oven.temp" and drawn["unit"] == "degC" and drawn["ticks"] >= 3
        assert drawn["points"] >= 10 and drawn["line_points"] >= 2  # 50 then 90: a line across buckets
        await asyncio.to_thread(browser.screenshot, ARTIFACTS / "status-page-history.png")
        assert (ARTIFACTS / "status-page-history.png").stat().st_size > 10_000
        browser.js("document.querySelector(`#chart-panel button[data-range='1h']`).click()")
        await eventually(lambda: browser.js("return document.querySelector(`#chart-panel button.on`).dataset.range")
                         == "1h")
        assert browser.js(CHART)["points"] >= drawn["points"]
        # a finger's swipe across the chart zooms (pointer events, as a mouse drag does); Escape closes it
        browser.js(SWIPE, 0.5, 0.9)
        span = await eventually(lambda: not browser.js("return document.getElementById('chart-reset').hidden")
                                and browser.js(SPAN))
        assert 1000 <= span < 0.5 * 3600_000
        browser.js("document.dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape'}))")
        assert browser.js("return document.getElementById('chart-panel').hidden") is True

        await runtime.write_tag("line", "oven", "temp", 60.0)
        await eventually(lambda: browser.js("return document.getElementById('no-alarms').hidden") is False)
        assert browser.js(ALARM_ROWS) == []
        assert browser.js("return document.getElementById('alarm-count').textContent") == "no alarms"
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
