"""Building blocks every config model uses: strict models, durations, and the plug-in base models."""

from __future__ import annotations

import dataclasses
import re
import string
from collections.abc import Callable, Iterator
from typing import Annotated, Any, Literal, TypeVar, cast, dataclass_transform

import pydantic.dataclasses
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator

NAME_PATTERN = r"^[a-z0-9]+(_[a-z0-9]+)*$"
"""Source, sink and device names: lowercase, digits, single underscores (``__`` is the env delimiter)."""

Name = Annotated[str, Field(pattern=NAME_PATTERN, min_length=1, max_length=64)]


class StrictModel(BaseModel):
    """Every config model rejects unknown keys (pydantic ignores them by default in nested models)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


_C = TypeVar("_C")
_DATACLASS_CONFIG = ConfigDict(extra="forbid")  # `frozen` goes to the decorator alone: given twice, pydantic warns


@dataclass_transform(frozen_default=True, kw_only_default=True, field_specifiers=(Field, dataclasses.field))
def config_dataclass(*, slots: bool = False) -> Callable[[type[_C]], type[_C]]:
    """A config model kept by the thousand (tags, and the models mixed into them): a frozen, keyword-only
    pydantic dataclass that refuses unknown keys like ``StrictModel``, without a BaseModel's per-instance
    ``__dict__`` and fields-set when ``slots``.

    Give constraints and descriptions as ``name: Annotated[T, Field(...)] = default``: pydantic drops the
    class's ``kw_only`` for a field whose default is a ``Field(...)`` and moves it first (JSON Schema and
    error order). A pydantic dataclass and a BaseModel cannot inherit from each other, so a model mixing
    one of these in is one too; of its bases, only one with fields may be slotted (CPython's layout rule).
    """

    def wrap(cls: type[_C]) -> type[_C]:
        made = pydantic.dataclasses.dataclass(cls, frozen=True, kw_only=True, slots=slots, config=_DATACLASS_CONFIG)
        return cast("type[_C]", made)

    return wrap


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(ns|us|µs|ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0,
    None: 1.0,
}


def parse_duration(value: Any) -> float:
    """``"250ms"``, ``"1s"``, ``"5m"``, ``"1.5h"`` or a bare number of seconds -> seconds (float)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 250ms, 1s, 5m")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("expected a non-negative duration")
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    raise ValueError(f"expected a duration such as 250ms, 1s, 5m, 2h (got {value!r})")


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^\d+(\.\d+)?(ns|us|ms|s|m|h|d)?$"},
                {"type": "number", "minimum": 0},
            ],
            "description": "a duration: 250ms, 1s, 5m, 2h, 1d, or seconds as a number",
        }
    ),
]
"""A duration in seconds, written in config as ``250ms``, ``1s``, ``5m``."""


TEMPLATE_FIELDS = frozenset({"enterprise", "site", "area", "line", "source", "device", "tag"})
"""Placeholders a sink's topic/measurement/tag templates may use (ISA-95 site fields, then the sample's)."""


def check_template(template: str, allowed: frozenset[str] = TEMPLATE_FIELDS) -> str:
    """Reject unknown ``{placeholders}`` at load time, not at the first write."""
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise ValueError(f"bad template {template!r}: {exc}") from None
    unknown = names - allowed
    if unknown:
        raise ValueError(
            f"unknown placeholder(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(allowed))}"
        )
    return template


def check_at_least(model: BaseModel, upper: str, lower: str) -> None:
    """A backoff's ceiling below its first delay is a typo, not a setting: refuse it, naming both (seconds)."""
    hi, lo = getattr(model, upper), getattr(model, lower)
    if hi < lo:
        raise ValueError(f"{upper} ({hi:g} s) must be at least {lower} ({lo:g} s)")


SEVERITIES: tuple[str, ...] = ("low", "medium", "high", "critical")
"""Alarm severities, mildest first; an alarm sample's value is the rank (1..4, 0 = no alarm active)."""

Severity = Literal["low", "medium", "high", "critical"]


