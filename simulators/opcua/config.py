"""YAML description of a simulated OPC-UA server.

Same shape as the Modbus simulator's: ``seed`` and a ``devices:`` mapping, each device one machine
(an Object) with its variables; the value models are the shared generators of ``gateway.generators``
chosen by ``signal:``. A line scenario can embed the same ``devices:`` mapping (or single
``SimMachine`` entries)::

    seed: 1
    namespace: urn:acme:line1
    devices:
      filler_1:
        path: [Line1]                       # parent folders under Objects (optional)
        variables:
          - {name: Temperature, type: Double, unit: degC, signal: sine, center: 60, amplitude: 5}
          - {name: Count, type: UInt32, signal: counter}
          - {name: Setpoint, type: Float, signal: constant, value: 5.5, writable: true}
          - {name: Recipe, type: String, signal: text, text: "A-12"}
          - {name: Started, type: DateTime, signal: clock}
    faults:
      - {at: 30s, kind: stall, duration: 10s}     # the process stops answering (event loop blocked)
      - {at: 60s, kind: restart, down: 3s}         # server stopped and started again
      - {at: 90s, kind: remove_node, device: filler_1, variable: Temperature}
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

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

VarType = Literal[
    "Boolean", "SByte", "Byte", "Int16", "UInt16", "Int32", "UInt32", "Int64", "UInt64",
    "Float", "Double", "String", "DateTime",
]


@config_dataclass()
class SimVariable:
    """A variable; the generator fields sit beside these (a dataclass, as the signal models it is mixed
    with are)."""

    name: Annotated[str, Field(min_length=1, description="browse name; also the string NodeId `<machine>.<name>`")]
    type: VarType = "Double"
    unit: Annotated[str | None, Field(description="engineering unit (EngineeringUnits property)")] = None
    eu_range: Annotated[tuple[float, float] | None, Field(description="EURange [low, high] (percent deadband)")] = None
    writable: Annotated[bool, Field(description="clients may write it; the generator then leaves it alone")] = False


@config_dataclass()
class VarSine(SineSignal, SimVariable):
    pass


@config_dataclass()
class VarRamp(RampSignal, SimVariable):
    pass


@config_dataclass()
class VarRandomWalk(RandomWalkSignal, SimVariable):
    pass


@config_dataclass()
class VarCounter(CounterSignal, SimVariable):
    pass


@config_dataclass()
class VarSquare(SquareSignal, SimVariable):
    pass


@config_dataclass()
class VarStep(StepSignal, SimVariable):
    pass


@config_dataclass()
class VarConstant(ConstantSignal, SimVariable):
    pass


@config_dataclass()
class VarText(SimVariable):
    """A fixed text (type String), e.g. a recipe or serial number."""

    signal: Literal["text"]
    text: str = ""


@config_dataclass()
class VarClock(SimVariable):
    """The current time (type DateTime)."""

    signal: Literal["clock"]


SimVar = Annotated[
    VarSine | VarRamp | VarRandomWalk | VarCounter | VarSquare | VarStep | VarConstant | VarText | VarClock,
    Field(discriminator="signal"),
]


class SimMachine(StrictModel):
    path: list[str] = Field(default_factory=list, description="folders under Objects holding the machine")
    variables: list[SimVar] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> SimMachine:
        names = [v.name for v in self.variables]
        if len(set(names)) != len(names):
            raise ValueError("variable names must be unique within a machine")
        for v in self.variables:
            if isinstance(v, VarText) and v.type != "String":
                raise ValueError(f"{v.name}: signal text needs type String")
            if isinstance(v, VarClock) and v.type != "DateTime":
                raise ValueError(f"{v.name}: signal clock needs type DateTime")
        return self


class SimFault(StrictModel):
    at: Duration = Field(description="time after start")
    kind: Literal["stall", "restart", "remove_node"]
    duration: Duration = Field(5.0, description="stall: how long the server stops answering")
    down: Duration = Field(2.0, description="restart: how long the server stays down")
    device: str | None = None
    variable: str | None = None

    @model_validator(mode="after")
    def _target(self) -> SimFault:
        if self.kind == "remove_node" and (self.device is None or self.variable is None):
            raise ValueError("remove_node needs device and variable")
        return self


class SimLimits(StrictModel):
    """Operation limits the server advertises (0: none). asyncua does not enforce them; the simulator counts."""

    max_nodes_per_read: int = Field(0, ge=0)
    max_monitored_items_per_call: int = Field(0, ge=0)


SimPolicy = Literal["None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"]
SimMode = Literal["Sign", "SignAndEncrypt"]


class SimSecurity(StrictModel):
    policies: list[SimPolicy] = Field(default_factory=lambda: list[SimPolicy](["None"]))
    modes: list[SimMode] = Field(default_factory=lambda: list[SimMode](["SignAndEncrypt"]))
    users: dict[str, str] = Field(default_factory=dict, description="username -> password; empty: anonymous")
    pki_dir: str = Field("sim-pki", description="where the server's certificate is generated on first start")
    application_uri: str = "urn:edge-gateway:simulator"
    certificate_uri: str | None = Field(
        None, description="URI SAN of the generated server certificate; default application_uri (a different "
        "one makes a misconfigured server whose certificate does not match the URI it announces)"
    )
    user_certificates: list[str] = Field(
        default_factory=list, description="DER certificates accepted as X509 user identities (enables them)"
    )


class OpcUaSimConfig(StrictModel):
    seed: int = 0
    namespace: str = "urn:edge-gateway:simulator"
    extra_namespaces: list[str] = Field(
        default_factory=list, description="registered before `namespace` (shifts its index)"
    )
    path: str = Field("/sim", description="endpoint path")
    update_interval: Duration = Field(1.0, gt=0, description="how often the generators write new values")
    limits: SimLimits = Field(default_factory=SimLimits)
    security: SimSecurity = Field(default_factory=SimSecurity)
    devices: dict[Name, SimMachine] = Field(min_length=1)
    faults: list[SimFault] = Field(default_factory=list)
