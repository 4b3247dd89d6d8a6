from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import pytest
import structlog
import yaml
from pydantic import ValidationError
from structlog.testing import capture_logs

from connectors.synthetic.config import CounterTag, SineTag, SyntheticSourceConfig
from connectors.synthetic.plugin import PLUGIN
from connectors.synthetic.source import SyntheticSource
from gateway.config.site import SiteConfig
from gateway.contracts import Source, WritableSource
from gateway.errors import WriteError
from gateway.metrics import Metrics
from gateway.model import Batch, Quality
from gateway.plugins import BuildContext, source_plugin
from tests import REPO

SAMPLE_YAML = REPO / "connectors" / "synthetic" / "sample.yaml"


def config(interval: float | str = 0.01, seed: int = 0, **devices: list[dict[str, Any]]) -> SyntheticSourceConfig:
    return SyntheticSourceConfig.model_validate(
        {"type": "synthetic", "interval": interval, "seed": seed,
         "devices": {name: {"tags": tags} for name, tags in devices.items()}}
    )


class Collector:
    """An emit that records batches and lets a test wait for the n-th one."""

    def __init__(self, delay: Callable[[int], float] | None = None) -> None:
        self.batches: list[Batch] = []
        self._delay = delay
        self._changed = asyncio.Event()

    async def __call__(self, batch: Batch) -> None:
        if self._delay is not None:
            await asyncio.sleep(self._delay(len(self.batches)))
        self.batches.append(batch)
        self._changed.set()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        async def poll() -> None:
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(poll(), timeout)


async def running(source: SyntheticSource, emit: Collector, until: Callable[[], Awaitable[None]]) -> None:
    task = asyncio.create_task(source.run(emit))
    try:
        await until()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def recovered(logs: list[MutableMapping[str, Any]]) -> bool:
    return any(e["event"] == "synthetic source back on time" for e in logs)


def test_sample_yaml_is_a_valid_config() -> None:
    cfg = SyntheticSourceConfig.model_validate(yaml.safe_load(SAMPLE_YAML.read_text()))
    assert len(list(cfg.iter_tags())) >= 7
    assert {type(t).__name__ for _, t in cfg.iter_tags()} >= {
        "SineTag", "RampTag", "RandomWalkTag", "CounterTag", "SquareTag", "StepTag", "ConstantTag",
    }


def test_config_flat_tags_and_iter_tags() -> None:
    cfg = config(
        press_1=[{"name": "temp", "signal": "sine", "amplitude": 2, "unit": "degC", "deadband": 0.1}],
        press_2=[{"name": "count", "signal": "counter", "wrap": 10}],
    )
    tags = list(cfg.iter_tags())
    assert [(d, t.name) for d, t in tags] == [("press_1", "temp"), ("press_2", "count")]
    assert isinstance(tags[0][1], SineTag) and tags[0][1].deadband == 0.1 and tags[0][1].amplitude == 2
    assert isinstance(tags[1][1], CounterTag) and tags[1][1].wrap == 10


