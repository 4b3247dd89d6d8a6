"""The line scenario: a YAML description of a production line, shared by the Modbus and OPC-UA simulators.

A scenario names its machines (each one Modbus unit id and one OPC-UA object), gives each a random
state machine and a list of signals that follow the state, and schedules faults. Everything random is
seeded from ``seed`` through ``derive_seed``, so a scenario replays identically.

Machine states and their numeric codes (the ``state`` signal):

==  ===========  ==========================================================================
0   offline      unknown / not reporting (never produced by the model itself)
1   running      producing: counters advance, ``running:`` generators drive the signals
2   idle         stopped on purpose (random, from ``states:``)
3   starved      the upstream machine is not running (not random: follows the upstream)
4   fault        stopped by a fault: ``alarm`` is true, ``alarm_code`` holds the code
5   maintenance  planned stop (random, from ``states:``)
==  ===========  ==========================================================================

Signal kinds (``kind:``; a signal with ``signal:`` and no ``kind`` is a plain generator, the same in
every state, and one with neither is ``analog``): ``analog``, ``good_count``, ``reject_count``,
``total_count``, ``state``, ``alarm``, ``alarm_code``, ``setpoint`` (writable), ``sum``, ``integral``,
``text``. See the shipped scenarios in ``simulators/scenarios`` for a commented example of each.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Discriminator, Field, Tag, model_validator

from connectors.modbus.codec import DataType, Order
from connectors.modbus.config import Table
from gateway.config.base import Duration, Name, StrictModel, config_dataclass
from gateway.generators import (
    ConstantSignal,
    CounterSignal,
    PositiveDuration,
    RampSignal,
    RandomWalkSignal,
    SignalConfig,
    SignalModel,
    SineSignal,
    SquareSignal,
    StepSignal,
)
from simulators.opcua.config import VarType

STATE_CODES: dict[str, int] = {"offline": 0, "running": 1, "idle": 2, "starved": 3, "fault": 4, "maintenance": 5}
STATE_NAMES: dict[int, str] = {code: name for name, code in STATE_CODES.items()}
STATE_DESCRIPTION = "machine state: 0 offline, 1 running, 2 idle, 3 starved, 4 fault, 5 maintenance"

StateName = Literal["running", "idle", "starved", "fault", "maintenance"]
RandomState = Literal["running", "idle", "fault", "maintenance"]
"""States a machine enters by chance; ``starved`` only follows the upstream machine."""
StoppedState = Literal["idle", "starved", "fault", "maintenance"]
FaultProtocol = Literal["modbus", "opcua", "both"]

Kind = Literal["bool", "int", "float", "str"]
"""The Python type of a point's value."""

SIGNAL_NAME = r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$"
SignalName = Annotated[str, Field(pattern=SIGNAL_NAME, min_length=1, max_length=64)]
"""snake_case: usable as a gateway tag name, a Modbus tag name and an OPC-UA browse name."""


# --- placement overrides -----------------------------------------------------------------------------


class ModbusOverride(StrictModel):
    """Where a signal goes in its machine's unit; any field left out is chosen automatically."""

    table: Table | None = None
    address: int | None = Field(None, ge=0, le=65535, description="0-based protocol address")
    type: DataType | None = None
    order: Order | None = Field(None, description="default: the machine's order, else the scenario's modbus.order")
    length: int | None = Field(None, ge=1, le=125, description="registers of a string")

    @model_validator(mode="after")
    def _no_bit(self) -> ModbusOverride:
        if self.type == "bit":
            raise ValueError("type bit is not supported for line signals: use a coil/discrete_input bool")
        if self.length is not None and self.type not in (None, "string"):
            raise ValueError("`length` is only for type string")
        return self


class OpcUaOverride(StrictModel):
    type: VarType


# --- signals -----------------------------------------------------------------------------------------


@config_dataclass()
class SignalBase(ABC):
    """What every signal of a machine has. A dataclass, as the generator signal models mixed into the plain
    ``signal:`` kinds are."""

    name: SignalName
    description: str = ""
    unit: Annotated[str | None, Field(description="engineering unit, e.g. degC, bar, m/min")] = None
    modbus: ModbusOverride | None = None
    opcua: OpcUaOverride | None = None

    @abstractmethod
    def value_kind(self) -> Kind:
        """The type of the value before any placement override (which may turn int into float and back)."""

    def is_writable(self) -> bool:
        return False

    def role_name(self) -> str:
        """``kind`` (``analog``, ``setpoint``...), or the generator of a plain ``signal:``."""
        return str(getattr(self, "kind", None) or getattr(self, "signal", ""))

    def refs(self) -> tuple[str, ...]:
        """Signals this one is computed from (``machine.signal`` or ``signal`` of the same machine)."""
        return ()

    def limits(self) -> tuple[float | None, float | None]:
        """EU range or setpoint limits, when known."""
        return None, None

    def auto_description(self) -> str:
        return ""


