"""CSV exports of a line's points: the Modbus register map and the OPC-UA node list, read like a datasheet.

Register map columns: machine, unit_id, tag, table, address (0-based, as the gateway config takes it),
datasheet_address (coil 00001+, discrete input 10001+, input 30001+, holding 40001+; six digits from
address 9999 on), type, order, registers, unit, access, description.
Node list columns: machine, tag, node_id (``nsu=<namespace>;s=<machine>.<tag>``), browse_path
(``Objects/<folder>/<machine>/<tag>``, all browse names in the scenario's namespace), data_type, unit,
access, description.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

from connectors.modbus.config import BIT_TABLES, Table
from simulators.line.points import Point
from simulators.line.scenario import LineScenario

REGISTER_MAP_COLUMNS = (
    "machine", "unit_id", "tag", "table", "address", "datasheet_address", "type", "order", "registers", "unit",
    "access", "description",
)
NODE_LIST_COLUMNS = ("machine", "tag", "node_id", "browse_path", "data_type", "unit", "access", "description")

_PREFIX: dict[Table, int] = {"coil": 0, "discrete_input": 1, "input": 3, "holding": 4}


def datasheet_address(table: Table, address: int) -> str:
    """The 1-based "Modicon" notation: input 0 -> 30001; six digits (300001) once five do not fit."""
    number = address + 1
    if number <= 9999:
        return f"{_PREFIX[table] * 10000 + number:05d}"
    return f"{_PREFIX[table] * 100000 + number:06d}"


def _access(p: Point) -> str:
    return "read-write" if p.writable else "read"


def register_map_rows(points: Iterable[Point]) -> list[dict[str, str]]:
    """One row per point, by unit id, table and address (the order a datasheet lists them)."""
    table_order = {t: i for i, t in enumerate(("coil", "discrete_input", "input", "holding"))}
    rows = sorted(points, key=lambda p: (p.unit_id, table_order[p.table], p.address))
    return [
        {
            "machine": p.machine,
            "unit_id": str(p.unit_id),
            "tag": p.name,
            "table": p.table,
            "address": str(p.address),
            "datasheet_address": datasheet_address(p.table, p.address),
            "type": p.mtype,
            "order": "" if p.table in BIT_TABLES else p.order,
            "registers": str(p.registers),
            "unit": p.unit or "",
            "access": _access(p),
            "description": p.description,
        }
        for p in rows
    ]


def node_list_rows(scenario: LineScenario, points: Iterable[Point]) -> list[dict[str, str]]:
    """One row per point, in scenario order (machine by machine, as the address space shows them)."""
    return node_rows(points, namespace=scenario.opcua.namespace, folder=scenario.opcua.folder)


def node_rows(points: Iterable[Point], *, namespace: str, folder: str | None) -> list[dict[str, str]]:
    """``node_list_rows`` without a scenario (a replayed recording); no folder: machines right under Objects."""
    parent = "Objects" if folder is None else f"Objects/{folder}"
    return [
        {
            "machine": p.machine,
            "tag": p.name,
            "node_id": f"nsu={namespace};s={p.machine}.{p.name}",
            "browse_path": f"{parent}/{p.machine}/{p.name}",
            "data_type": p.opcua_type,
            "unit": p.unit or "",
            "access": _access(p),
            "description": p.description,
        }
        for p in points
    ]


def _write(path: Path, columns: tuple[str, ...], rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def write_register_map(points: Iterable[Point], path: Path) -> None:
    _write(path, REGISTER_MAP_COLUMNS, register_map_rows(points))


def write_node_list(scenario: LineScenario, points: Iterable[Point], path: Path) -> None:
    _write(path, NODE_LIST_COLUMNS, node_list_rows(scenario, points))


def write_nodes(points: Iterable[Point], path: Path, *, namespace: str, folder: str | None) -> None:
    """``write_node_list`` without a scenario (a replayed recording)."""
    _write(path, NODE_LIST_COLUMNS, node_rows(points, namespace=namespace, folder=folder))
