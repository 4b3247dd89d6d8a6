"""The status page in headless Chromium: live values change, a device whose simulator stops turns red, and the
tag table stays usable with 10,000 tags (filter, paging). A screenshot is kept in test-artifacts/."""

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
