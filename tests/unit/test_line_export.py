from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from simulators.line.export import (
    NODE_LIST_COLUMNS,
    REGISTER_MAP_COLUMNS,
    datasheet_address,
    node_list_rows,
    register_map_rows,
    write_node_list,
    write_nodes,
    write_register_map,
)
from simulators.line.model import LineModel
from simulators.line.points import Point, allocate
from simulators.line.scenario import LineScenario, load_scenario
from simulators.scenarios import BUILTIN, scenario_path


def scenario(signals: list[dict[str, Any]], **machine: Any) -> LineScenario:
    return LineScenario.model_validate({"name": "t", "machines": {"m": {"unit": 3, "signals": signals, **machine}}})


def placement(p: Point) -> tuple[str, int, str, str, int, str, str]:
    return p.table, p.address, p.mtype, p.order, p.registers, p.opcua_type, p.kind


# --- allocation --------------------------------------------------------------------------------------


def test_automatic_placement() -> None:
    points = allocate(scenario([
        {"name": "speed", "unit": "m/min", "running": 1, "eu_range": [0, 60]},
        {"name": "good", "kind": "good_count"},
        {"name": "state", "kind": "state"},
        {"name": "alarm", "kind": "alarm"},
        {"name": "alarm_code", "kind": "alarm_code"},
        {"name": "speed_setpoint", "kind": "setpoint", "value": 30, "min": 0, "max": 60},
        {"name": "count_setpoint", "kind": "setpoint", "type": "int", "value": 3},
        {"name": "enable", "kind": "setpoint", "type": "bool", "value": True},
        {"name": "recipe", "kind": "text", "text": "abc"},
        {"name": "tool", "type": "int", "running": 1},
        {"name": "blink", "signal": "square", "low": False, "high": True},
        {"name": "cycles", "signal": "counter"},
    ]))
    got = {p.name: placement(p) for p in points}
    assert got == {
        "speed": ("input", 0, "float32", "ABCD", 2, "Double", "float"),
        "good": ("input", 2, "uint32", "ABCD", 2, "UInt32", "int"),
        "state": ("input", 4, "uint16", "ABCD", 1, "UInt16", "int"),
        "alarm": ("discrete_input", 0, "bool", "ABCD", 1, "Boolean", "bool"),
        "alarm_code": ("input", 5, "uint16", "ABCD", 1, "UInt16", "int"),
        "speed_setpoint": ("holding", 0, "float32", "ABCD", 2, "Double", "float"),
        "count_setpoint": ("holding", 2, "int16", "ABCD", 1, "Int16", "int"),
        "enable": ("coil", 0, "bool", "ABCD", 1, "Boolean", "bool"),
        "recipe": ("input", 6, "string", "ABCD", 2, "String", "str"),
        "tool": ("input", 8, "int16", "ABCD", 1, "Int16", "int"),
        "blink": ("discrete_input", 1, "bool", "ABCD", 1, "Boolean", "bool"),
        "cycles": ("input", 9, "uint32", "ABCD", 2, "UInt32", "int"),
    }
    assert [p.index for p in points] == list(range(len(points)))
    assert {p.unit_id for p in points} == {3}
    speed, setpoint = points[0], points[5]
    assert (speed.low, speed.high, speed.unit, speed.writable) == (0, 60, "m/min", False)
    assert (setpoint.low, setpoint.high, setpoint.writable) == (0, 60, True)
    assert points[2].description.startswith("machine state: 0 offline, 1 running")


def test_explicit_placement_is_respected_and_skipped_over() -> None:
    points = allocate(scenario([
        {"name": "a", "running": 1},
        {"name": "pinned", "running": 1, "modbus": {"address": 1, "type": "float64", "order": "DCBA"},
         "opcua": {"type": "Float"}},
        {"name": "b", "running": 1},
        {"name": "c", "kind": "state"},
        {"name": "d", "kind": "state", "modbus": {"table": "holding"}},
        {"name": "serial", "kind": "text", "text": "SN-1", "modbus": {"address": 100, "length": 4}},
    ], order="CDAB"))
    got = {p.name: placement(p) for p in points}
    assert got["pinned"] == ("input", 1, "float64", "DCBA", 4, "Float", "float")
    assert got["a"] == ("input", 5, "float32", "CDAB", 2, "Double", "float")  # 0..1 would overlap 1..4
    assert got["b"] == ("input", 7, "float32", "CDAB", 2, "Double", "float")
    assert got["c"][:2] == ("input", 9)
    assert got["d"][:2] == ("holding", 0)
    assert got["serial"] == ("input", 100, "string", "ABCD", 4, "String", "str")  # text keeps character order


