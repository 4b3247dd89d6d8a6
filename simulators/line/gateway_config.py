"""A gateway config that collects a served line: every point as a tag, over OPC-UA or Modbus.

``edge-gateway simulate SCENARIO --emit-config FILE`` (and ``--replay``) writes it, so a PoC team has a
working config in one step; the hand-written ones in ``configs/`` show a mixed line instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml

from simulators.line.points import Point
from simulators.line.scenario import STATE_NAMES
from simulators.line.server import Placement

Protocol = Literal["opcua", "modbus"]


def _opcua_source(points: tuple[Point, ...], pl: Placement, interval: str) -> dict[str, Any]:
    endpoint = f"opc.tcp://{pl.host}:{pl.opcua_port}{pl.path}"
    devices: dict[str, Any] = {}
    for p in points:
        dev = devices.setdefault(p.machine, {"endpoint": endpoint, "publishing_interval": interval,
                                             "sampling_interval": "0s", "queue_size": 10, "tags": []})
        tag: dict[str, Any] = {"name": p.name, "node": f"nsu={pl.namespace};s={p.machine}.{p.name}"}
        _common(tag, p)
        dev["tags"].append(tag)
    return {"type": "opcua", "devices": devices}


def _modbus_source(points: tuple[Point, ...], pl: Placement, interval: str) -> dict[str, Any]:
    devices: dict[str, Any] = {}
    for p in points:
        dev = devices.setdefault(p.machine, {"unit": p.unit_id, "tags": []})
        tag: dict[str, Any] = {"name": p.name, "table": p.table, "address": p.address, "type": p.mtype}
        if p.mtype not in ("bool", "int16", "uint16", "string"):
            tag["order"] = p.order
        if p.length is not None:
            tag["length"] = p.length
        _common(tag, p)
        dev["tags"].append(tag)
    return {"type": "modbus", "host": pl.host, "port": pl.modbus_port, "interval": interval, "timeout": "1s",
            "devices": devices}


def _common(tag: dict[str, Any], p: Point) -> None:
    if p.unit:
        tag["unit"] = p.unit
    # what the line's own signals mean, as the hand-written configs say it: state words, fault alarms
    if p.role == "state":
        tag["states"] = dict(STATE_NAMES)
    elif p.role == "alarm_code":
        tag["alarm"] = [{"not_equals": 0, "severity": "high", "message": "machine fault"}]
    if p.writable:
        tag["writable"] = True
        if p.low is not None:
            tag["min"] = p.low
        if p.high is not None:
            tag["max"] = p.high


def gateway_config(points: tuple[Point, ...], pl: Placement, *, protocol: Protocol, source: str,
                   interval: str = "1s") -> dict[str, Any]:
    if protocol == "opcua":
        if pl.opcua_port is None:
            raise ValueError("the line is not served over OPC-UA")
        src = _opcua_source(points, pl, interval)
    else:
        if pl.modbus_port is None:
            raise ValueError("the line is not served over Modbus")
        src = _modbus_source(points, pl, interval)
    return {"sources": {source: src}, "sinks": {"store": {"type": "sqlite"}}}


def write_gateway_config(path: Path, points: tuple[Point, ...], pl: Placement, *, protocol: Protocol,
                         source: str, header: str, interval: str = "1s") -> None:
    body = yaml.safe_dump(gateway_config(points, pl, protocol=protocol, source=source, interval=interval),
                          sort_keys=False, width=120)
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    path.write_text(comment + body, encoding="utf-8")
