"""Our own register codec: every Modbus data type in the four byte/word orders, pure ``struct``.

Order letters name the bytes of a value, most significant first (``A``), as they arrive on the wire:

- ``ABCD``: big-endian registers in big-endian order (the Modbus default);
- ``CDAB``: registers in reverse order ("word swap"), bytes inside each register big-endian;
- ``BADC``: bytes swapped inside each register, registers in order;
- ``DCBA``: both, i.e. fully little-endian.

The same two switches apply to 16-bit (only the byte swap matters) and 64-bit values. The trick that
keeps decoding to one ``struct`` call per value (or per run of values): pack the received registers
into bytes little-endian when exactly one switch is set (``CDAB``, ``BADC``), big-endian otherwise;
then read the value little-endian when registers are reversed (``CDAB``, ``DCBA``), big-endian
otherwise. For example ``CDAB``: registers ``CD AB`` packed little-endian give ``D C B A``, which
read little-endian is ``ABCD``; ``DCBA`` packed big-endian is ``D C B A`` too. pymodbus only reverses
registers, which is why the gateway owns this module.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Literal

Order = Literal["ABCD", "CDAB", "BADC", "DCBA"]
DataType = Literal[
    "bool", "bit", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string"
]

ORDERS: tuple[Order, ...] = ("ABCD", "CDAB", "BADC", "DCBA")

# struct letter and register count of each numeric type
NUMERIC: dict[str, tuple[str, int]] = {
    "int16": ("h", 1), "uint16": ("H", 1),
    "int32": ("i", 2), "uint32": ("I", 2),
    "int64": ("q", 4), "uint64": ("Q", 4),
    "float32": ("f", 2), "float64": ("d", 4),
}


def byte_swapped(order: Order) -> bool:
    """Bytes swapped inside each register (``BADC``, ``DCBA``)."""
    return order in ("BADC", "DCBA")


def words_reversed(order: Order) -> bool:
    """Registers in reverse order (``CDAB``, ``DCBA``)."""
    return order in ("CDAB", "DCBA")


def buffer_endian(order: Order) -> str:
    """How to pack received registers into bytes for this order (see the module doc)."""
    return "<" if byte_swapped(order) != words_reversed(order) else ">"


def value_endian(order: Order) -> str:
    """How to read a value out of a buffer packed with ``buffer_endian(order)``."""
    return "<" if words_reversed(order) else ">"


def register_count(dtype: DataType, length: int | None = None) -> int:
    """Registers (or bits, for ``bool``) one value of ``dtype`` occupies."""
    if dtype in ("bool", "bit"):
        return 1
    if dtype == "string":
        if not length or length < 1:
            raise ValueError("a string needs its length in registers")
        return length
    return NUMERIC[dtype][1]


def pack_registers(registers: Sequence[int], endian: str) -> bytes:
    return struct.pack(f"{endian}{len(registers)}H", *registers)


def decode(registers: Sequence[int], dtype: DataType, order: Order = "ABCD", bit: int = 0) -> float | int | bool | str:
    """One value from exactly the registers it occupies (``bit`` for ``bit``-in-register)."""
    if dtype == "bool":
        return bool(registers[0])
    if dtype == "bit":
        reg = registers[0]
        if byte_swapped(order):
            reg = ((reg & 0xFF) << 8) | (reg >> 8)
        return bool((reg >> bit) & 1)
    if dtype == "string":
        return decode_string(registers, order)
    letter, count = NUMERIC[dtype]
    if len(registers) != count:
        raise ValueError(f"{dtype} takes {count} registers, got {len(registers)}")
    buf = pack_registers(registers, buffer_endian(order))
    value: float | int = struct.unpack(value_endian(order) + letter, buf)[0]
    return value


def decode_string(registers: Sequence[int], order: Order = "ABCD") -> str:
    """Text, two characters per register; trailing NULs and spaces dropped, undecodable bytes replaced."""
    regs = list(reversed(registers)) if words_reversed(order) else registers
    raw = pack_registers(regs, "<" if byte_swapped(order) else ">")
    return raw.rstrip(b"\x00 ").decode("utf-8", errors="replace")


def encode(value: float | int | bool | str, dtype: DataType, order: Order = "ABCD",
           length: int | None = None) -> list[int]:
    """The registers that hold ``value`` (``bool``/``bit`` are not register encodings: see the source)."""
    if dtype == "string":
        return encode_string(str(value), order, register_count(dtype, length))
    if dtype in ("bool", "bit"):
        raise ValueError(f"{dtype} values are written as coils or bit edits, not encoded into registers")
    letter, count = NUMERIC[dtype]
    if isinstance(value, str):
        raise ValueError(f"{dtype} needs a number, not {value!r}")
    if letter in "fd":
        number: float | int = float(value)
    else:
        if isinstance(value, float):
            if not math.isfinite(value) or not value.is_integer():
                raise ValueError(f"{dtype} needs a whole number, got {value!r}")
            value = int(value)
        number = int(value)
    try:
        raw = struct.pack(value_endian(order) + letter, number)
    except (struct.error, OverflowError) as exc:
        raise ValueError(f"{value!r} does not fit {dtype}") from exc
    return list(struct.unpack(f"{buffer_endian(order)}{count}H", raw))


def encode_string(text: str, order: Order, count: int) -> list[int]:
    raw = text.encode("utf-8")
    if len(raw) > 2 * count:
        raise ValueError(f"{text!r} needs {len(raw)} bytes; the tag holds {2 * count}")
    raw = raw.ljust(2 * count, b"\x00")
    regs = list(struct.unpack(f"{'<' if byte_swapped(order) else '>'}{count}H", raw))
    return regs[::-1] if words_reversed(order) else regs
