"""The only module that imports pymodbus: one client per connection, its exceptions turned into ours.

pymodbus' own policies are switched off because they fight ours: ``retries=0`` (a silent unit costs
one timeout, not four), ``reconnect_delay=0`` (no background reconnect racing the source's backoff),
and ``set_max_no_responses`` raised so a silent unit never makes it close the link the other units on
it still use. ``connect()`` returns False instead of raising; the source loops on it with its backoff.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Sequence
from typing import Any

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu.register_message import ReadHoldingRegistersResponse, ReadInputRegistersResponse

from connectors.modbus.config import SerialSettings, Table
from gateway.errors import GatewayError

# pymodbus logs every unanswered request at ERROR with a frame dump; the source logs state changes itself.
logging.getLogger("pymodbus.logging").setLevel(logging.CRITICAL)

_NEVER_CLOSE = 2**31 - 1


class ModbusError(GatewayError):
    """Base of what the adapter raises."""


class DeviceException(ModbusError):
    """The unit answered with an exception response; the link is fine."""

    def __init__(self, code: int, function: int) -> None:
        super().__init__(f"exception response {code} to function {function}")
        self.code = code


class RequestTimeout(ModbusError):
    """No answer within the timeout; the link may still be fine for other units."""


class LinkDown(ModbusError):
    """Not connected, or the connection was lost."""


class ProtocolError(ModbusError):
    """A garbled or mismatched frame: the stream can no longer be trusted; reconnect."""


def _decode_registers(self: Any, data: bytes) -> None:
    """pymodbus' own decode unpacks one register per struct call (~30 µs for 125 registers); this is
    one call, with the same byte-count check and result."""
    if (size := data[0]) >= len(data):
        raise ModbusIOException(f"byte_count {size} > length of packet {len(data)}",
                                function_code=self.function_code)
    self.registers = list(struct.unpack_from(f">{size // 2}H", data, 1))


def _short_str(self: Any) -> str:
    # pymodbus formats every decoded PDU for its debug log even with that log off; the base __str__
    # prints all 125 registers of a full read
    return (f"{type(self).__mro__[1].__name__}(dev_id={self.dev_id}, transaction_id={self.transaction_id}, "
            f"registers={len(self.registers)})")


class _HoldingRegisters(ReadHoldingRegistersResponse):
    decode = _decode_registers
    __str__ = _short_str


class _InputRegisters(ReadInputRegistersResponse):
    decode = _decode_registers
    __str__ = _short_str


class ModbusClient:
    """One Modbus connection: TCP, RTU framing over TCP, or RTU on a serial port."""

    def __init__(self, transport: str, *, host: str | None = None, port: int = 502,
                 serial: SerialSettings | None = None, timeout: float = 1.0) -> None:
        self.timeout = timeout
        self._client: Any
        if transport == "rtu":
            assert serial is not None
            self.target = serial.port
            self._client = AsyncModbusSerialClient(
                serial.port, framer=FramerType.RTU, baudrate=serial.baudrate, bytesize=serial.bytesize,
                parity=serial.parity, stopbits=serial.stopbits, timeout=timeout, retries=0, reconnect_delay=0,
            )
        else:
            assert host is not None
            self.target = f"{host}:{port}"
            framer = FramerType.RTU if transport == "rtu_over_tcp" else FramerType.SOCKET
            self._client = AsyncModbusTcpClient(
                host, port=port, framer=framer, timeout=timeout, retries=0, reconnect_delay=0,
            )
        self._client.set_max_no_responses(_NEVER_CLOSE)
        for response in (_HoldingRegisters, _InputRegisters):
            self._client.register(response)

    @property
    def connected(self) -> bool:
        return bool(self._client.connected)

    async def connect(self) -> bool:
        try:
            return bool(await self._client.connect())
        except (OSError, ModbusException):
            return False

    def close(self) -> None:
        self._client.close()

    async def read(self, table: Table, address: int, count: int, unit: int) -> list[int] | list[bool]:
        c = self._client
        if table == "holding":
            rr = await self._call(c.read_holding_registers(address, count=count, device_id=unit))
            return self._registers(rr, count)
        if table == "input":
            rr = await self._call(c.read_input_registers(address, count=count, device_id=unit))
            return self._registers(rr, count)
        if table == "coil":
            rr = await self._call(c.read_coils(address, count=count, device_id=unit))
        else:
            rr = await self._call(c.read_discrete_inputs(address, count=count, device_id=unit))
        bits = list(rr.bits[:count])
        if len(bits) != count:
            raise ProtocolError(f"asked for {count} bits, got {len(bits)}")
        return bits

    async def write_registers(self, address: int, values: Sequence[int], unit: int) -> None:
        if len(values) == 1:
            await self._call(self._client.write_register(address, values[0], device_id=unit))  # FC 6
        else:
            await self._call(self._client.write_registers(address, list(values), device_id=unit))  # FC 16

    async def mask_write_register(self, address: int, and_mask: int, or_mask: int, unit: int) -> None:
        """FC 22: the device applies (current AND and_mask) OR (or_mask AND NOT and_mask) itself, atomically."""
        await self._call(self._client.mask_write_register(address=address, and_mask=and_mask, or_mask=or_mask,
                                                          device_id=unit))

    async def write_coils(self, address: int, values: Sequence[bool], unit: int) -> None:
        if len(values) == 1:
            await self._call(self._client.write_coil(address, values[0], device_id=unit))  # FC 5
        else:
            await self._call(self._client.write_coils(address, list(values), device_id=unit))  # FC 15

    @staticmethod
    def _registers(rr: Any, count: int) -> list[int]:
        regs: list[int] = rr.registers
        if len(regs) != count:
            raise ProtocolError(f"asked for {count} registers, got {len(regs)}")
        return regs

    async def _call(self, request: Any) -> Any:
        if not self._client.connected:
            request.close()
            raise LinkDown(f"not connected to {self.target}")
        try:
            rr = await request
        except ConnectionException as exc:
            raise LinkDown(str(exc)) from exc
        except ModbusIOException as exc:
            if "No response received" in str(exc):
                raise RequestTimeout(f"no answer from {self.target} within {self.timeout:g}s") from exc
            raise ProtocolError(str(exc)) from exc
        except (ModbusException, ValueError) as exc:
            raise ProtocolError(str(exc)) from exc
        except (OSError, asyncio.IncompleteReadError) as exc:
            raise LinkDown(str(exc)) from exc
        if rr.isError():
            code = getattr(rr, "exception_code", 0)
            raise DeviceException(int(code), int(getattr(rr, "function_code", 0)))
        return rr
