"""Config of the Modbus source: one connection (TCP, RTU over TCP, or RTU on a serial line) and the devices
(unit ids) behind it, each with its tags.

A tag says where its value lives (``table``, ``address``), how it is encoded (``type``, ``order``,
``length`` for strings, ``bit`` for a bit inside a register) and which poll group reads it. Config-time
checks: register count matches the type, the value fits the 16-bit address space, tags of one device
and table do not overlap, coils and discrete inputs hold booleans only.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Annotated, Literal

from pydantic import Field, model_validator

from connectors.modbus.codec import DataType, Order, register_count
from gateway.config.base import (
    DeviceLoad,
    Duration,
    Name,
    SourceConfigBase,
    StrictModel,
    TagBase,
    check_at_least,
    config_dataclass,
)

Table = Literal["coil", "discrete_input", "holding", "input"]
BIT_TABLES = ("coil", "discrete_input")
MAX_REGISTERS = 125
MAX_BITS = 2000


@config_dataclass(slots=True)
class ModbusTag(TagBase):
    table: Annotated[Table, Field(description="coil, discrete_input, holding or input")] = "holding"
    address: Annotated[int, Field(
        ge=0, description="0-based protocol address, or datasheet notation (40001...) with address_base set"
    )]
    address_base: Annotated[int | None, Field(
        ge=0, description="subtracted from address (e.g. 40001 for 4xxxx notation); default: the device's"
    )] = None
    type: Annotated[DataType, Field(description="bool, bit, int16/uint16/int32/uint32/int64/uint64, "
                                    "float32/float64, string")] = "uint16"
    order: Annotated[
        Order, Field(description="byte/word order: ABCD, CDAB (word swap), BADC (byte swap), DCBA")
    ] = "ABCD"
    length: Annotated[
        int | None, Field(ge=1, le=MAX_REGISTERS, description="registers of a string (2 chars each)")
    ] = None
    bit: Annotated[int | None, Field(ge=0, le=15, description="bit number (0 = least significant) for type bit")] = None
    count: Annotated[
        int | None, Field(ge=1, description="registers per the datasheet; checked against the type")
    ] = None
    poll_group: Annotated[str, Field(description="which poll group (interval) reads this tag")] = "default"

    @model_validator(mode="after")
    def _shape(self) -> ModbusTag:
        if self.table in BIT_TABLES and self.type != "bool":
            raise ValueError(f"{self.table} tables hold single bits: use type bool, not {self.type}")
        if self.table not in BIT_TABLES and self.type == "bool":
            raise ValueError("type bool is for coil/discrete_input; in a register use type bit with `bit: N`")
        if (self.type == "bit") != (self.bit is not None):
            raise ValueError("`bit: N` is required for type bit and only allowed there")
        if (self.type == "string") != (self.length is not None):
            raise ValueError("`length` (registers) is required for type string and only allowed there")
        if self.writable and self.table in ("discrete_input", "input"):
            raise ValueError(f"{self.table} is read-only in Modbus; the tag cannot be writable")
        if self.count is not None and self.count != self.registers:
            raise ValueError(f"count {self.count} does not match type {self.type} ({self.registers} registers)")
        return self

    @property
    def registers(self) -> int:
        return register_count(self.type, self.length)


class SerialSettings(StrictModel):
    port: str = Field(description="serial device, e.g. /dev/ttyUSB0")
    baudrate: int = Field(19200, gt=0)
    parity: Literal["N", "E", "O"] = "N"
    bytesize: Literal[7, 8] = 8
    stopbits: Literal[1, 2] = 1


class ModbusDevice(StrictModel):
    unit: int = Field(ge=0, le=255, description="Modbus unit (slave) id")
    address_base: int = Field(0, ge=0, description="subtracted from every tag address (e.g. 40001)")
    max_registers_per_request: int | None = Field(
        None, ge=1, le=MAX_REGISTERS, description="override for devices that accept fewer registers per read"
    )
    max_bits_per_request: int | None = Field(None, ge=1, le=MAX_BITS)
    max_gap: int | None = Field(None, ge=0, le=MAX_REGISTERS, description="override of the source's max_gap")
    bit_write: Literal["mask", "read_modify_write"] = Field(
        "mask", description="how a `type: bit` tag is written: mask (function 22, atomic in the device) or "
        "read_modify_write (read the register, write it back: for devices without function 22; it can undo "
        "a change the PLC made in between)"
    )
    tags: list[ModbusTag] = Field(min_length=1)

    def protocol_address(self, tag: ModbusTag) -> int:
        base = self.address_base if tag.address_base is None else tag.address_base
        return tag.address - base if base else tag.address  # the same int object: the read plan keeps one a tag

    @model_validator(mode="after")
    def _layout(self) -> ModbusDevice:
        names: set[str] = set()
        spans: dict[str, list[tuple[int, int, int | None, str]]] = {}
        for tag in self.tags:
            if tag.name in names:
                raise ValueError(f"tag names must be unique within a device; repeated: {tag.name}")
            names.add(tag.name)
            start = self.protocol_address(tag)
            if start < 0:
                raise ValueError(f"tag {tag.name}: address {tag.address} is below its address_base")
            end = start + tag.registers
            if end > 65536:
                raise ValueError(f"tag {tag.name}: addresses {start}..{end - 1} exceed 65535")
            spans.setdefault(tag.table, []).append((start, end, tag.bit, tag.name))
        for table, items in spans.items():
            # A bit tag may sit in a register another tag reads whole (a status word and its bits); values
            # must not overlap each other, nor two bit tags name the same bit.
            values = sorted((i for i in items if i[2] is None), key=lambda i: (i[0], i[1]))
            for (_s1, e1, _b1, n1), (s2, _e2, _b2, n2) in itertools.pairwise(values):
                if s2 < e1:
                    raise ValueError(f"tags {n1} and {n2} overlap in the {table} table at address {s2}")
            bits: dict[tuple[int, int | None], str] = {}
            for start, _end, bit, name in items:
                if bit is not None:
                    other = bits.setdefault((start, bit), name)
                    if other != name:
                        raise ValueError(f"tags {other} and {name} are both bit {bit} of {table} address {start}")
        return self


class ModbusSourceConfig(SourceConfigBase):
    """One Modbus connection and the devices behind it; all its traffic is serialised."""

    type: Literal["modbus"] = "modbus"
    transport: Literal["tcp", "rtu_over_tcp", "rtu"] = Field(
        "tcp", description="tcp (MBAP), rtu_over_tcp (serial-to-Ethernet converters), rtu (serial line)"
    )
    host: str | None = Field(None, description="for tcp and rtu_over_tcp")
    port: int = Field(502, ge=1, le=65535)
    serial: SerialSettings | None = Field(None, description="for rtu")
    timeout: Duration = Field(1.0, gt=0, description="per request; a silent unit costs this once per poll")
    slow_after: Duration | None = Field(
        None, gt=0, description="replies slower than this show the device as `slow` on the status page (the link "
        "being up); default half the timeout"
    )
    inter_frame_delay: Duration = Field(0.0, description="quiet time between requests (RS-485 turnaround)")
    reconnect_initial: Duration = Field(0.5, gt=0)
    reconnect_max: Duration = Field(30.0, gt=0)
    interval: Duration = Field(1.0, gt=0, description="interval of the `default` poll group")
    poll_groups: dict[str, Duration] = Field(
        default_factory=dict, description="extra poll groups: name -> interval (e.g. fast: 100ms, slow: 1m)"
    )
    phase: Duration | None = Field(
        None, ge=0, description="where in each interval the polls start, from the wall clock's whole intervals "
        "(taken modulo each poll group's interval): `0s` polls on the second, and sources with the same phase poll "
        "in the same instant: one snapshot across devices, and less CPU (answers that arrive together wake the "
        "gateway once) but each value waits behind the others' on its way out. Default: spread by the source's "
        "name, so every value reaches the uplink within milliseconds of its read"
    )
    max_registers_per_request: int = Field(MAX_REGISTERS, ge=1, le=MAX_REGISTERS)
    max_bits_per_request: int = Field(MAX_BITS, ge=1, le=MAX_BITS)
    max_gap: int = Field(
        10, ge=0, le=MAX_REGISTERS, description="unused registers (bits) a read may span to merge two tags"
    )
    split_reprobe: Duration = Field(
        300.0, gt=0, description="a merged read the device refused (exception 2/3/4) is read in parts; the merged "
        "read is tried again this often, so a device that recovers is read in one request again"
    )
    devices: dict[Name, ModbusDevice] = Field(min_length=1)

    @model_validator(mode="after")
    def _reconnect_order(self) -> ModbusSourceConfig:
        check_at_least(self, "reconnect_max", "reconnect_initial")
        return self

    @model_validator(mode="after")
    def _connection(self) -> ModbusSourceConfig:
        if self.transport == "rtu":
            if self.serial is None:
                raise ValueError("transport rtu needs `serial: {port: /dev/ttyUSB0, baudrate: ...}`")
            if self.host is not None:
                raise ValueError("transport rtu uses `serial`, not `host`")
        else:
            if self.host is None:
                raise ValueError(f"transport {self.transport} needs `host`")
            if self.serial is not None:
                raise ValueError(f"`serial` is only for transport rtu, not {self.transport}")
        groups = self.group_intervals()
        for device, dev in self.devices.items():
            for tag in dev.tags:
                if tag.poll_group not in groups:
                    raise ValueError(f"device {device}, tag {tag.name}: unknown poll_group {tag.poll_group!r}; "
                                     f"defined: {', '.join(sorted(groups))}")
        return self

    def group_intervals(self) -> dict[str, float]:
        return {"default": self.interval, **self.poll_groups}

    def iter_tags(self) -> Iterator[tuple[str, TagBase]]:
        for device, dev in self.devices.items():
            for tag in dev.tags:
                yield device, tag

    def devices_separable(self) -> bool:
        """Units behind one serial line (or one serial-to-Ethernet converter, which usually takes a single
        TCP connection) are collected by one box: they move together."""
        return self.transport == "tcp"

    def device_loads(self) -> dict[str, DeviceLoad]:
        """From the read plan: each poll group's requests once per its interval."""
        from connectors.modbus.planner import plan_device  # the planner imports this module

        groups = self.group_intervals()
        out = {}
        for device, dev in self.devices.items():
            reads = sum(len(reqs) / groups[g] for g, reqs in plan_device(device, dev, self).items())
            values = sum(1 / groups[t.poll_group] for t in dev.tags)
            out[device] = DeviceLoad(len(dev.tags), values, reads)
        return out