def test_config_rejects_duplicate_tag_names() -> None:
    with pytest.raises(ValidationError, match="tag names must be unique within a device; repeated: a, b"):
        config(dev=[{"name": n, "signal": "constant"} for n in ("a", "b", "a", "c", "b")])
    config(one=[{"name": "a", "signal": "constant"}], two=[{"name": "a", "signal": "constant"}])


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"devices": {"d": {"tags": [{"name": "a", "signal": "sine", "bogus": 1}]}}}, "Unexpected keyword argument"),
        ({"devices": {"Bad-Name": {"tags": [{"name": "a", "signal": "sine"}]}}}, "String should match"),
        ({"devices": {}}, "at least 1 item"),
        ({"interval": 0, "devices": {"d": {"tags": [{"name": "a", "signal": "sine"}]}}}, "greater than 0"),
        ({"devices": {"d": {"tags": [{"name": "a"}]}}}, "Unable to extract tag using discriminator 'signal'"),
    ],
)
def test_config_rejects_invalid(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SyntheticSourceConfig.model_validate({"type": "synthetic", **raw})


def test_plugin_descriptor_and_entry_point() -> None:
    assert source_plugin("synthetic") is PLUGIN
    assert PLUGIN.config_model is SyntheticSourceConfig
    ctx = BuildContext(metrics=Metrics(), site=SiteConfig(), data_dir="/tmp", log=structlog.stdlib.get_logger())
    src = PLUGIN.factory("demo", config(d=[{"name": "a", "signal": "constant"}]), ctx)
    assert isinstance(src, Source) and isinstance(src, WritableSource)
    assert src.name == "demo"


async def test_runs_ticks_with_values_and_timestamps() -> None:
    period = 0.5
    cfg = config(
        interval=0.01,
        press_1=[
            {"name": "sine", "signal": "sine", "amplitude": 3, "center": 1, "period": period, "unit": "bar"},
            {"name": "count", "signal": "counter"},
        ],
        press_2=[{"name": "ramp", "signal": "ramp", "start": 0, "end": 1000, "period": 1000}],
    )
    src = SyntheticSource("line", cfg)
    emit = Collector()
    before = time.time_ns()
    await running(src, emit, lambda: emit.wait_for(lambda: len(emit.batches) >= 5))
    after = time.time_ns()

    last_ts = 0
    for batch in emit.batches:
        assert batch.source == "line"
        assert [(x.device, x.tag) for x in batch.samples] == [
            ("press_1", "sine"), ("press_1", "count"), ("press_2", "ramp"),
        ]
        sine, count, ramp = batch.samples
        ts = sine.source_ts
        assert before <= ts <= after
        assert ts >= last_ts
        last_ts = ts
        assert all(x.source_ts == x.gateway_ts == ts for x in batch.samples)
        assert all(x.quality is Quality.GOOD and x.status == 0 for x in batch.samples)
        assert sine.unit == "bar" and count.unit is None
        # the ramp's value is its generator time: tick * interval
        tick = round(ramp.value / 0.01)  # type: ignore[operator]
        assert ramp.value == pytest.approx(tick * 0.01)
        assert sine.value == pytest.approx(1 + 3 * math.sin(2 * math.pi * tick * 0.01 / period))
    assert [b.samples[1].value for b in emit.batches] == list(range(len(emit.batches)))
    assert src.ticks == len(emit.batches)


async def test_slow_emit_skips_ticks_counts_them_and_logs_once() -> None:
    interval = 0.02
    cfg = config(interval=interval, d=[{"name": "t", "signal": "ramp", "start": 0, "end": 1e6, "period": 1e6}])
    emit = Collector(delay=lambda n: 3.5 * interval if n < 3 else 0.0)  # three slow emits, then fast ones
    with capture_logs() as logs:
        metrics = Metrics()
        src = SyntheticSource("slow", cfg, log=structlog.get_logger(), metrics=metrics, recovery_quiet=0.1)
        await running(src, emit, lambda: emit.wait_for(lambda: len(emit.batches) >= 12 and recovered(logs)))
    assert metrics.registry.get_sample_value(
        "edgegw_source_skipped_ticks_total", {"source": "slow", "device": "d"}) == src.skipped_ticks
    ticks = [round(b.samples[0].value / interval) for b in emit.batches]  # type: ignore[operator]
    assert ticks == sorted(set(ticks))
    assert ticks[0] == 0
    # every tick up to the last emitted one was either emitted or counted as skipped
    assert src.skipped_ticks == ticks[-1] + 1 - len(ticks)
    assert src.skipped_ticks >= 6  # each slow emit spans 3.5 intervals: at least 2 ticks skipped each
    events = [e["event"] for e in logs if e["log_level"] in ("warning", "info")]
    assert events == ["synthetic source overrunning its interval; skipping ticks", "synthetic source back on time"]


async def test_steady_overrun_logs_one_warning_not_one_per_skip() -> None:
    interval = 0.02
    cfg = config(interval=interval, d=[{"name": "t", "signal": "constant"}])
    # 1.5 intervals per emit: a tick is skipped every 3 intervals, more often than recovery_quiet
    emit = Collector(delay=lambda n: 1.5 * interval if n < 12 else 0.0)
    with capture_logs() as logs:
        src = SyntheticSource("slow", cfg, log=structlog.get_logger(), recovery_quiet=0.1)
        await running(src, emit, lambda: emit.wait_for(lambda: len(emit.batches) >= 12 + 10 and recovered(logs)))
    assert src.skipped_ticks >= 3
    events = [e["event"] for e in logs if e["log_level"] in ("warning", "info")]
    assert events == ["synthetic source overrunning its interval; skipping ticks", "synthetic source back on time"]
    assert 3 <= logs[-1]["skipped"] <= src.skipped_ticks


async def test_write_holds_value_on_writable_tag() -> None:
    cfg = config(
        d=[
            {"name": "sp", "signal": "sine", "amplitude": 10, "writable": True},
            {"name": "ro", "signal": "constant", "value": 1},
        ]
    )
    src = SyntheticSource("s", cfg)
    emit = Collector()

    async def scenario() -> None:
        await emit.wait_for(lambda: len(emit.batches) >= 2)
        await src.write("d", "sp", 42.5)
        await emit.wait_for(lambda: emit.batches[-1].samples[0].value == 42.5)
        n = len(emit.batches)
        await emit.wait_for(lambda: len(emit.batches) >= n + 3)

    await running(src, emit, scenario)
    first = next(i for i, b in enumerate(emit.batches) if b.samples[0].value == 42.5)
    assert first >= 2
    assert all(b.samples[0].value == 42.5 for b in emit.batches[first:])
    assert all(b.samples[1].value == 1 for b in emit.batches)
    with pytest.raises(WriteError, match="takes a number"):
        await src.write("d", "sp", True)  # a number tag never takes a boolean
    assert (await src.write_kind("d", "sp")).base == "float"


async def test_an_on_off_signal_takes_only_booleans() -> None:
    src = SyntheticSource("s", config(d=[{"name": "pump", "signal": "square", "low": False, "high": True,
                                          "period": 10, "writable": True}]))
    assert (await src.write_kind("d", "pump")).base == "bool"
    with pytest.raises(WriteError, match="takes true or false"):
        await src.write("d", "pump", 1)
    await src.write("d", "pump", True)
    assert src.batch(0.0).samples[0].value is True


async def test_write_refusals() -> None:
    src = SyntheticSource("s", config(d=[{"name": "ro", "signal": "constant", "value": 1},
                                         {"name": "rw", "signal": "constant", "writable": True}]))
    with pytest.raises(WriteError, match="tag d/ro of source 's' is not writable"):
        await src.write("d", "ro", 5)
    with pytest.raises(WriteError, match="has no tag 'nope' on device 'd'"):
        await src.write("d", "nope", 5)
    with pytest.raises(WriteError, match="has no tag 'ro' on device 'x'"):
        await src.write("x", "ro", 5)
    with pytest.raises(WriteError, match="takes a number"):
        await src.write("d", "rw", "text")
    with pytest.raises(WriteError, match="takes a number"):
        await src.write("d", "rw", None)
    assert [x.value for x in src.batch(0.0).samples] == [1, 0.0]


def test_seeded_values_reproduce_and_differ_by_seed_and_tag() -> None:
    tags = [{"name": n, "signal": "random_walk", "noise": 0.5} for n in ("a", "b")]

    def run(seed: int) -> list[list[Any]]:
        src = SyntheticSource("s", config(seed=seed, d=tags))
        return [[x.value for x in src.batch(i * 0.1).samples] for i in range(20)]

    first, again, other = run(1), run(1), run(2)
    assert first == again
    assert first != other
    assert [row[0] for row in first] != [row[1] for row in first]  # same config, different tag identity


def test_bulk_config_builds_batches_quickly() -> None:
    """10 devices x 1000 tags (the benchmark shape): one batch must cost milliseconds, not a tick.

    Timed in process CPU time, so a loaded test machine does not make it fail.
    """
    kinds: list[dict[str, Any]] = [
        {"signal": "sine", "amplitude": 5, "period": 30},
        {"signal": "ramp", "period": 60},
        {"signal": "random_walk"},
        {"signal": "counter", "wrap": 65536},
        {"signal": "square", "period": 10},
    ]
    devices = {f"dev_{d}": [{"name": f"t{i}", **kinds[i % 5]} for i in range(1000)] for d in range(10)}
    cfg = SyntheticSourceConfig.model_validate(
        {"interval": "10ms", "devices": {name: {"tags": tags} for name, tags in devices.items()}}
    )
    src = SyntheticSource("bench", cfg)
    best = math.inf
    for i in range(5):
        start = time.process_time()
        batch = src.batch(i * 0.01)
        best = min(best, time.process_time() - start)
    assert len(batch.samples) == 10_000
    assert best < 0.05, f"building one 10k-sample batch took {best * 1e3:.1f} ms"