@config_dataclass()
class AlarmRule:
    """One condition on a tag's engineering value: exactly one of above/below/equals/not_equals."""

    above: float | None = None
    below: float | None = None
    equals: float | None = None
    not_equals: float | None = None
    delay: Annotated[Duration, Field(description="the condition must hold this long before the alarm is raised")] = 0.0
    severity: Severity = "high"
    message: Annotated[str | None, Field(max_length=200, description="shown with the alarm; default: the rule")] = None

    @model_validator(mode="after")
    def _one_condition(self) -> AlarmRule:
        given = [k for k in ("above", "below", "equals", "not_equals") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("an alarm rule takes exactly one of above, below, equals, not_equals"
                             + (f" (got {', '.join(given)})" if given else ""))
        return self

    @property
    def text(self) -> str:
        """``above 80``, ``equals 4``: what the rule says, for people."""
        for k in ("above", "below", "equals", "not_equals"):
            v = getattr(self, k)
            if v is not None:
                return f"{k.replace('_', ' ')} {v:g}" + (f" for {self.delay:g} s" if self.delay else "")
        return ""  # unreachable: the validator demands one condition


@config_dataclass(slots=True)
class TagBase:
    """What every protocol's tag shares. Protocol models subclass it and add their addressing.

    A config may hold 100,000 tags, kept for the gateway's life: a slotted dataclass, not a BaseModel. A
    validated ModbusTag costs ~290 bytes (tracemalloc, its name and address included) where the BaseModel
    cost ~640, most of it the per-instance ``__dict__`` of 21 keys and the fields-set.
    """

    name: Annotated[str, Field(min_length=1, max_length=128, description="tag name, unique within its device")]
    unit: Annotated[str | None, Field(description="engineering unit, e.g. degC, bar, rpm")] = None
    scale: Annotated[float, Field(description="value = raw * scale + offset (inverted by writes)")] = 1.0
    offset: float = 0.0
    min: Annotated[float | None, Field(description="lower engineering limit; writes below it are refused")] = None
    max: Annotated[float | None, Field(description="upper engineering limit; writes above it are refused")] = None
    clamp: Annotated[bool, Field(description="clamp readings into [min, max]")] = False
    deadband: Annotated[
        float | None, Field(ge=0, description="absolute deadband: smaller changes are not reported")
    ] = None
    deadband_percent: Annotated[
        float | None, Field(ge=0, le=100, description="percent deadband, relative to the last reported value")
    ] = None
    on_change: Annotated[bool, Field(description="report only when the value (or quality) changes")] = False
    max_silence: Annotated[
        Duration | None, Field(description="with on_change/deadband: re-send an unchanged value after this long")
    ] = None
    writable: Annotated[bool, Field(description="allow writes to this tag (command path, `write` CLI)")] = False
    states: Annotated[
        dict[int, Annotated[str, Field(min_length=1, max_length=64)]] | None,
        Field(description="value map: a word for each number, e.g. {1: running, 2: idle, 4: fault}; shown next to "
              "the value on the status page, in /api/tags, `query` and MQTT payloads"),
    ] = None
    alarm: Annotated[
        tuple[AlarmRule, ...],
        Field(description="alarm rules on the engineering value (above/below/equals/not_equals, delay, severity); "
              "an active alarm is a sample too: tag `<name>.alarm`, value the severity rank (0 = cleared)"),
    ] = ()
    stale_after: Annotated[
        Duration | None,
        Field(gt=0, description="a value unchanged this long while the device is answering (a frozen sensor) turns "
              "UNCERTAIN (UncertainLastUsableValue) until it changes; flagged on the status page"),
    ] = None

    @property
    def needs_processing(self) -> bool:
        return (
            self.scale != 1.0
            or self.offset != 0.0
            or self.clamp
            or self.deadband is not None
            or self.deadband_percent is not None
            or self.on_change
            or self.watched
        )

    @property
    def watched(self) -> bool:
        """Alarm rules or stale detection: the tag's values are watched over time (``gateway.watch``)."""
        return bool(self.alarm) or self.stale_after is not None


@dataclasses.dataclass(frozen=True, slots=True)
class DeviceLoad:
    """What collecting one device costs at its configured rates: ``edge-gateway fleet plan`` balances on it."""

    tags: int
    values_per_s: float
    """Values read per second (an upper bound for subscriptions: every item changing at its rate)."""
    reads_per_s: float
    """Requests the gateway sends per second for it (Modbus reads, OPC-UA publish or read requests)."""


class SourceConfigBase(StrictModel):
    """Base of every source plug-in's config. ``type`` is the plug-in kind (the discriminator).

    Sources that collect several devices keep them in a ``devices`` mapping (name -> device): the fleet
    planner splits a source by those keys, and the defaults below read ``devices`` and ``interval``.
    """

    type: str
    line: Name | None = Field(
        None, description="the production line this source serves: `edge-gateway fleet plan --by line` keeps the "
        "sources of one line on one gateway (default: the source is a line of its own)"
    )

    def iter_tags(self) -> Iterator[tuple[str, TagBase]]:
        """Yield ``(device, tag)`` for every configured tag; the processing stage is built from it."""
        return iter(())

    def device_names(self) -> list[str]:
        """Every configured device, in config order (a device without tags included)."""
        devices = getattr(self, "devices", None)
        if isinstance(devices, dict):
            return list(devices)
        return list(dict.fromkeys(d for d, _ in self.iter_tags()))

    def devices_separable(self) -> bool:
        """Whether different gateways may collect this source's devices (``fleet plan --by device``): true
        for a ``devices`` mapping; a source whose devices share one link that only one box can hold (a
        serial line) says False and moves whole."""
        return isinstance(getattr(self, "devices", None), dict)

    def device_loads(self) -> dict[str, DeviceLoad]:
        """Per device: configured tags, values and requests per second. This default assumes every tag is
        read once per ``interval`` (1 s without one) in one request; sources override it where they know
        their requests (the Modbus read plan, OPC-UA sampling)."""
        interval = float(getattr(self, "interval", 1.0)) or 1.0
        counts = dict.fromkeys(self.device_names(), 0)
        for device, _ in self.iter_tags():
            counts[device] = counts.get(device, 0) + 1
        return {d: DeviceLoad(n, n / interval, 1 / interval) for d, n in counts.items()}


class SinkConfigBase(StrictModel):
    """Base of every sink plug-in's config."""

    type: str
    sources: list[str] = Field(
        default_factory=lambda: ["*"], description="which sources this sink takes (glob patterns)"
    )
    batch_max_samples: int = Field(
        5000, ge=1, le=1_000_000, description="most samples handed to the sink in one write"
    )
    linger: Duration = Field(
        0.05, ge=0, le=60, description="a sink that keeps up writes each commit at once; one losing ground "
        "(more arrived during a write than it carried) waits as long as that write took, at most this long, "
        "before the next: fewer, larger writes while behind; 0: never wait"
    )
    retry_initial: Duration = Field(0.5, gt=0, le=3600, description="first retry delay after a failed write")
    retry_max: Duration = Field(
        30.0, gt=0, le=86400, description="longest retry delay (exponential backoff with jitter)"
    )
    max_pending_age: Duration = Field(
        300.0, gt=0, description="/health turns unhealthy when this sink's oldest undelivered sample is older"
    )

    @model_validator(mode="after")
    def _retry_order(self) -> SinkConfigBase:
        check_at_least(self, "retry_max", "retry_initial")
        return self
