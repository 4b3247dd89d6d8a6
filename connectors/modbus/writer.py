"""Writes to a Modbus device: what each tag type accepts, and the request that writes it.

A coil takes FC 5; a ``bit`` inside a holding register FC 22 (mask write register), which the device
applies atomically, so a change the PLC makes to the register's other bits in between is never undone;
read-modify-write (FC 3 then FC 6) only where the device is configured ``bit_write: read_modify_write``.
Registers take FC 6 (one) or FC 16 (several), encoded by the tag's type and byte/word order.
"""

from __future__ import annotations

import math

from connectors.modbus.adapter import DeviceException, ModbusClient
from connectors.modbus.codec import NUMERIC, byte_swapped, encode
from connectors.modbus.config import ModbusDevice, ModbusTag
from gateway.errors import WriteError
from gateway.model import Value
from gateway.writes import BOOL, FLOAT32_MAX, WriteKind, int_kind, shown

ILLEGAL_FUNCTION = 1


def write_kind(tag: ModbusTag) -> WriteKind:
    """What ``tag`` accepts, from its configured type alone."""
    if tag.table == "coil":
        return WriteKind("bool", type_name="coil")
    if tag.type == "bit":
        return WriteKind("bool", type_name=f"bit {tag.bit} of a holding register")
    if tag.type == "string":
        return WriteKind("string", max_bytes=2 * tag.registers, type_name=f"string of {tag.registers} registers")
    if tag.type == "float32":
        return WriteKind("float", -FLOAT32_MAX, FLOAT32_MAX, type_name="float32")
    if tag.type == "float64":
        return WriteKind("float", type_name="float64")
    if tag.type in NUMERIC:
        return int_kind(16 * NUMERIC[tag.type][1], not tag.type.startswith("u"), tag.type)
    return BOOL  # `bool` lives only in coil/discrete_input tables, and discrete inputs are never writable


async def write_tag(client: ModbusClient, dev: ModbusDevice, tag: ModbusTag, value: Value) -> None:
    """Write a raw ``value`` (already checked by ``gateway.writes.coerce``); refuses any other type again."""
    address = dev.protocol_address(tag)
    if tag.table == "coil" or tag.type == "bit":
        if type(value) is not bool:
            raise WriteError(f"{tag.name} takes true or false, not {shown(value)}")
        if tag.table == "coil":
            await client.write_coils(address, [value], dev.unit)
        elif dev.bit_write == "mask":
            await _mask_write(client, address, dev.unit, tag, value)
        else:
            regs = await client.read("holding", address, 1, dev.unit)
            await client.write_registers(address, [set_bit(int(regs[0]), tag, value)], dev.unit)
        return
    if tag.type == "string":
        if not isinstance(value, str):
            raise WriteError(f"{tag.name} takes text, not {shown(value)}")
    elif type(value) is bool or not isinstance(value, int | float) or \
            (isinstance(value, float) and not math.isfinite(value)):
        raise WriteError(f"{tag.name} takes a finite number, not {shown(value)}")
    try:
        regs = encode(value, tag.type, tag.order, tag.length)
    except (ValueError, OverflowError) as exc:
        raise WriteError(f"{tag.name}: {exc}") from exc
    await client.write_registers(address, regs, dev.unit)


async def _mask_write(client: ModbusClient, address: int, unit: int, tag: ModbusTag, on: bool) -> None:
    mask = 1 << register_bit(tag)
    try:
        await client.mask_write_register(address, 0xFFFF & ~mask, mask if on else 0, unit)
    except DeviceException as exc:
        if exc.code == ILLEGAL_FUNCTION:
            raise WriteError(
                f"{tag.name}: the device does not support function 22 (mask write register); if no other "
                "writer can change this register in between, set `bit_write: read_modify_write` on the device"
            ) from exc
        raise


def register_bit(tag: ModbusTag) -> int:
    """The bit's position in the register as it travels: byte-swapped orders count in the swapped word."""
    bit = tag.bit or 0
    return (bit + 8) % 16 if byte_swapped(tag.order) else bit


def set_bit(reg: int, tag: ModbusTag, on: bool) -> int:
    mask = 1 << register_bit(tag)
    return reg | mask if on else reg & ~mask & 0xFFFF