def test_overlap_and_bad_placements_are_validation_errors() -> None:
    with pytest.raises(ValidationError, match=r"signals.b: input 1..2 overlaps a \(input 0..1\)"):
        scenario([{"name": "a", "running": 1, "modbus": {"address": 0}},
                  {"name": "b", "running": 1, "modbus": {"address": 1}}])
    with pytest.raises(ValidationError, match=r"signals\.sp: a writable signal needs a writable table"):
        scenario([{"name": "sp", "kind": "setpoint", "value": 1, "modbus": {"table": "input"}}])
    with pytest.raises(ValidationError, match=r"signals\.alarm: a bool signal needs type bool"):
        scenario([{"name": "alarm", "kind": "alarm", "modbus": {"type": "uint16"}}])
    with pytest.raises(ValidationError, match=r"signals\.x: type float32 cannot live in the coil table"):
        scenario([{"name": "x", "running": 1, "modbus": {"table": "coil"}}])
    with pytest.raises(ValidationError, match="OPC-UA type Int16 cannot hold a float value"):
        scenario([{"name": "x", "running": 1, "opcua": {"type": "Int16"}}])
    with pytest.raises(ValidationError, match="runs past address 65535"):
        scenario([{"name": "x", "running": 1, "modbus": {"address": 65535}}])


@pytest.mark.parametrize("name", BUILTIN)
def test_shipped_scenarios_allocate_without_overlaps(name: str) -> None:
    line = load_scenario(scenario_path(name))
    points = allocate(line)
    assert 40 <= len(points) <= 100
    used: dict[tuple[int, str], set[int]] = {}
    for p in points:
        cells = set(range(p.address, p.address + p.registers))
        key = (p.unit_id, p.table)
        assert not used.setdefault(key, set()) & cells, f"{p.machine}.{p.name} overlaps"
        used[key] |= cells
    assert len({(p.machine, p.name) for p in points}) == len(points)
    assert {p.machine for p in points} == set(line.machines)


def test_scenarios_run_side_by_side() -> None:
    a, b = (load_scenario(scenario_path(n)) for n in BUILTIN)
    assert a.opcua.port != b.opcua.port and a.modbus.port != b.modbus.port


# --- exports -----------------------------------------------------------------------------------------


def test_datasheet_addresses() -> None:
    assert datasheet_address("coil", 0) == "00001"
    assert datasheet_address("discrete_input", 0) == "10001"
    assert datasheet_address("input", 72) == "30073"
    assert datasheet_address("holding", 0) == "40001"
    assert datasheet_address("input", 9998) == "39999"
    assert datasheet_address("input", 9999) == "310000"
    assert datasheet_address("holding", 65535) == "465536"
    assert datasheet_address("coil", 12345) == "012346"


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def test_register_map_csv(tmp_path: Path) -> None:
    line = load_scenario(scenario_path("bottling-line"))
    points = LineModel(line).points
    path = tmp_path / "registers.csv"
    write_register_map(points, path)
    columns, rows = _read(path)
    assert columns == list(REGISTER_MAP_COLUMNS) == [
        "machine", "unit_id", "tag", "table", "address", "datasheet_address", "type", "order", "registers",
        "unit", "access", "description",
    ]
    assert len(rows) == len(points)
    by_tag = {(r["machine"], r["tag"]): r for r in rows}
    assert by_tag[("power_meter", "energy")] == {
        "machine": "power_meter", "unit_id": "5", "tag": "energy", "table": "input", "address": "72",
        "datasheet_address": "30073", "type": "float64", "order": "CDAB", "registers": "4", "unit": "kWh",
        "access": "read", "description": "integral of power per 3600 s",
    }
    setpoint = by_tag[("conveyor", "speed_setpoint")]
    assert (setpoint["table"], setpoint["datasheet_address"], setpoint["access"]) == ("holding", "40001", "read-write")
    alarm = by_tag[("filler", "alarm")]
    assert (alarm["datasheet_address"], alarm["type"], alarm["order"]) == ("10001", "bool", "")
    units = [int(r["unit_id"]) for r in rows]
    assert units == sorted(units)  # grouped by unit, like a datasheet
    assert rows == register_map_rows(points)


def test_node_list_csv(tmp_path: Path) -> None:
    line = load_scenario(scenario_path("cnc-cell"))
    points = allocate(line)
    path = tmp_path / "nodes.csv"
    write_node_list(line, points, path)
    columns, rows = _read(path)
    assert columns == list(NODE_LIST_COLUMNS) == [
        "machine", "tag", "node_id", "browse_path", "data_type", "unit", "access", "description",
    ]
    assert len(rows) == len(points)
    by_tag = {(r["machine"], r["tag"]): r for r in rows}
    assert by_tag[("cnc_1", "spindle_speed")] == {
        "machine": "cnc_1", "tag": "spindle_speed", "node_id": "nsu=urn:edge-gateway:cnc-cell;s=cnc_1.spindle_speed",
        "browse_path": "Objects/CncCell/cnc_1/spindle_speed", "data_type": "Double", "unit": "rpm",
        "access": "read", "description": "",
    }
    assert by_tag[("cnc_2", "feed_override")]["access"] == "read-write"
    assert by_tag[("cnc_2", "feed_override")]["data_type"] == "Int16"
    assert by_tag[("cnc_1", "coolant_on")]["data_type"] == "Boolean"
    assert by_tag[("cnc_1", "program")]["data_type"] == "String"
    assert rows == node_list_rows(line, points)
    other = tmp_path / "replay-nodes.csv"
    write_nodes(points, other, namespace="urn:x", folder=None)
    _, replayed = _read(other)
    assert replayed[0]["node_id"] == f"nsu=urn:x;s={points[0].machine}.{points[0].name}"
    assert replayed[0]["browse_path"] == f"Objects/{points[0].machine}/{points[0].name}"
