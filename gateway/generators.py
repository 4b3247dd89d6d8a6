"""Signal generators for the synthetic source and the line simulators, and their config models.

A generator maps a time in seconds (since the signal started) to a value: ``gen.value(t)``. Most are
pure functions of ``t``; the random walk and the per-tick counter advance on every call. Randomness
(noise, the walk) comes from a private ``random.Random`` per generator, seeded from a global seed and
the tag's identity through ``derive_seed`` (CRC-32, not the per-process salted ``hash()``), so a
config produces the same values on every run: same seed, same times, same calls -> same values.

The config models are mix-ins as much as models: a protocol's tag model can inherit one of them
next to ``TagBase`` to get a flat YAML shape (``signal: sine``, ``amplitude: 5``), or a config can
embed ``SignalConfig`` as a nested field. Field names deliberately avoid ``TagBase``'s (``offset``,
``min``, ``max``, ``scale``): those are engineering-value settings, not signal shape.
"""

from __future__ import annotations

import math
import random
import zlib
from abc import ABC, abstractmethod
from bisect import bisect_right
from collections.abc import Callable
from itertools import accumulate
from typing import Annotated, Literal, Protocol

from pydantic import Field, model_validator

from gateway.config.base import Duration, config_dataclass

GenValue = float | int | bool
"""What a generator yields. ``bool`` and ``int`` come out as such; noise makes a number a float."""

_TWO_PI = 2.0 * math.pi


class Generator(Protocol):
    def value(self, t: float) -> GenValue: ...


def derive_seed(seed: int, *identity: str) -> int:
    """A per-generator seed from the global ``seed`` and e.g. ``(device, tag)``, stable across runs."""
    crc = zlib.crc32("\x1f".join(identity).encode())
    return ((seed & 0xFFFF_FFFF_FFFF_FFFF) << 32) | crc


# --- generators --------------------------------------------------------------------------------------
# Small slotted classes: one attribute read per parameter and a couple of float ops per value.


class Sine:
    __slots__ = ("_amplitude", "_center", "_omega", "_phase")

    def __init__(self, amplitude: float, center: float, period: float, phase_deg: float) -> None:
        self._amplitude = amplitude
        self._center = center
        self._omega = _TWO_PI / period
        self._phase = math.radians(phase_deg)

    def value(self, t: float) -> float:
        return self._center + self._amplitude * math.sin(self._omega * t + self._phase)


class Ramp:
    """Sawtooth: ``start`` rising (or falling) linearly to ``end`` over ``period``, then back to ``start``."""

    __slots__ = ("_period", "_slope", "_start")

    def __init__(self, start: float, end: float, period: float) -> None:
        self._start = start
        self._period = period
        self._slope = (end - start) / period

    def value(self, t: float) -> float:
        return self._start + self._slope * (t % self._period)


class RandomWalk:
    """Each call moves by a uniform step in [-step, step], reflected at the bounds so it never sticks there."""

    __slots__ = ("_high", "_low", "_step", "_uniform", "_v")

    def __init__(self, start: float, step: float, low: float, high: float, rng: random.Random) -> None:
        self._v = start
        self._step = step
        self._low = low
        self._high = high
        self._uniform = rng.uniform

    def value(self, t: float) -> float:
        v = self._v + self._uniform(-self._step, self._step)
        if v > self._high:
            v = max(2.0 * self._high - v, self._low)
        elif v < self._low:
            v = min(2.0 * self._low - v, self._high)
        self._v = v
        return v


class TickCounter:
    """Integer counter advanced by one ``step`` per call; wraps into [start, wrap) when ``wrap`` is set."""

    __slots__ = ("_n", "_span", "_start", "_step")

    def __init__(self, start: int, step: int, wrap: int | None) -> None:
        self._start = start
        self._step = step
        self._span = None if wrap is None else wrap - start
        self._n = 0

    def value(self, t: float) -> int:
        n = self._n
        self._n = n + 1
        if self._span is None:
            return self._start + n * self._step
        return self._start + (n * self._step) % self._span


class RateCounter:
    """Integer counter advanced by ``step`` ``rate`` times per second: a pure function of ``t``."""

    __slots__ = ("_rate", "_span", "_start", "_step")

    def __init__(self, start: int, step: int, rate: float, wrap: int | None) -> None:
        self._start = start
        self._step = step
        self._rate = rate
        self._span = None if wrap is None else wrap - start

    def value(self, t: float) -> int:
        n = math.floor(t * self._rate)
        if self._span is None:
            return self._start + n * self._step
        return self._start + (n * self._step) % self._span


