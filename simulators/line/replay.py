"""Replay a recording (``edge-gateway record``) as a line: the recorded values, served again over Modbus
and OPC-UA with the original timing (scaled by the server's speed), optionally looping.

Each recorded device becomes a machine (Modbus unit ids 1, 2, ... in order of first appearance) and each
tag a point typed by what was recorded (the widest type seen: bool < int < float < str): bools as
discrete inputs, ints as int64 and floats as float64 input registers (4 registers, so values come back
exactly), text as a string of registers. A BAD sample keeps the previous value and serves BAD: over
OPC-UA its recorded status code (or Bad), over Modbus exception 4 (device failure) on its registers.
"""

from __future__ import annotations

import itertools
import json
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.model import Quality
from gateway.model import Value as RecordedValue
from simulators.line.model import ActiveFault
from simulators.line.points import Kind, Point

if TYPE_CHECKING:
    from connectors.recording.files import RecordedSample

Value = bool | int | float | str

_RANK: dict[Kind, int] = {"bool": 0, "int": 1, "float": 2, "str": 3}
_GOOD, _UNCERTAIN, _BAD = 0, 0x40000000, 0x80000000
MAX_STRING_REGISTERS = 64


class ReplayError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class _Event:
    offset: float  # seconds from the first recorded sample
    index: int
    value: Value | None
    status: int


def _kind(value: object) -> Kind | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "str"


def _status(quality: Quality, status: int) -> int:
    """The OPC-UA status to serve: the recorded one when it is an OPC-UA code of the same severity."""
    if quality is Quality.GOOD:
        return _GOOD
    severity = _BAD if quality is Quality.BAD else _UNCERTAIN
    return status if status & 0xC0000000 == severity else severity


def _coerce(value: RecordedValue, kind: Kind) -> Value | None:
    if value is None:
        return None
    if isinstance(value, list):  # an array replays as its JSON text: the simulated servers serve scalars
        return json.dumps(value, separators=(",", ":")) if kind == "str" else None
    if kind == "str":
        return str(value)
    if kind == "float":
        return float(value)
    if kind == "int":
        return int(value)
    return bool(value)


class ReplayModel:
    """A ``ServedModel`` (see ``simulators.line.server``) over recorded samples."""

    def __init__(self, samples: Iterable[RecordedSample], *, loop: bool = False, order: str = "ABCD") -> None:
        rows = sorted(samples, key=lambda s: s.time_ns)  # stable: same-time rows keep file order
        if not rows:
            raise ReplayError("the recording holds no samples")
        kinds: dict[tuple[str, str], Kind | None] = {}
        units: dict[tuple[str, str], str | None] = {}
        longest: dict[tuple[str, str], int] = {}
        for s in rows:
            key = (s.device, s.tag)
            k = _kind(s.value)
            seen = kinds.get(key)
            if k is not None and (seen is None or _RANK[k] > _RANK[seen]):
                kinds[key] = k
            else:
                kinds.setdefault(key, seen)
            units.setdefault(key, s.unit)
            if isinstance(s.value, str | list):
                text = s.value if isinstance(s.value, str) else json.dumps(s.value, separators=(",", ":"))
                longest[key] = max(longest.get(key, 0), len(text.encode()))
        devices = list(dict.fromkeys(d for d, _ in kinds))  # in order of appearance; tags by name
        kinds = dict(sorted(kinds.items(), key=lambda kv: (devices.index(kv[0][0]), kv[0][1])))
        if len(devices) > 247:
            raise ReplayError(f"{len(devices)} devices: Modbus has unit ids for 247 (serve with --no-modbus)")
        points: list[Point] = []
        index: dict[tuple[str, str], int] = {}
        next_bit: dict[str, int] = {}
        next_reg: dict[str, int] = {}
        for key, kind in kinds.items():
            device, tag = key
            kind = kind or "float"  # only ever None: serve as a BAD float
            unit_id = devices.index(device) + 1
            if kind == "bool":
                table, mtype, length, width = "discrete_input", "bool", None, 1
                address = next_bit.get(device, 0)
                next_bit[device] = address + 1
            else:
                table = "input"
                if kind == "str":
                    mtype, length = "string", max(1, min(MAX_STRING_REGISTERS, (longest.get(key, 0) + 1) // 2))
                    width = length
                else:
                    mtype, length, width = ("int64" if kind == "int" else "float64"), None, 4
                address = next_reg.get(device, 0)
                next_reg[device] = address + width
                if address + width > 65536:
                    raise ReplayError(f"{device}: too many tags for one Modbus unit's input registers")
            opcua = {"bool": "Boolean", "int": "Int64", "float": "Double", "str": "String"}[kind]
            index[key] = len(points)
            points.append(Point(index=len(points), machine=device, name=tag, kind=kind, unit=units[key],
                                writable=False, description="replayed", unit_id=unit_id, table=table,  # type: ignore[arg-type]
                                address=address, mtype=mtype, order=order, length=length,  # type: ignore[arg-type]
                                opcua_type=opcua, low=None, high=None))  # type: ignore[arg-type]
        self._points = tuple(points)
        first = rows[0].time_ns
        self._events = [
            _Event((s.time_ns - first) / 1e9, index[(s.device, s.tag)],
                   _coerce(s.value, points[index[(s.device, s.tag)]].kind), _status(s.quality, s.status))
            for s in rows
        ]
        defaults: dict[Kind, Value] = {"bool": False, "int": 0, "float": 0.0, "str": ""}
        self._values: list[Value] = [defaults[p.kind] for p in points]
        self.statuses: list[int] = [_BAD] * len(points)  # nothing served yet: BAD until the first sample
        self.loop = loop
        times = sorted({e.offset for e in self._events})
        gaps = [b - a for a, b in itertools.pairwise(times)]
        self.span = times[-1]
        self.period = self.span + (statistics.median(gaps) if gaps else 1.0)  # one loop, incl. the last gap
        self._i = 0
        self._cycle = 0.0  # sim time at which the current pass started
        self._time = 0.0
        self.samples = len(self._events)
        self.passes = 0

    @classmethod
    def from_file(cls, path: Path, *, loop: bool = False) -> ReplayModel:
        from connectors.recording.files import read_recording

        return cls(read_recording(path), loop=loop)

    @property
    def points(self) -> tuple[Point, ...]:
        return self._points

    @property
    def values(self) -> list[Value]:
        return self._values

    @property
    def time(self) -> float:
        return self._time

    @property
    def finished(self) -> bool:
        return not self.loop and self._i >= len(self._events)

    def step_to(self, t: float) -> bool:
        changed = False
        events = self._events
        while True:
            if self._i >= len(events):
                if not self.loop or self._cycle + self.period + events[0].offset > t + 1e-9:
                    break
                self._cycle += self.period
                self._i = 0
                self.passes += 1
            ev = events[self._i]
            if self._cycle + ev.offset > t + 1e-9:
                break
            self._i += 1
            if ev.value is not None:
                self._values[ev.index] = ev.value
            self.statuses[ev.index] = ev.status
            changed = True
        self._time = max(self._time, t)
        return changed

    def next_time(self) -> float | None:
        if self._i < len(self._events):
            return self._cycle + self._events[self._i].offset
        if self.loop:
            return self._cycle + self.period + self._events[0].offset
        return None

    def write(self, index: int, value: Value) -> None:
        raise ValueError("a replay is read-only")

    def active_faults(self) -> list[ActiveFault]:
        return []
