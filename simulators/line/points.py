"""Points: one per machine signal, with its Modbus placement and OPC-UA type, allocated from a scenario.

Automatic placement, per machine (= Modbus unit) and in signal order, each table from address 0:

- bool signals (``alarm``...) -> ``discrete_input`` bits (writable ones -> ``coil``), OPC-UA Boolean;
- read-only numbers -> ``input`` registers: floats float32 (OPC-UA Double), counters uint32 (UInt32),
  ``state``/``alarm_code`` uint16 (UInt16), other integers int16 (Int16);
- writable setpoints -> ``holding`` registers (float32/Double, int16/Int16);
- text -> ``input`` (writable: ``holding``) ``string`` of ceil(bytes/2) registers (OPC-UA String).

Numbers take the machine's ``order``, else the scenario's ``modbus.order``; text is ``ABCD`` unless
its override says otherwise.

A signal's ``modbus:`` override (table, address, type, order, length) and ``opcua: {type: ...}`` win;
automatic addresses skip the explicitly placed ones, and explicit placements that overlap each other
are a config error. A register type decides whether a number is an int or a float (an ``int16``
override makes a float signal an integer one).
"""

from __future__ import annotations

from dataclasses import dataclass

from connectors.modbus.codec import DataType, Order, register_count
from connectors.modbus.config import BIT_TABLES, Table
from simulators.line.scenario import (
    FlatCounter,
    GoodCount,
    Kind,
    LineScenario,
    ModbusOverride,
    RejectCount,
    SignalBase,
    TextSignal,
    TotalCount,
)
from simulators.opcua.config import VarType

__all__ = ["Kind", "Point", "allocate", "type_modulus"]

_OPCUA_OF: dict[str, VarType] = {
    "bool": "Boolean", "string": "String", "float32": "Double", "float64": "Double",
    "int16": "Int16", "uint16": "UInt16", "int32": "Int32", "uint32": "UInt32", "int64": "Int64", "uint64": "UInt64",
}
_FLOAT_TYPES = ("float32", "float64")
_INT_OPCUA = ("SByte", "Byte", "Int16", "UInt16", "Int32", "UInt32", "Int64", "UInt64")
_OPCUA_FOR_KIND: dict[Kind, tuple[str, ...]] = {
    "bool": ("Boolean",), "str": ("String",), "float": ("Float", "Double"), "int": (*_INT_OPCUA, "Float", "Double"),
}


@dataclass(frozen=True, slots=True)
class Point:
    index: int
    machine: str
    name: str
    kind: Kind
    unit: str | None
    writable: bool
    description: str
    unit_id: int
    table: Table
    address: int
    mtype: DataType
    order: Order
    length: int | None  # registers of a string, else None
    opcua_type: VarType
    low: float | None  # EU range / setpoint limits, when known
    high: float | None
    role: str = ""  # the signal's kind in the scenario: analog, good_count, setpoint, sine...

    @property
    def registers(self) -> int:
        return register_count(self.mtype, self.length)


def type_modulus(mtype: DataType) -> int | None:
    """Where an integer register type wraps (counters go back to 0 there); None for floats and the rest."""
    bits = {"int16": 15, "uint16": 16, "int32": 31, "uint32": 32, "int64": 63, "uint64": 64}.get(mtype)
    return None if bits is None else 1 << bits


@dataclass(slots=True)
class _Shape:
    signal: SignalBase
    table: Table
    mtype: DataType
    order: Order
    length: int | None
    kind: Kind
    opcua_type: VarType
    explicit: int | None  # the address given in the scenario


def _default_type(s: SignalBase, kind: Kind) -> DataType:
    if kind == "bool":
        return "bool"
    if kind == "str":
        return "string"
    if kind == "float":
        return "float32"
    if isinstance(s, GoodCount | RejectCount | TotalCount):
        return "uint32"
    if isinstance(s, FlatCounter):
        return "int32" if s.start < 0 or s.step < 0 else "uint32"
    if s.role_name() in ("state", "alarm_code"):
        return "uint16"
    return "int16"


