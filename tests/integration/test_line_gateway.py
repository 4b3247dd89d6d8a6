"""The shipped gateway config of a shipped line (configs/cnc-gateway.yaml against the cnc-cell scenario),
run by the real runtime against the line served in-process: every tag arrives GOOD with the line's value,
and a write through the gateway lands in the line and shows on the other protocol."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import pytest

from gateway.config.loader import load_config
from gateway.model import Quality
from gateway.runtime import Runtime
from simulators.line.model import LineModel
from simulators.line.scenario import load_scenario
from simulators.line.server import LineServer, Placement
from simulators.scenarios import scenario_path
from tests.servers import free_port

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


class Clock:
    t = 0.0

    def __call__(self) -> float:
        return self.t


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-9)
    return bool(a == b)


@pytest.mark.timeout(90)
async def test_cnc_gateway_config_collects_every_tag_of_the_cell(tmp_path: Path) -> None:
    scenario = load_scenario(scenario_path("cnc-cell"))
    model = LineModel(scenario)
    clock = Clock()
    mb, ua = free_port(), free_port()
    placement = Placement(modbus_port=mb, opcua_port=ua, namespace=scenario.opcua.namespace,
                          path=scenario.opcua.path, folder=scenario.opcua.folder)
    line = LineServer(model, placement, next_time=lambda: None, clock=clock)  # the line stands still
    clock.t = 30.0  # into the run: spindles turning, counters counting
    await line.start()
    text = (REPO / "configs" / "cnc-gateway.yaml").read_text()
    text = text.replace(f"port: {scenario.modbus.port}", f"port: {mb}").replace(f":{scenario.opcua.port}/", f":{ua}/")
    text = text.replace("./data/cnc-cell", str(tmp_path / "data")).replace("port: 8751", "port: 0")
    path = tmp_path / "cnc-gateway.yaml"
    path.write_text(text)
    runtime = Runtime(load_config(path, env={}))
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    points = {(p.machine, p.name): p for p in model.points}
    try:
        deadline = asyncio.get_running_loop().time() + 30

        def collected() -> dict[tuple[str, str], Any]:
            return {k: s for tags in runtime.live.by_source.values() for k, s in tags.items()}

        while asyncio.get_running_loop().time() < deadline:
            got = collected()
            if set(got) == set(points) and all(
                    s.quality is Quality.GOOD and _close(s.value, model.values[points[k].index])
                    for k, s in got.items()):
                break
            await asyncio.sleep(0.2)
        got = collected()
        assert set(got) == set(points)
        wrong = {k: (s.value, s.quality, model.values[points[k].index]) for k, s in got.items()
                 if s.quality is not Quality.GOOD or not _close(s.value, model.values[points[k].index])}
        assert not wrong
        assert got["cnc_1", "spindle_speed"].value > 0 and got["cnc_1", "program"].value  # a running machine

        # a write through the gateway (Modbus, the loader's override) lands in the line; OPC-UA shows it
        await runtime.write_tag("cell_modbus", "loader", "speed_override", 55)
        assert model.values[points["loader", "speed_override"].index] == 55
        await line.step()
        assert line.opcua.current("loader.speed_override") == 55
        # and over OPC-UA (a CNC's feed override): the line takes it on its next step; Modbus then reads it
        await runtime.write_tag("cell_opcua", "cnc_2", "feed_override", 120)
        await line.step()
        assert model.values[points["cnc_2", "feed_override"].index] == 120
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await line.stop()
