"""The status page in headless Chromium: live values change, a device whose link drops turns red, and the
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
from tests import fakes
from tests.fakes import ToggleSource
from tests.webdriver import Browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

DEVICE_STATES = "return [...document.querySelectorAll('#devices tbody tr')].map(r => [r.dataset.device, r.className])"
TAG_VALUE = ("const r = document.querySelector(`#tags tr[data-tag='${arguments[0]}'] td.value`); "
             "return r && r.textContent")


@pytest.fixture
def fake_plugins() -> Iterator[None]:
    yield from fakes.install()


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
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(yaml.safe_dump({
        "data_dir": str(tmp_path / "data"), "http": {"port": 0, "device_grace": "0s"},
        "sources": {
            "line": {"type": "toggle", "devices": ["filler", "capper"], "interval": 0.2},
            "bulk": {"type": "toggle", "devices": [f"plc{i}" for i in range(10)], "tags": 1000, "interval": 1.0},
        },
        "sinks": {"rec": {"type": "recording"}},
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
        browser.js("const f = document.getElementById('filter'); f.value = 'line.'; "
                   "f.dispatchEvent(new Event('input'))")
        await eventually(lambda: browser.js("return document.getElementById('page').textContent") == "1\u20132 of 2")

        # Live values: the filler's counter moves on screen.
        first = await eventually(lambda: browser.js(TAG_VALUE, "line.filler.v"))
        await eventually(lambda: browser.js(TAG_VALUE, "line.filler.v") not in (None, first))

        # The capper's link drops: its row turns red (state-down), the filler stays green.
        ToggleSource.down = {"capper"}
        states = await eventually(lambda: dict(browser.js(DEVICE_STATES)).get("line.capper") == "state-down"
                                  and dict(browser.js(DEVICE_STATES)))
        assert states["line.filler"] == "state-ok"
        assert browser.js("return getComputedStyle(document.querySelector(\"tr[data-device='line.capper']\"))"
                          ".backgroundColor") == "rgb(255, 235, 233)"
        assert browser.js("return document.getElementById('health').textContent") == "unhealthy"
        await asyncio.to_thread(browser.screenshot, ARTIFACTS / "status-page.png")
        assert (ARTIFACTS / "status-page.png").stat().st_size > 10_000
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