EuRange = tuple[float, float]


def _check_range(r: EuRange | None) -> None:
    if r is not None and r[0] >= r[1]:
        raise ValueError(f"eu_range low ({r[0]:g}) must be below high ({r[1]:g})")


def _value_tag(v: Any) -> str:
    """Route a target to one branch, so a mistake gets one error message instead of one per branch."""
    if isinstance(v, dict | SignalModel):
        return "generator"
    if isinstance(v, str):
        try:
            float(v)
        except ValueError:
            return "hold"
    return "number"


_VALUE_ERROR = "expected a number, `hold` or a generator ({signal: sine, ...})"

Target = Annotated[
    Annotated[float, Tag("number")] | Annotated[SignalConfig, Tag("generator")],
    Discriminator(_value_tag, custom_error_type="target", custom_error_message=_VALUE_ERROR),
]
"""The running target: a number or a generator."""

StateValue = Annotated[
    Annotated[float, Tag("number")]
    | Annotated[Literal["hold"], Tag("hold")]
    | Annotated[SignalConfig, Tag("generator")],
    Discriminator(_value_tag, custom_error_type="target", custom_error_message=_VALUE_ERROR),
]
"""A per-state value: a number, ``hold`` (keep the last target) or a generator."""

Stopped = Annotated[
    Annotated[float, Tag("number")] | Annotated[Literal["hold"], Tag("hold")],
    Discriminator(_value_tag, custom_error_type="target", custom_error_message="expected a number or `hold`"),
]


@config_dataclass()
class AnalogSignal(SignalBase):
    """A measurement that follows the machine state, through a first-order lag."""

    kind: Literal["analog"] = "analog"
    running: Annotated[Target, Field(description="the target while running: a generator or a number")]
    states: Annotated[
        dict[StoppedState, StateValue], Field(description="the target in other states (default: `stopped`)")
    ] = dataclasses.field(default_factory=dict)
    stopped: Annotated[Stopped, Field(description="the target in any state not listed")] = 0.0
    lag: Annotated[Duration, Field(description="time constant of the first-order lag (0: follows immediately)")] = 0.0
    type: Annotated[Literal["float", "int"], Field(description="int: the value is rounded")] = "float"
    eu_range: EuRange | None = None

    @model_validator(mode="after")
    def _range(self) -> AnalogSignal:
        _check_range(self.eu_range)
        return self

    def value_kind(self) -> Kind:
        return self.type

    def limits(self) -> tuple[float | None, float | None]:
        return (None, None) if self.eu_range is None else self.eu_range


@config_dataclass()
class _Flat(SignalBase):
    """A plain generator (``signal: sine`` ...): the same in every state, like the other simulators' tags."""

    eu_range: EuRange | None = None

    def limits(self) -> tuple[float | None, float | None]:
        return (None, None) if self.eu_range is None else self.eu_range


def _levels_kind(levels: list[bool | int | float] | tuple[bool | int | float, ...], noise: float) -> Kind:
    if noise:
        return "float"
    if all(isinstance(v, bool) for v in levels):
        return "bool"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in levels):
        return "int"
    return "float"


@config_dataclass()
class FlatSine(SineSignal, _Flat):
    def value_kind(self) -> Kind:
        return "float"


@config_dataclass()
class FlatRamp(RampSignal, _Flat):
    def value_kind(self) -> Kind:
        return "float"


@config_dataclass()
class FlatRandomWalk(RandomWalkSignal, _Flat):
    def value_kind(self) -> Kind:
        return "float"


@config_dataclass()
class FlatCounter(CounterSignal, _Flat):
    def value_kind(self) -> Kind:
        return "int"


@config_dataclass()
class FlatSquare(SquareSignal, _Flat):
    def value_kind(self) -> Kind:
        return _levels_kind([self.low, self.high], self.noise)


