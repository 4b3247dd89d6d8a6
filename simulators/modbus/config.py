"""YAML description of simulated Modbus devices.

Top level: ``seed`` and a ``devices:`` mapping (name -> unit id, tags, faults). A device is
self-contained, so a line scenario can embed the same ``devices:`` mapping (or single
``SimDeviceConfig`` entries, one per machine) in its own file and drive the tags it wants from its
machine state, while the generators here keep the rest alive::

    seed: 1
    devices:
      press_1:
        unit: 1
        tags:
          - {name: temp, table: holding, address: 0, type: float32, order: CDAB, signal: sine, center: 60}
          - {name: setpoint, address: 10, type: int16, signal: constant, value: 100}
        faults:
          - {table: holding, address: 100, count: 2, exception: 2}   # illegal address on 100..101
          - {no_response: true}                                      # the whole unit is silent
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from connectors.modbus.codec import DataType, Order, register_count
from connectors.modbus.config import BIT_TABLES, Table
from gateway.config.base import Duration, Name, StrictModel, config_dataclass
from gateway.generators import (
    ConstantSignal,
    CounterSignal,
    RampSignal,
    RandomWalkSignal,
    SineSignal,
    SquareSignal,
    StepSignal,
)


@config_dataclass()
class SimRegister:
    """Where and how a simulated tag is stored; the generator fields sit beside these (a dataclass, as the
    signal models it is mixed with are)."""

    name: Annotated[str, Field(min_length=1)]
    table: Table = "holding"
    address: Annotated[int, Field(ge=0, le=65535, description="0-based protocol address")]
    type: DataType = "uint16"
    order: Order = "ABCD"
    length: Annotated[int | None, Field(ge=1, le=125, description="registers of a string")] = None
    bit: Annotated[int | None, Field(ge=0, le=15, description="bit number for type bit")] = None

    @model_validator(mode="after")
    def _shape(self) -> SimRegister:
        if (self.table in BIT_TABLES) != (self.type == "bool"):
            raise ValueError("coil/discrete_input tags are type bool, and bool lives only there")
        if (self.type == "bit") != (self.bit is not None):
            raise ValueError("`bit` is required for type bit and only allowed there")
        if (self.type == "string") != (self.length is not None):
            raise ValueError("`length` is required for type string and only allowed there")
        if self.address + self.registers > 65536:
            raise ValueError("tag runs past address 65535")
        return self

    @property
    def registers(self) -> int:
        return register_count(self.type, self.length)


@config_dataclass()
class SimSine(SineSignal, SimRegister):
    pass


@config_dataclass()
class SimRamp(RampSignal, SimRegister):
    pass


@config_dataclass()
class SimRandomWalk(RandomWalkSignal, SimRegister):
    pass


@config_dataclass()
class SimCounter(CounterSignal, SimRegister):
    pass


@config_dataclass()
class SimSquare(SquareSignal, SimRegister):
    pass


@config_dataclass()
class SimStep(StepSignal, SimRegister):
    pass


@config_dataclass()
class SimConstant(ConstantSignal, SimRegister):
    pass


@config_dataclass()
class SimString(SimRegister):
    """A fixed text (``type: string``), e.g. a serial number or recipe name."""

    signal: Literal["text"]
    text: str = ""


SimTag = Annotated[
    SimSine | SimRamp | SimRandomWalk | SimCounter | SimSquare | SimStep | SimConstant | SimString,
    Field(discriminator="signal"),
]


class SimFault(StrictModel):
    """A fault injected on requests touching ``table``/``address..address+count-1`` (all, if unset)."""

    table: Table | None = None
    address: int | None = Field(None, ge=0, le=65535)
    count: int = Field(1, ge=1)
    exception: int | None = Field(None, ge=1, le=11, description="answer with this exception code")
    no_response: bool = Field(False, description="do not answer at all")
    delay: Duration = Field(0.0, description="answer only after this long")
    drop_connection: bool = Field(False, description="close the client's connection instead of answering")

    def matches(self, table: Table, start: int, end: int) -> bool:
        if self.table is not None and self.table != table:
            return False
        if self.address is None:
            return True
        return start < self.address + self.count and self.address < end


class SimDeviceConfig(StrictModel):
    unit: int = Field(ge=1, le=247)
    tags: list[SimTag] = Field(default_factory=list)
    faults: list[SimFault] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> SimDeviceConfig:
        names = [t.name for t in self.tags]
        if len(set(names)) != len(names):
            raise ValueError("tag names must be unique within a device")
        return self


class SimulatorConfig(StrictModel):
    seed: int = 0
    devices: dict[Name, SimDeviceConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _units(self) -> SimulatorConfig:
        units = [d.unit for d in self.devices.values()]
        if len(set(units)) != len(units):
            raise ValueError("unit ids must be unique")
        return self