def _shape(scenario: LineScenario, machine: str, s: SignalBase) -> _Shape:
    where = f"machines.{machine}.signals.{s.name}"
    ov = s.modbus or ModbusOverride()
    base = s.value_kind()
    writable = s.is_writable()
    mtype: DataType = ov.type or _default_type(s, base)
    if base == "bool":
        default_table: Table = "coil" if writable else "discrete_input"
    else:
        default_table = "holding" if writable else "input"
    table: Table = ov.table or default_table
    if base == "bool" and mtype != "bool":
        raise ValueError(f"{where}: a bool signal needs type bool (in a coil or discrete_input), not {mtype}")
    if base == "str" and mtype != "string":
        raise ValueError(f"{where}: a text signal needs type string, not {mtype}")
    if base in ("int", "float") and mtype in ("bool", "string"):
        raise ValueError(f"{where}: a numeric signal cannot be type {mtype}")
    if (table in BIT_TABLES) != (mtype == "bool"):
        raise ValueError(f"{where}: type {mtype} cannot live in the {table} table")
    if writable and table in ("input", "discrete_input"):
        raise ValueError(f"{where}: a writable signal needs a writable table (holding or coil), not {table}")
    length: int | None = None
    if mtype == "string":
        length = ov.length or (s.registers if isinstance(s, TextSignal) else 1)
        if isinstance(s, TextSignal) and len(s.text.encode()) > 2 * length:
            raise ValueError(f"{where}: text {s.text!r} does not fit {length} registers")
    kind: Kind = base if base in ("bool", "str") else ("float" if mtype in _FLOAT_TYPES else "int")
    opcua_type: VarType = s.opcua.type if s.opcua is not None else _OPCUA_OF[mtype]
    if opcua_type not in _OPCUA_FOR_KIND[kind]:
        raise ValueError(f"{where}: OPC-UA type {opcua_type} cannot hold a {kind} value")
    # text reads in character order on every device we know; the word order is for numbers
    order: Order = ov.order or ("ABCD" if mtype == "string" else None) or scenario.machines[machine].order \
        or scenario.modbus.order
    return _Shape(s, table, mtype, order, length, kind, opcua_type, ov.address)


def allocate(scenario: LineScenario) -> tuple[Point, ...]:
    """Every signal of every machine as a point, indexed in scenario order (raises ValueError on a clash)."""
    points: list[Point] = []
    for machine, m in scenario.machines.items():
        shapes = [_shape(scenario, machine, s) for s in m.signals]
        taken: dict[Table, list[tuple[int, int, str]]] = {}  # [start, end) and the signal holding it
        addresses: dict[str, int] = {}
        for sh in shapes:
            if sh.explicit is not None:
                _take(taken, machine, sh, sh.explicit)
                addresses[sh.signal.name] = sh.explicit
        cursor: dict[Table, int] = {}
        for sh in shapes:
            if sh.explicit is not None:
                continue
            n = register_count(sh.mtype, sh.length)
            addr = cursor.get(sh.table, 0)
            clash = _clash(taken, sh.table, addr, addr + n)
            while clash is not None:  # skip over explicitly placed signals
                addr = clash[1]
                clash = _clash(taken, sh.table, addr, addr + n)
            _take(taken, machine, sh, addr)
            addresses[sh.signal.name] = addr
            cursor[sh.table] = addr + n
        for sh in shapes:
            s = sh.signal
            low, high = s.limits()
            points.append(Point(
                index=len(points), machine=machine, name=s.name, kind=sh.kind, unit=s.unit,
                writable=s.is_writable(), description=s.description or s.auto_description(), unit_id=m.unit,
                table=sh.table, address=addresses[s.name], mtype=sh.mtype, order=sh.order, length=sh.length,
                opcua_type=sh.opcua_type, low=low, high=high, role=s.role_name(),
            ))
    return tuple(points)


def _clash(taken: dict[Table, list[tuple[int, int, str]]], table: Table, start: int,
           end: int) -> tuple[int, int, str] | None:
    return next((r for r in taken.get(table, ()) if start < r[1] and r[0] < end), None)


def _take(taken: dict[Table, list[tuple[int, int, str]]], machine: str, sh: _Shape, addr: int) -> None:
    n = register_count(sh.mtype, sh.length)
    name = sh.signal.name
    if addr + n > 65536:
        raise ValueError(f"machines.{machine}.signals.{name}: {sh.table} {addr}+{n} runs past address 65535")
    clash = _clash(taken, sh.table, addr, addr + n)
    if clash is not None:
        raise ValueError(
            f"machines.{machine}.signals.{name}: {sh.table} {addr}..{addr + n - 1} overlaps "
            f"{clash[2]} ({sh.table} {clash[0]}..{clash[1] - 1})"
        )
    taken.setdefault(sh.table, []).append((addr, addr + n, name))
