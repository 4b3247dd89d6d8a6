"""A Modbus TCP device we did not write: pymodbus's own server datastore (SimDevice/SimData), registers
written as literal words from a datasheet-style table. It shares nothing with connectors/modbus/codec.py
or simulators/, so a test against it checks the gateway's decoding, not our assumptions twice.

Register map (unit 1; 0-based protocol addresses; datasheet notation 40001 + address):

| holding | words                              | meaning                                    |
|---------|------------------------------------|--------------------------------------------|
| 0       | FB2E                               | int16 -1234                                |
| 1       | D431                               | uint16 54321                               |
| 2-3     | F8A4 32EB                          | int32 -123456789, ABCD                     |
| 4-5     | 5E00 B2D0                          | uint32 3000000000, CDAB (word swap)        |
| 6-7     | 41CC 0000                          | float32 25.5, ABCD                         |
| 8-9     | C0BF 0000                          | float32 -1.5, BADC (byte swap)             |
| 10-11   | DB0F 4940                          | float32 3.1415927, DCBA                    |
| 12-15   | 4093 4A45 6D5C FAAD                | float64 1234.5678, ABCD                    |
| 16-19   | 7000 8632 F7D0 FFFF                | int64 -9000000000000, CDAB                 |
| 20-23   | 0000 08C5 A1D8 CCF9                | uint64 18000000000000000000, DCBA          |
| 24-27   | 0000 1F01 FB71 CB04                | int64 1234567890123, BADC                  |
| 28-31   | A9FC D2F1 624D BF50                | float64 -0.001, CDAB                       |
| 32-35   | 5055 4D50 2D37 0000                | string "PUMP-7" (4 registers)              |
| 36-37   | FFFF FEFF                          | int32 -2, BADC                             |
| 38-39   | 7011 0100                          | uint32 70000, DCBA                         |
| 40      | 8005                               | status word: bits 0, 2 and 15 set          |
| 41-44   | (none)                             | address hole: exception 2                  |
| 45      | 0064                               | uint16 100                                 |
| 46      | 0000                               | sensor fault: exception 4 on every read    |
| 47      | 00C8                               | uint16 200                                 |
| 48      | 0007                               | read-only (a write answers exception 2)    |
| 49      | 0000                               | setpoint, writable                         |
| 50      | 00F0                               | control word, bits written one by one      |

Input register 0-1: 42C8 8000 (float32 100.25, ABCD). Coils 0-15: 0005 (coils 0 and 2 on). Discrete
inputs 0-15: 0002 (input 1 on).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

UNIT = 1
HOLDING_LOW = [
    0xFB2E, 0xD431, 0xF8A4, 0x32EB, 0x5E00, 0xB2D0, 0x41CC, 0x0000, 0xC0BF, 0x0000,
    0xDB0F, 0x4940, 0x4093, 0x4A45, 0x6D5C, 0xFAAD, 0x7000, 0x8632, 0xF7D0, 0xFFFF,
    0x0000, 0x08C5, 0xA1D8, 0xCCF9, 0x0000, 0x1F01, 0xFB71, 0xCB04, 0xA9FC, 0xD2F1,
    0x624D, 0xBF50, 0x5055, 0x4D50, 0x2D37, 0x0000, 0xFFFF, 0xFEFF, 0x7011, 0x0100,
    0x8005,
]  # addresses 0-40
HOLDING_HIGH = [0x0064, 0x0000, 0x00C8]  # 45-47
READ_ONLY, SETPOINT, CONTROL = 48, 49, 50
FAULTY = 46
INPUT = [0x42C8, 0x8000]
COILS, DISCRETE = 0x0005, 0x0002

FC_READ_HOLDING, FC_MASK_WRITE = 3, 22


@dataclass
class DatasheetDevice:
    port: int
    server: Any = None
    refuse_mask_write: bool = False
    """Answer function 22 with IllegalFunction, as many small devices do."""
    faulty: set[int] = field(default_factory=lambda: {FAULTY})
    """Holding addresses whose every read answers exception 4 (ServerDeviceFailure)."""
    functions: list[int] = field(default_factory=list)
    """Function codes of the requests that reached the datastore, in order."""

    async def holding(self, address: int, count: int = 1) -> list[int]:
        values: list[int] = await self.server.async_getValues(UNIT, FC_READ_HOLDING, address, count)
        return values

    async def _action(self, function_code: int, start_address: int, address: int, count: int,
                      registers: list[int], values: list[int] | list[bool] | None) -> ExcCodes | None:
        self.functions.append(function_code)
        if function_code == FC_MASK_WRITE and self.refuse_mask_write:
            return ExcCodes.ILLEGAL_FUNCTION
        if function_code == FC_READ_HOLDING and any(address <= a < address + count for a in self.faulty):
            return ExcCodes.DEVICE_FAILURE
        return None

    def sim_device(self) -> SimDevice:
        regs = DataType.REGISTERS
        holding = [
            SimData(0, values=HOLDING_LOW, datatype=regs),
            SimData(45, values=HOLDING_HIGH, datatype=regs),
            SimData(READ_ONLY, values=0x0007, datatype=regs, readonly=True),
            SimData(SETPOINT, values=[0x0000, 0x00F0], datatype=regs),
        ]
        return SimDevice(id=UNIT, simdata=(
            [SimData(0, values=COILS, datatype=DataType.BITS)],
            [SimData(0, values=DISCRETE, datatype=DataType.BITS)],
            holding,
            [SimData(0, values=INPUT, datatype=regs)],
        ), action=self._action)


@contextlib.asynccontextmanager
async def datasheet_device(port: int, **options: Any) -> AsyncIterator[DatasheetDevice]:
    """The device on 127.0.0.1:``port`` in this event loop, until the block ends."""
    device = DatasheetDevice(port, **options)
    device.server = ModbusTcpServer([device.sim_device()], address=("127.0.0.1", port))
    await device.server.serve_forever(background=True)
    try:
        yield device
    finally:
        await device.server.shutdown()
        await asyncio.sleep(0)
