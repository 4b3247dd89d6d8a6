"""The shipped gateway configs for the shipped line scenarios match the lines' register maps and node
lists tag for tag, and cover every point exactly once (like a config written against a datasheet)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.loader import GatewayConfig, load_config
from simulators.line.points import Point, allocate
from simulators.line.scenario import LineScenario, load_scenario
from simulators.scenarios import scenario_path

REPO = Path(__file__).resolve().parents[2]


def _check(cfg: GatewayConfig, scenario: LineScenario, modbus_port: int, opcua_port: int) -> None:
    points = {(p.machine, p.name): p for p in allocate(scenario)}
    seen: list[tuple[str, str]] = []
    for name, src in cfg.sources.items():
        if src.type == "modbus":
            assert src.port == modbus_port, name
            for device, dev in src.devices.items():
                for tag in dev.tags:
                    p: Point = points[device, tag.name]
                    assert dev.unit == p.unit_id, (device, tag.name)
                    assert (tag.table, tag.address, tag.type, tag.length) == (p.table, p.address, p.mtype, p.length)
                    if p.mtype in ("float32", "float64", "int32", "uint32", "int64", "uint64"):
                        assert tag.order == p.order, (device, tag.name)
                    assert tag.writable == p.writable and tag.unit == p.unit, (device, tag.name)
                    seen.append((device, tag.name))
        else:
            assert src.type == "opcua", name
            for device, dev in src.devices.items():
                assert dev.endpoint == f"opc.tcp://127.0.0.1:{opcua_port}{scenario.opcua.path}"
                for tag in dev.tags:
                    p = points[device, tag.name]
                    assert tag.node == f"nsu={scenario.opcua.namespace};s={device}.{tag.name}"
                    assert tag.writable == p.writable and tag.unit == p.unit, (device, tag.name)
                    seen.append((device, tag.name))
    assert sorted(seen) == sorted(points), "every point collected exactly once"
    assert {s.type for s in cfg.sources.values()} == {"modbus", "opcua"}


@pytest.mark.parametrize(("config", "scenario"), [("bottling-gateway.yaml", "bottling-line"),
                                                  ("cnc-gateway.yaml", "cnc-cell")])
def test_shipped_gateway_config_matches_its_line(config: str, scenario: str) -> None:
    line = load_scenario(scenario_path(scenario))
    _check(load_config(REPO / "configs" / config, env={}), line, line.modbus.port, line.opcua.port)
    assert (REPO / "configs" / f"{scenario}.yaml").read_text() == scenario_path(scenario).read_text()


def test_embedded_default_collects_the_bottling_line_it_serves() -> None:
    cfg = load_config(None, env={})
    line = load_scenario(scenario_path(cfg.simulators["line"].scenario))
    embedded = cfg.simulators["line"]
    assert embedded.modbus_port and embedded.opcua_port
    _check(cfg, line, embedded.modbus_port, embedded.opcua_port)
    # the same sources as the standalone config, ports aside
    shipped = load_config(REPO / "configs" / "bottling-gateway.yaml", env={})
    assert list(cfg.sources) == list(shipped.sources)
    for name in cfg.sources:
        a = cfg.sources[name].model_dump(exclude={"port"})
        b = shipped.sources[name].model_dump(exclude={"port"})
        if cfg.sources[name].type == "opcua":
            for dev in (*a["devices"].values(), *b["devices"].values()):
                dev.pop("endpoint")
        assert a == b, name