@config_dataclass()
class FlatStep(StepSignal, _Flat):
    def value_kind(self) -> Kind:
        return _levels_kind(self.levels, self.noise)


@config_dataclass()
class FlatConstant(ConstantSignal, _Flat):
    def value_kind(self) -> Kind:
        return _levels_kind([self.value], self.noise)


@config_dataclass()
class _Count(SignalBase):
    wrap: Annotated[int | None, Field(
        ge=2, description="the counter goes back to 0 on reaching this; default: the register type's range"
    )] = None

    def value_kind(self) -> Kind:
        return "int"


@config_dataclass()
class GoodCount(_Count):
    kind: Literal["good_count"]

    def auto_description(self) -> str:
        return "good products (counts while running)"


@config_dataclass()
class RejectCount(_Count):
    kind: Literal["reject_count"]

    def auto_description(self) -> str:
        return "rejected products (counts while running)"


@config_dataclass()
class TotalCount(_Count):
    kind: Literal["total_count"]
    factor: Annotated[float, Field(
        gt=0, description="counts per product: 4 = four tool changes per part, 0.02 = one per 50 parts"
    )] = 1.0

    def auto_description(self) -> str:
        return "products made (counts while running)" if self.factor == 1 else f"{self.factor:g} counts per product"


@config_dataclass()
class StateSignal(SignalBase):
    kind: Literal["state"]

    def value_kind(self) -> Kind:
        return "int"

    def auto_description(self) -> str:
        return STATE_DESCRIPTION


@config_dataclass()
class AlarmSignal(SignalBase):
    kind: Literal["alarm"]

    def value_kind(self) -> Kind:
        return "bool"

    def auto_description(self) -> str:
        return "true while the machine is in fault"


@config_dataclass()
class AlarmCodeSignal(SignalBase):
    kind: Literal["alarm_code"]

    def value_kind(self) -> Kind:
        return "int"

    def auto_description(self) -> str:
        return "active fault code, 0 when none"


@config_dataclass()
class SetpointSignal(SignalBase):
    """A writable value: clients change it, and it stays."""

    kind: Literal["setpoint"]
    value: Annotated[bool | int | float, Field(description="initial value")]
    type: Literal["float", "int", "bool"] = "float"
    min: Annotated[float | None, Field(description="writes below are refused")] = None
    max: Annotated[float | None, Field(description="writes above are refused")] = None

    @model_validator(mode="after")
    def _limits(self) -> SetpointSignal:
        if self.type == "bool":
            if self.min is not None or self.max is not None:
                raise ValueError("a bool setpoint has no min/max")
            if not isinstance(self.value, bool):
                raise ValueError(f"a bool setpoint needs value true or false, not {self.value!r}")
            return self
        if isinstance(self.value, bool):
            raise ValueError(f"a {self.type} setpoint needs a number, not {self.value!r}")
        if self.type == "int" and not float(self.value).is_integer():
            raise ValueError(f"an int setpoint needs a whole number, not {self.value!r}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min:g}) is above max ({self.max:g})")
        if (self.min is not None and self.value < self.min) or (self.max is not None and self.value > self.max):
            raise ValueError(f"value {self.value:g} lies outside [min, max]")
        return self

    def value_kind(self) -> Kind:
        return self.type

    def is_writable(self) -> bool:
        return True

    def limits(self) -> tuple[float | None, float | None]:
        return self.min, self.max

    def auto_description(self) -> str:
        return "setpoint (writable)"


@config_dataclass()
class SumSignal(SignalBase):
    """The sum of numeric signals, e.g. a power meter's total of the machines' power."""

    kind: Literal["sum"]
    of: Annotated[list[str], Field(min_length=1, description="`machine.signal`, or `signal` of the same machine")]
    eu_range: EuRange | None = None

    def value_kind(self) -> Kind:
        return "float"

    def refs(self) -> tuple[str, ...]:
        return tuple(self.of)

    def limits(self) -> tuple[float | None, float | None]:
        return (None, None) if self.eu_range is None else self.eu_range

    def auto_description(self) -> str:
        return "sum of " + ", ".join(self.of)