class Square:
    """``high`` for the first ``duty`` fraction of each period, ``low`` for the rest."""

    __slots__ = ("_high", "_high_for", "_low", "_period")

    def __init__(self, low: GenValue, high: GenValue, period: float, duty: float) -> None:
        self._low = low
        self._high = high
        self._period = period
        self._high_for = duty * period

    def value(self, t: float) -> GenValue:
        return self._high if t % self._period < self._high_for else self._low


class Steps:
    """Each level held for its duration, in order; then the sequence repeats, or the last level stays."""

    __slots__ = ("_ends", "_last", "_levels", "_repeat", "_total")

    def __init__(self, levels: list[GenValue], holds: list[float], repeat: bool) -> None:
        self._levels = levels
        self._ends = list(accumulate(holds))  # level i covers [ends[i-1], ends[i])
        self._total = self._ends[-1]
        self._repeat = repeat
        self._last = len(levels) - 1

    def value(self, t: float) -> GenValue:
        if self._repeat:
            t %= self._total
        elif t >= self._total:
            return self._levels[self._last]
        return self._levels[min(bisect_right(self._ends, t), self._last)]


class Constant:
    __slots__ = ("_v",)

    def __init__(self, value: GenValue) -> None:
        self._v = value

    def value(self, t: float) -> GenValue:
        return self._v


class Noisy:
    """Adds zero-mean gaussian noise to a numeric generator."""

    __slots__ = ("_gauss", "_inner", "_sigma")

    def __init__(self, inner: Callable[[float], GenValue], sigma: float, rng: random.Random) -> None:
        self._inner = inner
        self._sigma = sigma
        self._gauss = rng.gauss

    def value(self, t: float) -> float:
        return self._inner(t) + self._gauss(0.0, self._sigma)  # numeric: models refuse noise on booleans


# --- config models -----------------------------------------------------------------------------------

PositiveDuration = Annotated[Duration, Field(gt=0)]


@config_dataclass()
class SignalModel(ABC):
    """Base of every model in ``SignalConfig`` (and of tag models that mix one in).

    Pydantic dataclasses, as the tags they are mixed into are (``config_dataclass``). Not slotted: a class
    can have only one slotted base with fields, and for a tag that is ``TagBase`` (the synthetic source is
    never the 100k-tag case).
    """

    @abstractmethod
    def build(self, seed: int) -> Generator: ...


@config_dataclass()
class _NoisySignal(SignalModel):
    noise: Annotated[float, Field(ge=0, description="standard deviation of gaussian noise added to each value")] = 0.0

    def _levels(self) -> tuple[GenValue, ...]:
        return ()

    @property
    def boolean(self) -> bool:
        """An on/off signal (every level a bool): what a write to it must be too."""
        levels = self._levels()
        return bool(levels) and all(isinstance(v, bool) for v in levels)

    @model_validator(mode="after")
    def _numeric_if_noisy(self) -> _NoisySignal:
        if self.noise and any(isinstance(v, bool) for v in self._levels()):
            raise ValueError("noise needs numeric levels, not booleans")
        return self

    def _noisy(self, gen: Generator, rng: random.Random) -> Generator:
        return Noisy(gen.value, self.noise, rng) if self.noise else gen


@config_dataclass()
class SineSignal(_NoisySignal):
    """``center + amplitude * sin(2π t / period + phase)``."""

    signal: Literal["sine"]
    amplitude: float = 1.0
    center: Annotated[float, Field(description="the value the sine oscillates around")] = 0.0
    period: PositiveDuration = 60.0
    phase: Annotated[float, Field(description="phase shift in degrees")] = 0.0

    def build(self, seed: int) -> Generator:
        return self._noisy(Sine(self.amplitude, self.center, self.period, self.phase), random.Random(seed))


@config_dataclass()
class RampSignal(_NoisySignal):
    """Sawtooth from ``start`` to ``end`` over ``period`` (``end < start`` ramps down)."""

    signal: Literal["ramp"]
    start: float = 0.0
    end: float = 100.0
    period: PositiveDuration = 60.0

    def build(self, seed: int) -> Generator:
        return self._noisy(Ramp(self.start, self.end, self.period), random.Random(seed))


