"""``edge-gateway scan``: read a register range from a live device and show every plausible decoding.

Per address: the raw register, its ASCII, int16/uint16 in both byte orders, and the 32-bit value starting
there as float32, int32 and uint32 in all four orders; then the 64-bit values (float64, int64, uint64 in
all four orders) for each address that starts four readable registers. The right type and order are found
in one look. Ranges longer than one request are read in several; an exception response inside the range
is narrowed down to the registers that cause it, which are marked with the exception's name, and the scan
goes on. ``--emit-config`` drafts a gateway config from the values, keeping only decodings it can defend
(aligned, plausible, consistent with the neighbours), the alternatives in a comment, nothing writable.
The descriptor (``SCAN_COMMAND``) imports no pymodbus; ``run`` imports the adapter.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from connectors.modbus.codec import ORDERS, Order, decode
from connectors.modbus.config import BIT_TABLES, MAX_BITS, MAX_REGISTERS, SerialSettings, Table
from gateway.plugins import CommandPlugin
from gateway.status_codes import status_name

if TYPE_CHECKING:  # the descriptor imports no pymodbus; `run` imports the adapter
    from connectors.modbus.adapter import ModbusClient

_TABLES: dict[str, Table] = {"holding": "holding", "input": "input", "coil": "coil",
                             "discrete_input": "discrete_input", "di": "discrete_input"}
Cell = int | bool | None
"""A scanned register or bit; None where the device answered an exception for it."""


class Scan:
    """What a scan read: ``data`` per address from ``start`` and the exception names where it failed."""

    def __init__(self, table: Table, start: int) -> None:
        self.table = table
        self.start = start
        self.data: list[Cell] = []
        self.failed: dict[int, str] = {}

    def words(self, i: int, n: int) -> list[int] | None:
        """``n`` registers from position ``i``, or None when the range runs out or holds a failed one."""
        part = self.data[i:i + n]
        if len(part) < n or any(v is None for v in part):
            return None
        return [int(v) for v in part]  # type: ignore[arg-type]


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


def _ascii(reg: int) -> str:
    return "".join(chr(b) if 32 <= b < 127 else "." for b in (reg >> 8, reg & 0xFF))


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[c]) for r in rows if c < len(r)) for c in range(len(rows[0]))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(r, widths, strict=False)).rstrip() for r in rows)


def render(start: int, regs: Sequence[Cell], failed: dict[int, str] | None = None) -> str:
    """The side-by-side tables: one row per address, then the 64-bit values."""
    scan = Scan("holding", start)
    scan.data = list(regs)
    scan.failed = dict(failed or {})
    head = (["addr", "hex", "int16", "uint16", "int16 BA", "uint16 BA"]
            + [f"f32 {o}" for o in ORDERS] + [f"i32 {o}" for o in ORDERS] + [f"u32 {o}" for o in ORDERS]
            + ["ascii"])
    rows = [head]
    wide = [["addr"] + [f"f64 {o}" for o in ORDERS] + [f"i64 {o}" for o in ORDERS] + [f"u64 {o}" for o in ORDERS]]
    for i, reg in enumerate(scan.data):
        addr = start + i
        if reg is None:
            rows.append([str(addr), scan.failed.get(addr, "failed")])
            continue
        r = int(reg)
        row = [str(addr), f"0x{r:04X}", _fmt(decode([r], "int16")), _fmt(decode([r], "uint16")),
               _fmt(decode([r], "int16", "BADC")), _fmt(decode([r], "uint16", "BADC"))]
        pair = scan.words(i, 2)
        for dtype in ("float32", "int32", "uint32"):
            for order in ORDERS:
                row.append(_fmt(decode(pair, dtype, order)) if pair else "")
        row.append(_ascii(r))
        rows.append(row)
        quad = scan.words(i, 4)
        if quad:
            wide.append([str(addr)] + [_fmt(decode(quad, dtype, order))
                                       for dtype in ("float64", "int64", "uint64") for order in ORDERS])
    out = _table(rows)
    if len(wide) > 1:
        out += "\n\n64-bit values starting at each address:\n" + _table(wide)
    return out


# --- the draft config -----------------------------------------------------------------------------------


def _plausible(v: float, digits: int) -> bool:
    """A measurement rather than a bit pattern: finite, not denormal, within a sane magnitude, and short
    once printed (a real reading is 21.5 or 1234.5678; a misread pair prints every digit it has)."""
    if not math.isfinite(v) or v == 0.0 or not 1e-4 <= abs(v) <= 1e9:
        return False
    text = f"{v:.7g}" if digits <= 7 else repr(v)
    return len(text.lstrip("-").split("e")[0].replace(".", "").strip("0")) <= digits


def _floats(words: list[int], dtype: str) -> list[tuple[int, Order, float]]:
    """The orders in which ``words`` read as a plausible float, shortest print first."""
    found = []
    for order in ORDERS:
        v = float(decode(words, dtype, order))  # type: ignore[arg-type]
        if _plausible(v, 6 if dtype == "float32" else 10):
            found.append((len(repr(v)), order, v))
    return sorted(found)


_TEXT_MARKS = frozenset(" -_.:/#+()")


def _printable(reg: int) -> bool:
    return all(b == 0 or 32 <= b < 127 for b in (reg >> 8, reg & 0xFF))


def _text(words: list[int]) -> str | None:
    """Printable ASCII text in these registers (at least three letters), else None."""
    raw = bytes(b for w in words for b in (w >> 8, w & 0xFF)).rstrip(b"\x00 ")
    text = raw.decode("ascii", errors="replace")
    if len(text) < 3 or sum(c.isalpha() for c in text) < 3 or not all(c.isalnum() or c in _TEXT_MARKS for c in text):
        return None
    return text


def draft_tags(table: Table, start: int, data: Sequence[Cell], failed: dict[int, str] | None = None) -> list[str]:
    """YAML tag lines (with comments) guessed from the data: only decodings the values support."""
    failed = failed or {}
    lines: list[str] = []
    if table in BIT_TABLES:
        for i, bit in enumerate(data):
            addr = start + i
            if bit is None:
                lines.append(f"# {addr}: {failed.get(addr, 'failed')}: left out")
            else:
                lines.append(f"- {{name: {table}_{addr}, table: {table}, address: {addr}, type: bool}}  # {int(bit)}")
        return lines
    scan = Scan(table, start)
    scan.data = list(data)
    prev_order: Order | None = None
    i = 0
    while i < len(scan.data):
        addr = start + i
        if scan.data[i] is None:
            lines.append(f"# {addr}: {failed.get(addr, 'failed')}: left out")
            i += 1
            continue
        aligned = addr % 2 == 0
        quad, pair = scan.words(i, 4), scan.words(i, 2)
        text_run = 0
        while text_run < 32 and (w := scan.words(i + text_run, 1)) and _printable(w[0]):
            text_run += 1
        text = _text(scan.words(i, text_run) or []) if text_run >= 2 else None
        if text is not None:
            lines.append(f"- {{name: text_{addr}, table: {table}, address: {addr}, type: string, "
                         f"length: {text_run}}}  # {text!r}")
            i += text_run
            prev_order = None
            continue
        # a zero word beside a small one is an integer (uint32 2245), whatever a float order makes of it
        small_int = pair is not None and 0 in pair and max(pair) < 0x4000
        f32 = _floats(pair, "float32") if aligned and pair and any(pair) and not small_int else []
        f64 = _floats(quad, "float64") if aligned and quad and any(quad) else []
        # consistent with the neighbours: the order the previous float used wins when it fits
        pick32 = next((c for c in f32 if c[1] == prev_order), f32[0] if f32 else None)
        if f64 and not (pick32 and _floats(scan.words(i + 2, 2) or [], "float32")):
            _, order, v = next((c for c in f64 if c[1] == prev_order), f64[0])
            others = ", ".join(f"{o} {x!r}" for _, o, x in f64 if o != order)
            lines.append(f"- {{name: reg_{addr}, table: {table}, address: {addr}, type: float64, order: {order}}}"
                         f"  # {v!r}" + (f"; also plausible: float64 {others}" if others else ""))
            prev_order = order
            i += 4
            continue
        if pick32 is not None:
            _, order, v = pick32
            alts = [f"float32 {o} {_fmt(x)}" for _, o, x in f32 if o != order]
            alts.append(f"uint32 {decode(pair, 'uint32')}")  # type: ignore[arg-type]
            lines.append(f"- {{name: reg_{addr}, table: {table}, address: {addr}, type: float32, order: {order}}}"
                         f"  # {_fmt(v)}; alternatives: {', '.join(alts)}")
            prev_order = order
            i += 2
            continue
        reg = int(scan.data[i])  # type: ignore[arg-type]
        signed = reg >= 0xFF00  # a small negative number, not a large positive one
        dtype = "int16" if signed else "uint16"
        other = "uint16" if signed else "int16"
        alternatives = f"{other} {decode([reg], other)}"  # type: ignore[arg-type]
        if pair and aligned and pair[0] and pair[0] < 0x0100:
            alternatives += f", uint32 {decode(pair, 'uint32')} (with {addr + 1})"
        lines.append(f"- {{name: reg_{addr}, table: {table}, address: {addr}, type: {dtype}}}"
                     f"  # {decode([reg], dtype)}; alternatives: {alternatives}")  # type: ignore[arg-type]
        prev_order = None
        i += 1
    return lines


def draft_config(args: argparse.Namespace, table: Table, scan: Scan) -> str:
    """A whole gateway config (validates as it is) around the drafted tags."""
    first, last = scan.start, scan.start + len(scan.data) - 1
    head = [f"# drafted by edge-gateway scan: unit {args.unit}, {table} {first}..{last}.",
            "# Every type below is a guess from the values read: check each against the device's register map.",
            "# Nothing is writable: add `writable: true` (and min/max) only to tags you have checked.",
            "sources:", "  scanned:", "    type: modbus"]
    if args.serial:
        head += ["    transport: rtu", f"    serial: {{port: {args.serial}, baudrate: {args.baud}, "
                 f"parity: {args.parity}, stopbits: {args.stopbits}}}"]
    else:
        host, _, port = args.target.rpartition(":") if ":" in args.target else (args.target, "", "502")
        head += [f"    transport: {'rtu_over_tcp' if args.rtu_over_tcp else 'tcp'}", f"    host: {host}",
                 f"    port: {port}"]
    head += ["    devices:", f"      unit_{args.unit}:", f"        unit: {args.unit}", "        tags:"]
    tags = draft_tags(table, scan.start, scan.data, scan.failed)
    if not any(t.startswith("-") for t in tags):
        tags.append("[]  # nothing readable in this range")
    return "\n".join(head + [f"          {t}" for t in tags] + ["sinks:", "  local_store: {type: sqlite}"])


# --- reading --------------------------------------------------------------------------------------------


async def _read_range(client: ModbusClient, scan: Scan, unit: int, addr: int, n: int) -> None:
    """Read ``n`` registers (bits) at ``addr`` into ``scan``; an exception is narrowed down to its registers."""
    from connectors.modbus.adapter import DeviceException

    try:
        values = await client.read(scan.table, addr, n, unit)
    except DeviceException as exc:
        if n == 1:
            scan.failed[addr] = status_name(exc.code)
            scan.data[addr - scan.start] = None
            return
        half = n // 2
        await _read_range(client, scan, unit, addr, half)
        await _read_range(client, scan, unit, addr + half, n - half)
        return
    scan.data[addr - scan.start:addr - scan.start + n] = list(values)


async def _scan(args: argparse.Namespace, table: Table) -> Scan:
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
    scan = Scan(table, args.start)
    scan.data = [None] * args.count
    try:
        limit = MAX_BITS if table in BIT_TABLES else MAX_REGISTERS
        addr, left = args.start, args.count
        while left > 0:  # a range longer than one request: several
            n = min(left, limit)
            try:
                await _read_range(client, scan, args.unit, addr, n)
            except ModbusError as exc:
                raise ConnectionError(f"reading {table} {addr}..{addr + n - 1} of unit {args.unit}: {exc}") from exc
            addr, left = addr + n, left - n
        return scan
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
        scan = asyncio.run(_scan(args, table))
    except ConnectionError as exc:
        print(f"edge-gateway scan: {exc}", file=sys.stderr)
        return 1
    if table in BIT_TABLES:
        for i, bit in enumerate(scan.data):
            addr = args.start + i
            print(f"{addr:>5}  {scan.failed.get(addr, 'failed') if bit is None else int(bit)}")
    else:
        print(render(args.start, scan.data, scan.failed))
    if args.emit_config:
        print()
        print(draft_config(args, table, scan))
    return 0


SCAN_COMMAND = CommandPlugin(
    name="scan",
    requires=("pymodbus",),
    extra="modbus",
    help="read a Modbus register range and show every type/order decoding side by side",
    configure=configure,
    run=run,
)