@config_dataclass()
class IntegralSignal(SignalBase):
    """The running integral of a signal: ``of: power`` (kW) ``per: 1h`` gives energy in kWh."""

    kind: Literal["integral"]
    of: Annotated[str, Field(description="`signal` of the same machine (or `machine.signal`)")]
    per: Annotated[PositiveDuration, Field(description="time unit of the integral (1h: kW -> kWh)")] = 3600.0

    def value_kind(self) -> Kind:
        return "float"

    def refs(self) -> tuple[str, ...]:
        return (self.of,)

    def auto_description(self) -> str:
        return f"integral of {self.of} per {self.per:g} s"


@config_dataclass()
class TextSignal(SignalBase):
    kind: Literal["text"]
    text: str = ""
    writable: bool = False
    length: Annotated[
        int | None, Field(ge=1, le=125, description="registers reserved (2 bytes each); default: fits text")
    ] = None

    @model_validator(mode="after")
    def _fits(self) -> TextSignal:
        if self.length is not None and len(self.text.encode()) > 2 * self.length:
            raise ValueError(f"text {self.text!r} needs more than {self.length} registers")
        return self

    def value_kind(self) -> Kind:
        return "str"

    def is_writable(self) -> bool:
        return self.writable

    @property
    def registers(self) -> int:
        return self.length if self.length is not None else max(1, math.ceil(len(self.text.encode()) / 2))


_FLAT_TAGS = ("sine", "ramp", "random_walk", "counter", "square", "step", "constant")
_KINDS = (
    "analog", "good_count", "reject_count", "total_count", "state", "alarm", "alarm_code", "setpoint", "sum",
    "integral", "text",
)


def _signal_tag(v: Any) -> str:
    """``kind`` if given; else ``signal`` (a plain generator); else ``analog``."""
    if isinstance(v, dict):
        kind, signal = v.get("kind"), v.get("signal")
    else:
        kind, signal = getattr(v, "kind", None), getattr(v, "signal", None)
    if kind is not None:
        return str(kind)
    if signal is not None:
        return f"signal:{signal}"
    return "analog"


Signal = Annotated[
    Annotated[AnalogSignal, Tag("analog")]
    | Annotated[GoodCount, Tag("good_count")]
    | Annotated[RejectCount, Tag("reject_count")]
    | Annotated[TotalCount, Tag("total_count")]
    | Annotated[StateSignal, Tag("state")]
    | Annotated[AlarmSignal, Tag("alarm")]
    | Annotated[AlarmCodeSignal, Tag("alarm_code")]
    | Annotated[SetpointSignal, Tag("setpoint")]
    | Annotated[SumSignal, Tag("sum")]
    | Annotated[IntegralSignal, Tag("integral")]
    | Annotated[TextSignal, Tag("text")]
    | Annotated[FlatSine, Tag("signal:sine")]
    | Annotated[FlatRamp, Tag("signal:ramp")]
    | Annotated[FlatRandomWalk, Tag("signal:random_walk")]
    | Annotated[FlatCounter, Tag("signal:counter")]
    | Annotated[FlatSquare, Tag("signal:square")]
    | Annotated[FlatStep, Tag("signal:step")]
    | Annotated[FlatConstant, Tag("signal:constant")],
    Discriminator(
        _signal_tag,
        custom_error_type="signal_kind",
        custom_error_message=f"unknown signal: `kind` is one of {', '.join(_KINDS)}; or give no kind and "
        f"`signal:` one of {', '.join(_FLAT_TAGS)}",
    ),
]


# --- machines ----------------------------------------------------------------------------------------


class StateConfig(StrictModel):
    mean: PositiveDuration = Field(description="mean time in the state (exponentially distributed)")
    next: dict[RandomState, float] | None = Field(
        None, description="relative weights of the next state; default running (from running: idle)"
    )

    @model_validator(mode="after")
    def _weights(self) -> StateConfig:
        if self.next is not None and (not self.next or any(w < 0 for w in self.next.values())
                                      or sum(self.next.values()) <= 0):
            raise ValueError("next needs non-negative weights with a positive sum")
        return self


