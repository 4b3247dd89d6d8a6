"""Test plug-ins injected into the registry: a recording sink that can be told to fail, and a source
that crashes a set number of times. They go through the real config loader and runtime."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Literal

from gateway import plugins
from gateway.config.base import SinkConfigBase, SourceConfigBase, TagBase
from gateway.contracts import DeadLetters, Emit
from gateway.errors import PermanentSinkError, RetryableSinkError
from gateway.fleet.member import FleetMember
from gateway.health import SourceHealth
from gateway.model import Batch, Quality, Sample, now_ns
from gateway.plugins import BuildContext, SinkPlugin, SourcePlugin
from gateway.status_codes import BAD_NOT_CONNECTED


class RecordingSinkConfig(SinkConfigBase):
    type: Literal["recording"]
    fail_first: int = 0
    reject_value: int | None = None
    refuse_value: int | None = None
    """Samples with this value are handed to the dead letters one by one, the rest of the write is taken
    (what the InfluxDB sink does with the points a server rejects)."""


class RecordingSink:
    instances: dict[str, RecordingSink] = {}
    outage = False

    def __init__(self, name: str, config: RecordingSinkConfig, dead_letters: DeadLetters | None = None) -> None:
        self.name = name
        self.fail_left = config.fail_first
        self.reject_value = config.reject_value
        self.refuse_value = config.refuse_value
        self.dead_letters = dead_letters
        self.received: list[Sample] = []
        self.writes = 0
        self.failures = 0
        self.got_data = asyncio.Event()
        RecordingSink.instances[name] = self

    async def open(self) -> None:
        return None

    def health_problems(self) -> list[str]:
        return []  # the engine sees the outage (failing writes, backlog age); the fake knows no more

    async def write(self, batches: Sequence[Batch]) -> None:
        if RecordingSink.outage:
            self.failures += 1
            raise RetryableSinkError("uplink down (test outage)")
        if self.fail_left > 0:
            self.fail_left -= 1
            self.failures += 1
            raise RetryableSinkError("uplink down (test)")
        if self.reject_value is not None and any(
            s.value == self.reject_value for b in batches for s in b.samples
        ):
            raise PermanentSinkError("bad value (test)")
        self.writes += 1
        for i, b in enumerate(batches):
            refused = [s for s in b.samples if s.value == self.refuse_value] if self.refuse_value is not None else []
            if refused:
                assert self.dead_letters is not None
                self.dead_letters.reject(i, refused, f"value {self.refuse_value} refused (test)")
            self.received.extend(s for s in b.samples if s not in refused)
        self.got_data.set()

    async def close(self) -> None:
        return None


class CrashingSourceConfig(SourceConfigBase):
    type: Literal["crashing"]
    crashes: int = 1
    per_run: int = 3


class CrashingSource:
    """Emits ``per_run`` counter samples, then raises, ``crashes`` times; then emits forever."""

    runs = 0

    def __init__(self, name: str, config: CrashingSourceConfig) -> None:
        self.name = name
        self.config = config
        self.counter = 0
        self.health = SourceHealth(name, ["dev"])
        self.closed = 0

    async def close(self) -> None:
        self.closed += 1

    async def run(self, emit: Emit) -> None:
        CrashingSource.runs += 1
        crash = CrashingSource.runs <= self.config.crashes
        for _ in range(self.config.per_run if crash else 10**9):
            await emit(Batch(self.name, [Sample("dev", "n", self.counter, Quality.GOOD, 0, now_ns(), now_ns())]))
            self.counter += 1
            await asyncio.sleep(0.005)
        if crash:
            raise ConnectionError("device went away (test)")


class ToggleSourceConfig(SourceConfigBase):
    type: Literal["toggle"]
    devices: list[str] = ["m1"]
    interval: float = 0.02
    tags: int = 1
    bad_when_down: bool = False
    """A device that is down still gets its samples, BAD with BadNotConnected, as the Modbus source does."""

    def tag_names(self) -> list[str]:
        return ["v"] if self.tags == 1 else [f"v{i}" for i in range(self.tags)]

    def iter_tags(self) -> Iterator[tuple[str, TagBase]]:
        for d in self.devices:
            for t in self.tag_names():
                yield d, TagBase(name=t)


class ToggleSource:
    """Devices whose link a test switches off and on (``ToggleSource.down``), like a PLC being unplugged."""

    down: set[str] = set()

    def __init__(self, name: str, config: ToggleSourceConfig, ctx: BuildContext) -> None:
        self.name = name
        self.devices = config.devices
        self.interval = config.interval
        self.tag_names = config.tag_names()
        self.bad_when_down = config.bad_when_down
        self.health = SourceHealth(name, config.devices)
        self.n = 0

    async def close(self) -> None:
        """Nothing held."""

    async def run(self, emit: Emit) -> None:
        while True:
            samples = []
            for d in self.devices:
                up = d not in ToggleSource.down
                if up:
                    self.health.device(d).up()
                else:
                    self.health.device(d).down("not connected")
                ts = now_ns()
                if up:
                    samples.extend(Sample(d, t, self.n, Quality.GOOD, 0, ts, ts) for t in self.tag_names)
                elif self.bad_when_down:
                    samples.extend(Sample(d, t, None, Quality.BAD, BAD_NOT_CONNECTED, ts, ts) for t in self.tag_names)
            self.n += 1
            await emit(Batch(self.name, samples))
            await asyncio.sleep(self.interval)


def _sink_factory(name: str, config: RecordingSinkConfig, ctx: BuildContext) -> RecordingSink:
    return RecordingSink(name, config, ctx.dead_letters)


def _source_factory(name: str, config: CrashingSourceConfig, ctx: BuildContext) -> CrashingSource:
    return CrashingSource(name, config)


def install() -> Iterator[None]:
    """Register the fakes as if they were installed plug-ins (the ``fake_plugins`` fixture's body)."""
    RecordingSink.instances.clear()
    RecordingSink.outage = False
    CrashingSource.runs = 0
    ToggleSource.down = set()
    with plugins.registered(
        SinkPlugin("recording", RecordingSinkConfig, _sink_factory),
        SourcePlugin("crashing", CrashingSourceConfig, _source_factory),
        SourcePlugin("toggle", ToggleSourceConfig, ToggleSource),
    ):
        yield


def fleet_member(gateway_id: str, **kw: object) -> FleetMember:
    """A gateway's fleet identity without a runtime: no devices, no sinks, a fixed config hash."""
    return FleetMember(lambda: gateway_id, lambda: "0123456789ab", list, list, **kw)  # type: ignore[arg-type]
