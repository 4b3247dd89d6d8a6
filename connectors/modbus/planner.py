"""Request planning, computed once from the config.

Tags of one device, table and poll group are sorted by address and merged into as few reads as
possible: a read grows while the next tag fits within the request limit (125 registers, 2000 bits, or
the device's override) and the unused span before it is at most ``max_gap``. A multi-register value
is never split across reads.

Each read carries a precompiled decoder: numeric tags that share a buffer/value endianness (see
``codec``) are unpacked by one ``struct.Struct`` with pad bytes over the gaps, so a read of 62 float32
values is one ``pack`` and one ``unpack_from``; bits and strings get small per-tag functions.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from connectors.modbus.codec import NUMERIC, buffer_endian, decode, decode_string, value_endian
from connectors.modbus.config import BIT_TABLES, ModbusDevice, ModbusSourceConfig, ModbusTag, Table

RawValue = float | int | bool | str


@dataclass(slots=True)
class ReadRequest:
    device: str
    unit: int
    table: Table
    address: int
    count: int
    tags: list[ModbusTag]
    addresses: list[int]
    # (buffer endian, struct over the whole buffer, positions of its outputs in `tags` order or None = all)
    _structs: list[tuple[str, struct.Struct, list[int] | None]] = field(default_factory=list)
    _specials: list[tuple[int, Callable[[Sequence[int]], RawValue]]] = field(default_factory=list)
    _offsets: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    """Tag name per tag, and its unit below: for building samples without attribute lookups (two lists of
    shared strings, not a tuple per tag: 100,000 tags are ~5 MB fewer)."""
    units: list[str | None] = field(default_factory=list)

    def decode(self, data: Sequence[int] | Sequence[bool]) -> list[RawValue]:
        """Raw values of ``tags`` (in order) from the registers (or bits) this read returned."""
        if self.table in BIT_TABLES:
            return [bool(data[o]) for o in self._offsets]
        regs: Sequence[int] = data
        structs = self._structs
        if len(structs) == 1 and structs[0][2] is None:
            endian, st, _ = structs[0]
            return list(st.unpack_from(struct.pack(f"{endian}{self.count}H", *regs)))
        out: list[RawValue] = [0] * len(self.tags)
        buffers: dict[str, bytes] = {}
        for endian, st, positions in structs:
            buf = buffers.get(endian)
            if buf is None:
                buf = buffers[endian] = struct.pack(f"{endian}{self.count}H", *regs)
            for pos, value in zip(positions or range(len(self.tags)), st.unpack_from(buf), strict=True):
                out[pos] = value
        for pos, fn in self._specials:
            out[pos] = fn(regs)
        return out

    def compile(self) -> None:
        self.names = [t.name for t in self.tags]
        self.units = [t.unit for t in self.tags]
        self._offsets = [0] * len(self.tags)
        groups: dict[tuple[str, str], list[tuple[int, int, str]]] = {}
        for pos, tag in enumerate(self.tags):
            off = self.addresses[pos] - self.address
            self._offsets[pos] = off
            if self.table in BIT_TABLES:
                continue
            if tag.type in NUMERIC:
                groups.setdefault((buffer_endian(tag.order), value_endian(tag.order)), []).append((off, pos, tag.type))
            elif tag.type == "bit":
                self._specials.append((pos, _bit_reader(off, tag)))
            else:
                self._specials.append((pos, _string_reader(off, tag)))
        for (benc, venc), items in groups.items():
            fmt = [venc]
            cursor = 0
            for off, _pos, dtype in items:
                if off > cursor:
                    fmt.append(f"{2 * (off - cursor)}x")
                letter, count = NUMERIC[dtype]
                fmt.append(letter)
                cursor = off + count
            positions = [pos for _off, pos, _t in items]
            whole = positions == list(range(len(self.tags)))
            self._structs.append((benc, struct.Struct("".join(fmt)), None if whole else positions))


def _bit_reader(off: int, tag: ModbusTag) -> Callable[[Sequence[int]], RawValue]:
    bit, order = tag.bit or 0, tag.order
    return lambda regs: decode(regs[off:off + 1], "bit", order, bit)


def _string_reader(off: int, tag: ModbusTag) -> Callable[[Sequence[int]], RawValue]:
    end, order = off + tag.registers, tag.order
    return lambda regs: decode_string(regs[off:end], order)


def plan_device(device: str, dev: ModbusDevice, cfg: ModbusSourceConfig) -> dict[str, list[ReadRequest]]:
    """The reads of one device, per poll group."""
    max_regs = dev.max_registers_per_request or cfg.max_registers_per_request
    max_bits = dev.max_bits_per_request or cfg.max_bits_per_request
    max_gap = cfg.max_gap if dev.max_gap is None else dev.max_gap
    buckets: dict[tuple[str, Table], list[tuple[int, ModbusTag]]] = {}
    for tag in dev.tags:
        addr = dev.protocol_address(tag)
        buckets.setdefault((tag.poll_group, tag.table), []).append((addr, tag))
    plan: dict[str, list[ReadRequest]] = {}
    for (group, table), items in buckets.items():
        limit = max_bits if table in BIT_TABLES else max_regs
        items.sort(key=lambda item: (item[0], item[1].bit or 0))
        current: ReadRequest | None = None
        for addr, tag in items:
            size = tag.registers
            if size > limit:
                raise ValueError(f"device {device}, tag {tag.name}: {size} registers exceed the request limit {limit}")
            end = addr + size
            if current is not None:
                cur_end = current.address + current.count
                if addr - cur_end <= max_gap and max(end, cur_end) - current.address <= limit:
                    current.count = max(end, cur_end) - current.address
                    current.tags.append(tag)
                    current.addresses.append(addr)
                    continue
            current = ReadRequest(device, dev.unit, table, addr, size, [tag], [addr])
            plan.setdefault(group, []).append(current)
    for requests in plan.values():
        for req in requests:
            req.compile()
    return plan


def sub_request(req: ReadRequest, positions: range) -> ReadRequest:
    """A read of just the tags at ``positions`` of ``req`` (a part of a read the device refused)."""
    tags = [req.tags[i] for i in positions]
    addresses = [req.addresses[i] for i in positions]
    start = min(addresses)
    end = max(a + (1 if req.table in BIT_TABLES else t.registers) for a, t in zip(addresses, tags, strict=True))
    part = ReadRequest(req.device, req.unit, req.table, start, end - start, tags, addresses)
    part.compile()
    return part


def halves(req: ReadRequest) -> tuple[ReadRequest, ReadRequest]:
    """``req`` cut in two by its tags (at least two), each part reading only its own tags' span."""
    mid = len(req.tags) // 2
    # tags sharing one register (a status word and its bits) stay together: they fail together anyway
    while 0 < mid < len(req.tags) and req.addresses[mid] == req.addresses[mid - 1]:
        mid += 1
    if mid >= len(req.tags):
        mid = len(req.tags) // 2
        while mid > 0 and req.addresses[mid] == req.addresses[mid - 1]:
            mid -= 1
    return sub_request(req, range(mid)), sub_request(req, range(mid, len(req.tags)))


def plan_source(cfg: ModbusSourceConfig) -> dict[str, list[ReadRequest]]:
    """Every read of a source per poll group, in device order (one device's reads stay together)."""
    plan: dict[str, list[ReadRequest]] = {}
    for device, dev in cfg.devices.items():
        for group, requests in plan_device(device, dev, cfg).items():
            plan.setdefault(group, []).extend(requests)
    return plan