class MachineConfig(StrictModel):
    unit: int = Field(ge=1, le=247, description="Modbus unit id, unique in the line")
    description: str = ""
    rate: float = Field(0.0, ge=0, description="products per second while running")
    cycle_time: PositiveDuration | None = Field(None, description="alternative to rate: seconds per product")
    reject_ratio: float = Field(0.0, ge=0, le=1, description="probability that a product is a reject")
    upstream: Name | None = Field(None, description="the machine feeding this one: starved while it is not running")
    initial: RandomState = "running"
    order: Order | None = Field(None, description="this unit's word/byte order; default the scenario's modbus.order")
    states: dict[RandomState, StateConfig] = Field(
        default_factory=dict, description="random state machine; empty: always running"
    )
    fault_codes: list[int] = Field(
        default_factory=lambda: [1], min_length=1, description="codes drawn when a random fault happens"
    )
    signals: list[Signal] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> MachineConfig:
        if self.cycle_time is not None and self.rate:
            raise ValueError("give rate or cycle_time, not both")
        if any(not 1 <= c <= 65535 for c in self.fault_codes):
            raise ValueError("fault codes must lie in 1..65535")
        names = [s.name for s in self.signals]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate signal name(s): {', '.join(dupes)}")
        for state, cfg in self.states.items():
            for target in self.next_weights(state, cfg):
                if target != "running" and target not in self.states:
                    what = "next" if cfg.next is not None else "the default next state"
                    raise ValueError(
                        f"states.{state}: {what} {target!r} has no entry in states (it would never end); "
                        f"add `{target}: {{mean: ...}}`" + ("" if cfg.next is not None else " or give `next`")
                    )
        return self

    @staticmethod
    def next_weights(state: str, cfg: StateConfig) -> dict[str, float]:
        if cfg.next is not None:
            return {k: w for k, w in cfg.next.items() if w > 0}
        return {"idle": 1.0} if state == "running" else {"running": 1.0}

    @property
    def products_per_second(self) -> float:
        return 1.0 / self.cycle_time if self.cycle_time is not None else self.rate

    def signal(self, name: str) -> SignalBase | None:
        return next((s for s in self.signals if s.name == name), None)


# --- scheduled faults --------------------------------------------------------------------------------


class _FaultBase(StrictModel):
    at: Duration = Field(description="sim time of the first occurrence")
    every: PositiveDuration | None = Field(None, description="repeat with this period")

    @abstractmethod
    def length(self) -> float:
        """How long each occurrence lasts."""

    @model_validator(mode="after")
    def _period(self) -> _FaultBase:
        if self.every is not None and self.every <= self.length():
            raise ValueError(f"every ({self.every:g} s) must be longer than one occurrence ({self.length():g} s)")
        return self

    def window(self, t: float) -> tuple[float, float] | None:
        """The occurrence ``[start, end)`` covering ``t``, if any."""
        if t < self.at:
            return None
        start = self.at if self.every is None else self.at + math.floor((t - self.at) / self.every) * self.every
        end = start + self.length()
        return (start, end) if t < end else None


class MachineFaultEvent(_FaultBase):
    """The machine goes to fault with ``code`` for ``duration``, then back to running."""

    kind: Literal["machine_fault"]
    machine: Name
    duration: PositiveDuration
    code: int | None = Field(None, ge=1, le=65535, description="default: the machine's first fault code")

    def length(self) -> float:
        return self.duration


class FrozenEvent(_FaultBase):
    """The signals keep their value for ``duration`` (a stuck sensor); the machine itself carries on."""

    kind: Literal["frozen"]
    machine: Name
    signals: list[str] | None = Field(None, description="default: all of the machine's signals")
    duration: PositiveDuration

    def length(self) -> float:
        return self.duration


class OfflineEvent(_FaultBase):
    """The machine does not answer (Modbus: no response; OPC-UA: bad status)."""

    kind: Literal["offline"]
    machine: Name
    duration: PositiveDuration
    protocol: FaultProtocol = "both"

    def length(self) -> float:
        return self.duration


class ExceptionEvent(_FaultBase):
    """Requests to the machine fail: Modbus exception ``code``; OPC-UA a bad status."""

    kind: Literal["exception"]
    machine: Name
    code: int = Field(ge=1, le=11, description="Modbus exception code (4: server device failure)")
    duration: PositiveDuration
    protocol: FaultProtocol = "both"

    def length(self) -> float:
        return self.duration


class SlowEvent(_FaultBase):
    """The machine answers only after ``delay``."""

    kind: Literal["slow"]
    machine: Name
    delay: PositiveDuration
    duration: PositiveDuration
    protocol: FaultProtocol = "both"

    def length(self) -> float:
        return self.duration


class RestartEvent(_FaultBase):
    """A protocol server goes down for ``down`` and starts again."""

    kind: Literal["restart"]
    protocol: FaultProtocol = "both"
    down: PositiveDuration = 5.0

    def length(self) -> float:
        return self.down