@config_dataclass()
class RandomWalkSignal(_NoisySignal):
    """Bounded random walk: each tick moves by up to ``step`` either way, staying within [low, high]."""

    signal: Literal["random_walk"]
    low: float = 0.0
    high: float = 100.0
    step: Annotated[float, Field(ge=0, description="largest move per tick")] = 1.0
    start: Annotated[float | None, Field(description="initial value; default the middle of [low, high]")] = None

    @model_validator(mode="after")
    def _bounds(self) -> RandomWalkSignal:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        if self.start is not None and not self.low <= self.start <= self.high:
            raise ValueError(f"start ({self.start:g}) must lie within [low, high]")
        return self

    def build(self, seed: int) -> Generator:
        rng = random.Random(seed)
        start = (self.low + self.high) / 2.0 if self.start is None else self.start
        return self._noisy(RandomWalk(start, self.step, self.low, self.high, rng), rng)


@config_dataclass()
class CounterSignal(SignalModel):
    """Integer counter: ``step`` per tick, or ``rate`` steps per second; wraps into [start, wrap).

    No noise option: a counter is an integer and counts exactly.
    """

    signal: Literal["counter"]
    start: int = 0
    step: int = 1
    rate: Annotated[float | None, Field(gt=0, description="steps per second; default one step per tick")] = None
    wrap: Annotated[int | None, Field(
        description="exclusive upper bound: the counter goes back to start on reaching it (65536: u16)"
    )] = None

    @model_validator(mode="after")
    def _wrap_above_start(self) -> CounterSignal:
        if self.wrap is not None and self.wrap <= self.start:
            raise ValueError(f"wrap ({self.wrap}) must be above start ({self.start})")
        return self

    def build(self, seed: int) -> Generator:
        if self.rate is None:
            return TickCounter(self.start, self.step, self.wrap)
        return RateCounter(self.start, self.step, self.rate, self.wrap)


@config_dataclass()
class SquareSignal(_NoisySignal):
    """Two levels: ``high`` for ``duty`` of each period, then ``low``. Booleans give an on/off signal."""

    signal: Literal["square"]
    low: bool | int | float = 0
    high: bool | int | float = 1
    period: PositiveDuration = 60.0
    duty: Annotated[float, Field(ge=0, le=1, description="fraction of each period spent at high")] = 0.5

    def _levels(self) -> tuple[GenValue, ...]:
        return (self.low, self.high)

    def build(self, seed: int) -> Generator:
        return self._noisy(Square(self.low, self.high, self.period, self.duty), random.Random(seed))


@config_dataclass()
class StepSignal(_NoisySignal):
    """A schedule: ``levels[i]`` held for ``hold`` (one duration for all, or one per level)."""

    signal: Literal["step"]
    levels: Annotated[list[bool | int | float], Field(min_length=1)]
    hold: Annotated[PositiveDuration | list[PositiveDuration], Field(
        description="how long each level lasts: one duration, or a list as long as levels"
    )]
    repeat: Annotated[bool, Field(description="start over after the last level; false: stay at the last one")] = True

    @model_validator(mode="after")
    def _hold_per_level(self) -> StepSignal:
        if isinstance(self.hold, list) and len(self.hold) != len(self.levels):
            raise ValueError(f"hold has {len(self.hold)} durations for {len(self.levels)} levels")
        return self

    def _levels(self) -> tuple[GenValue, ...]:
        return tuple(self.levels)

    def build(self, seed: int) -> Generator:
        holds = self.hold if isinstance(self.hold, list) else [self.hold] * len(self.levels)
        return self._noisy(Steps(list(self.levels), holds, self.repeat), random.Random(seed))


@config_dataclass()
class ConstantSignal(_NoisySignal):
    """A fixed value; with ``writable: true`` on the tag, a setpoint that writes change."""

    signal: Literal["constant"]
    value: bool | int | float = 0.0

    def _levels(self) -> tuple[GenValue, ...]:
        return (self.value,)

    def build(self, seed: int) -> Generator:
        return self._noisy(Constant(self.value), random.Random(seed))


SIGNAL_MODELS: tuple[type[SignalModel], ...] = (
    SineSignal, RampSignal, RandomWalkSignal, CounterSignal, SquareSignal, StepSignal, ConstantSignal,
)

SignalConfig = Annotated[
    SineSignal | RampSignal | RandomWalkSignal | CounterSignal | SquareSignal | StepSignal | ConstantSignal,
    Field(discriminator="signal"),
]
"""A generator's config, chosen by its ``signal:`` key; embed it as a field of a tag model."""

def build(model: SignalModel, seed: int) -> Generator:
    """The generator ``model`` describes; ``seed`` is usually ``derive_seed(global_seed, device, tag)``."""
    return model.build(seed)
