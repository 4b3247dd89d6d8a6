"""``edge-gateway scan``: read a register range from a live device and show every plausible decoding.

Per address: the raw register, int16/uint16 in both byte orders, and the 32-bit value starting there
as float32, int32 and uint32 in all four orders, side by side, so the right type and order is found in
one look. ``--emit-config`` drafts tag YAML from a simple guess (plausible floats, else 16-bit ints).
The descriptor (``SCAN_COMMAND``) imports no pymodbus; ``run`` imports the adapter.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
from collections.abc import Sequence

from connectors.modbus.codec import ORDERS, Order, decode
from connectors.modbus.config import MAX_BITS, MAX_REGISTERS, SerialSettings, Table
from gateway.plugins import CommandPlugin

_TABLES: dict[str, Table] = {"holding": "holding", "input": "input", "coil": "coil",
                             "discrete_input": "discrete_input", "di": "discrete_input"}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="HOST[:PORT]", nargs="?", help="Modbus TCP device (port 502 by default)")
    parser.add_argument("--unit", type=int, default=1, help="unit id (default 1)")
    parser.add_argument("--table", choices=sorted(_TABLES), default="holding")
    parser.add_argument("--start", type=int, default=0, help="first 0-based protocol address")
    parser.add_argument("--count", type=int, default=10, help="registers (bits) to read")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds per request")
    link = parser.add_mutually_exclusive_group()
    link.add_argument("--rtu-over-tcp", action="store_true", help="RTU framing over TCP (serial converters)")
    link.add_argument("--serial", metavar="DEV", help="RTU on a serial port instead of TCP")
    parser.add_argument("--baud", type=int, default=19200)
    parser.add_argument("--parity", choices=["N", "E", "O"], default="N")
    parser.add_argument("--stopbits", type=int, choices=[1, 2], default=1)
    parser.add_argument("--emit-config", action="store_true", help="print a draft tag list (YAML) after the table")


def _fmt(v: float | int | bool | str) -> str:
    if isinstance(v, float):
        return f"{v:.7g}"
    return str(v)


def render(start: int, regs: Sequence[int]) -> str:
    """The side-by-side table: one row per address."""
    head = (["addr", "hex", "int16", "uint16", "int16 BA", "uint16 BA"]
            + [f"f32 {o}" for o in ORDERS] + [f"i32 {o}" for o in ORDERS] + [f"u32 {o}" for o in ORDERS])
    rows = [head]
    for i, reg in enumerate(regs):
        row = [str(start + i), f"0x{reg:04X}", _fmt(decode([reg], "int16")), _fmt(decode([reg], "uint16")),
               _fmt(decode([reg], "int16", "BADC")), _fmt(decode([reg], "uint16", "BADC"))]
        pair = regs[i:i + 2]
        for dtype in ("float32", "int32", "uint32"):
            for order in ORDERS:
                row.append(_fmt(decode(pair, dtype, order)) if len(pair) == 2 else "")
        rows.append(row)
    widths = [max(len(r[c]) for r in rows) for c in range(len(head))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _plausible(v: float) -> bool:
    return math.isfinite(v) and (v == 0.0 or 1e-4 <= abs(v) <= 1e7)


def draft_tags(table: Table, start: int, data: Sequence[int] | Sequence[bool]) -> str:
    """YAML tag list guessed from the data: float32 where an order gives a plausible non-zero value, else int16."""
    lines = ["tags:"]
    if table in ("coil", "discrete_input"):
        for i in range(len(data)):
            lines.append(f"  - {{name: {table}_{start + i}, table: {table}, address: {start + i}, type: bool}}")
        return "\n".join(lines)
    regs: Sequence[int] = data
    i = 0
    while i < len(regs):
        pair = regs[i:i + 2]
        order: Order | None = None
        if len(pair) == 2 and (pair[0] or pair[1]):
            # among orders giving a plausible float, the one that prints shortest (3.5 beats 3.515625)
            fits = [(len(_fmt(v)), o) for o in ORDERS if _plausible(v := float(decode(pair, "float32", o))) and v]
            order = min(fits)[1] if fits else None
        addr = start + i
        if order is not None:
            value = _fmt(decode(pair, "float32", order))
            lines.append(f"  - {{name: reg_{addr}, table: {table}, address: {addr}, type: float32, "
                         f"order: {order}}}  # {value}")
            i += 2
        else:
            lines.append(f"  - {{name: reg_{addr}, table: {table}, address: {addr}, type: int16}}"
                         f"  # {decode(regs[i:i + 1], 'int16')}")
            i += 1
    return "\n".join(lines)


async def _scan(args: argparse.Namespace, table: Table) -> list[int] | list[bool]:
    from connectors.modbus.adapter import ModbusClient, ModbusError

    if args.serial:
        serial = SerialSettings(port=args.serial, baudrate=args.baud, parity=args.parity, stopbits=args.stopbits)
        client = ModbusClient("rtu", serial=serial, timeout=args.timeout)
    else:
        host, _, port = args.target.rpartition(":") if ":" in args.target else (args.target, "", "502")
        client = ModbusClient("rtu_over_tcp" if args.rtu_over_tcp else "tcp", host=host, port=int(port),
                              timeout=args.timeout)
    if not await client.connect():
        raise ConnectionError(f"cannot connect to {client.target}")
    try:
        limit = MAX_BITS if table in ("coil", "discrete_input") else MAX_REGISTERS
        out: list[int] | list[bool] = []
        addr, left = args.start, args.count
        while left > 0:
            n = min(left, limit)
            try:
                out.extend(await client.read(table, addr, n, args.unit))  # type: ignore[arg-type]
            except ModbusError as exc:
                raise ConnectionError(f"reading {table} {addr}..{addr + n - 1} of unit {args.unit}: {exc}") from exc
            addr, left = addr + n, left - n
        return out
    finally:
        client.close()


def run(args: argparse.Namespace) -> int:
    if not args.serial and not args.target:
        print("edge-gateway scan: give HOST[:PORT] or --serial DEV", file=sys.stderr)
        return 2
    if not 0 <= args.start <= 65535 or args.count < 1 or args.start + args.count > 65536:
        print("edge-gateway scan: --start/--count must stay within addresses 0..65535", file=sys.stderr)
        return 2
    table = _TABLES[args.table]
    try:
        data = asyncio.run(_scan(args, table))
    except ConnectionError as exc:
        print(f"edge-gateway scan: {exc}", file=sys.stderr)
        return 1
    if table in ("coil", "discrete_input"):
        for i, bit in enumerate(data):
            print(f"{args.start + i:>5}  {int(bit)}")
    else:
        print(render(args.start, data))
    if args.emit_config:
        print()
        print(draft_tags(table, args.start, data))
    return 0


SCAN_COMMAND = CommandPlugin(
    name="scan",
    help="read a Modbus register range and show every type/order decoding side by side",
    configure=configure,
    run=run,
)
