"""Config of the synthetic source: devices whose tags are signal generators.

Tags are flat: the generator's fields sit beside the common tag fields, chosen by ``signal:``::

    - {name: temperature, signal: sine, amplitude: 5, center: 60, period: 2m, unit: degC}
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Literal

from pydantic import Field, field_validator

from gateway.config.base import Duration, Name, SourceConfigBase, StrictModel, TagBase, config_dataclass
from gateway.generators import (
    ConstantSignal,
    CounterSignal,
    RampSignal,
    RandomWalkSignal,
    SineSignal,
    SquareSignal,
    StepSignal,
)


@config_dataclass(slots=True)
class SineTag(SineSignal, TagBase):
    pass


@config_dataclass(slots=True)
class RampTag(RampSignal, TagBase):
    pass


@config_dataclass(slots=True)
class RandomWalkTag(RandomWalkSignal, TagBase):
    pass


@config_dataclass(slots=True)
class CounterTag(CounterSignal, TagBase):
    pass


@config_dataclass(slots=True)
class SquareTag(SquareSignal, TagBase):
    pass


@config_dataclass(slots=True)
class StepTag(StepSignal, TagBase):
    pass


@config_dataclass(slots=True)
class ConstantTag(ConstantSignal, TagBase):
    pass


SyntheticTag = Annotated[
    SineTag | RampTag | RandomWalkTag | CounterTag | SquareTag | StepTag | ConstantTag,
    Field(discriminator="signal"),
]
"""One tag: the common tag fields plus one generator's, chosen by ``signal:``."""


class SyntheticDevice(StrictModel):
    tags: list[SyntheticTag] = Field(min_length=1)

    @field_validator("tags")
    @classmethod
    def _unique_names(cls, tags: list[SyntheticTag]) -> list[SyntheticTag]:
        seen: set[str] = set()
        dupes: set[str] = set()
        for tag in tags:
            (dupes if tag.name in seen else seen).add(tag.name)
        if dupes:
            names = ", ".join(sorted(dupes))
            raise ValueError(f"tag names must be unique within a device; repeated: {names}")
        return tags


class SyntheticSourceConfig(SourceConfigBase):
    """Generated signals, for demos, tests and benchmarks. Writable tags hold what is written to them."""

    type: Literal["synthetic"] = "synthetic"
    interval: Duration = Field(1.0, gt=0, description="time between batches; every tag is sampled each tick")
    seed: int = Field(0, description="global seed; each tag's generator is seeded from it and its device/tag")
    devices: dict[Name, SyntheticDevice] = Field(min_length=1)

    def iter_tags(self) -> Iterator[tuple[str, TagBase]]:
        for device, dev in self.devices.items():
            for tag in dev.tags:
                yield device, tag