ScheduledFault = Annotated[
    MachineFaultEvent | FrozenEvent | OfflineEvent | ExceptionEvent | SlowEvent | RestartEvent,
    Field(discriminator="kind"),
]


# --- the scenario ------------------------------------------------------------------------------------


class OpcUaPlacement(StrictModel):
    namespace: str = "urn:edge-gateway:line"
    path: str = Field("/line", description="endpoint path")
    folder: str = Field("Line", min_length=1, description="folder under Objects holding the machines")
    port: int = Field(4840, ge=1, le=65535)


class ModbusPlacement(StrictModel):
    port: int = Field(5020, ge=1, le=65535)
    order: Order = Field("ABCD", description="default word/byte order of 32/64-bit values")


class LineScenario(StrictModel):
    name: str = Field(min_length=1)
    description: str = ""
    seed: int = 0
    tick: PositiveDuration = Field(0.5, description="model step: values change at most this often (sim time)")
    opcua: OpcUaPlacement = Field(default_factory=OpcUaPlacement)
    modbus: ModbusPlacement = Field(default_factory=ModbusPlacement)
    machines: dict[Name, MachineConfig] = Field(min_length=1)
    faults: list[ScheduledFault] = Field(default_factory=list)

    def resolve(self, machine: str, ref: str) -> tuple[str, str]:
        """``machine.signal`` or ``signal`` (of ``machine``) -> (machine, signal)."""
        m, _, s = ref.rpartition(".")
        return (m or machine), s

    @model_validator(mode="after")
    def _check(self) -> LineScenario:
        by_unit: dict[int, str] = {}
        for name, m in self.machines.items():
            if m.unit in by_unit:
                raise ValueError(f"unit ids must be unique: {m.unit} is used by {by_unit[m.unit]} and {name}")
            by_unit[m.unit] = name
        self._check_upstream()
        self._check_refs()
        self._check_faults()
        # Placement is checked here so that an overlap is a config error like any other; points.py
        # imports this module, hence the late import.
        from simulators.line.points import allocate

        allocate(self)
        return self

    def _check_upstream(self) -> None:
        for name, m in self.machines.items():
            if m.upstream is None:
                continue
            if m.upstream not in self.machines:
                raise ValueError(f"machines.{name}.upstream: no machine {m.upstream!r}")
            seen: set[str] = {name}
            cur: str | None = m.upstream
            while cur is not None:
                if cur in seen:
                    raise ValueError(f"machines.{name}.upstream: the upstream chain loops back to {cur}")
                seen.add(cur)
                cur = self.machines[cur].upstream

    def _check_refs(self) -> None:
        deps: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for name, m in self.machines.items():
            for s in m.signals:
                for ref in s.refs():
                    target = self.resolve(name, ref)
                    other = self.machines.get(target[0])
                    sig = None if other is None else other.signal(target[1])
                    if sig is None:
                        raise ValueError(f"machines.{name}.{s.name}: {ref!r} names no signal of the line")
                    if sig.value_kind() not in ("int", "float"):
                        raise ValueError(f"machines.{name}.{s.name}: {ref!r} is not numeric")
                    deps.setdefault((name, s.name), []).append(target)
        state: dict[tuple[str, str], int] = {}  # 1 visiting, 2 done

        def visit(node: tuple[str, str]) -> None:
            if state.get(node) == 2:
                return
            if state.get(node) == 1:
                raise ValueError(f"machines.{node[0]}.{node[1]}: sum/integral references loop back to it")
            state[node] = 1
            for d in deps.get(node, ()):
                visit(d)
            state[node] = 2

        for node in deps:
            visit(node)

    def _check_faults(self) -> None:
        for i, f in enumerate(self.faults):
            if isinstance(f, RestartEvent):
                continue
            m = self.machines.get(f.machine)
            if m is None:
                raise ValueError(f"faults.{i}: no machine {f.machine!r} (machines: {', '.join(self.machines)})")
            if isinstance(f, FrozenEvent):
                missing = [s for s in f.signals or () if m.signal(s) is None]
                if missing:
                    raise ValueError(f"faults.{i}: machine {f.machine} has no signal(s) {', '.join(missing)}")


def load_scenario(path: Path) -> LineScenario:
    """The validated scenario (raises ValidationError, OSError, yaml.YAMLError)."""
    return LineScenario.model_validate(yaml.safe_load(path.read_text()))
