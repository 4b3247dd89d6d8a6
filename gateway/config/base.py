"""Building blocks every config model uses: strict models, durations, and the plug-in base models."""

from __future__ import annotations

import re
import string
from collections.abc import Iterator
from typing import Annotated, Any, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator

NAME_PATTERN = r"^[a-z0-9]+(_[a-z0-9]+)*$"
"""Source, sink and device names: lowercase, digits, single underscores (``__`` is the env delimiter)."""

Name = Annotated[str, Field(pattern=NAME_PATTERN, min_length=1, max_length=64)]


class StrictModel(BaseModel):
    """Every config model rejects unknown keys (pydantic ignores them by default in nested models)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


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


_FIELDS_SETS: dict[frozenset[str], set[str]] = {}


def check_at_least(model: BaseModel, upper: str, lower: str) -> None:
    """A backoff's ceiling below its first delay is a typo, not a setting: refuse it, naming both (seconds)."""
    hi, lo = getattr(model, upper), getattr(model, lower)
    if hi < lo:
        raise ValueError(f"{upper} ({hi:g} s) must be at least {lower} ({lo:g} s)")


class TagBase(StrictModel):
    """What every protocol's tag shares. Protocol models subclass it and add their addressing."""

    name: str = Field(min_length=1, max_length=128, description="tag name, unique within its device")
    unit: str | None = Field(None, description="engineering unit, e.g. degC, bar, rpm")
    scale: float = Field(1.0, description="value = raw * scale + offset (inverted by writes)")
    offset: float = 0.0
    min: float | None = Field(None, description="lower engineering limit; writes below it are refused")
    max: float | None = Field(None, description="upper engineering limit; writes above it are refused")
    clamp: bool = Field(False, description="clamp readings into [min, max]")
    deadband: float | None = Field(None, ge=0, description="absolute deadband: smaller changes are not reported")
    deadband_percent: float | None = Field(
        None, ge=0, le=100, description="percent deadband, relative to the last reported value"
    )
    on_change: bool = Field(False, description="report only when the value (or quality) changes")
    max_silence: Duration | None = Field(
        None, description="with on_change/deadband: re-send an unchanged value after this long"
    )
    writable: bool = Field(False, description="allow writes to this tag (command path, `write` CLI)")

    @model_validator(mode="after")
    def _share_fields_set(self) -> Self:
        # A config may hold 100,000 tags; most set the same few fields. Config models are frozen, so the
        # set pydantic keeps of the fields given is never changed after validation (``model_copy`` copies
        # it): tags that set the same fields share one set instead of ~220 bytes each.
        shared = _FIELDS_SETS.setdefault(frozenset(self.__pydantic_fields_set__), self.__pydantic_fields_set__)
        if shared is not self.__pydantic_fields_set__:
            object.__setattr__(self, "__pydantic_fields_set__", shared)
        return self

    @property
    def needs_processing(self) -> bool:
        return (
            self.scale != 1.0
            or self.offset != 0.0
            or self.clamp
            or self.deadband is not None
            or self.deadband_percent is not None
            or self.on_change
        )


class SourceConfigBase(StrictModel):
    """Base of every source plug-in's config. ``type`` is the plug-in kind (the discriminator)."""

    type: str

    def iter_tags(self) -> Iterator[tuple[str, TagBase]]:
        """Yield ``(device, tag)`` for every configured tag; the processing stage is built from it."""
        return iter(())


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
