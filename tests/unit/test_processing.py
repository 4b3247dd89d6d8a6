from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Literal

import pytest

from gateway.config.base import SourceConfigBase, TagBase
from gateway.model import Batch, Quality, Sample, Value
from gateway.processing import Processor

GOOD, UNCERTAIN, BAD = Quality.GOOD, Quality.UNCERTAIN, Quality.BAD


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def proc(clock: FakeClock | None = None, device: str = "d", **tag: Any) -> Processor:
    return Processor([(device, TagBase(name="t", **tag))], clock=clock or FakeClock())


def s(value: Value, quality: Quality = GOOD, device: str = "d", tag: str = "t", ts: int = 5) -> Sample:
    return Sample(device, tag, value, quality, 7, ts, ts + 1, "bar")


def run(p: Processor, *samples: Sample) -> list[Sample]:
    out = p.apply(Batch("src", list(samples)))
    return [] if out is None else out.samples


def values(p: Processor, seq: list[Value]) -> list[Value]:
    """Feed one-sample batches; return the values that were reported."""
    return [x.value for v in seq for x in run(p, s(v))]


class Cfg(SourceConfigBase):
    type: Literal["test"] = "test"
    tags: list[TagBase]

    def iter_tags(self) -> Iterator[tuple[str, TagBase]]:
        for t in self.tags:
            yield "dev", t


def test_for_source_returns_none_when_nothing_needs_processing() -> None:
    plain = Cfg(tags=[TagBase(name="a", unit="bar"), TagBase(name="b", min=0, max=5, writable=True)])
    assert Processor.for_source(plain) is None
    some = Cfg(tags=[TagBase(name="a"), TagBase(name="b", scale=2)])
    assert isinstance(Processor.for_source(some), Processor)


def test_scale_and_offset_exact_and_other_fields_kept() -> None:
    p = proc(scale=0.5, offset=3.0)
    (out,) = run(p, s(7))
    assert out.value == 6.5 and type(out.value) is float
    assert out == Sample("d", "t", 6.5, GOOD, 7, 5, 6, "bar")
    assert run(p, s(-4.0))[0].value == 1.0
    assert run(p, s(7, UNCERTAIN))[0].value == 6.5


@pytest.mark.parametrize("value", [True, "text", None])
def test_scale_leaves_non_numeric_values_alone(value: Value) -> None:
    p = proc(scale=10.0, offset=1.0)
    (out,) = run(p, s(value))
    assert out.value is value


def test_bad_samples_pass_untouched() -> None:
    p = proc(scale=10.0, offset=1.0, clamp=True, min=0, max=5)
    sample = s(123.0, BAD)
    assert run(p, sample) == [sample]
    f = proc(on_change=True, scale=2.0)
    assert [x.value for x in run(f, s(9.0, BAD)) + run(f, s(9.0, BAD)) + run(f, s(9.0, BAD))] == [9.0] * 3
    assert f.filtered == 0


def test_clamp() -> None:
    p = proc(clamp=True, min=0.0, max=10.0)
    assert values(p, [-3, 12, 5, 10.5, -0.0001]) == [0.0, 10.0, 5, 10.0, 0.0]
    scaled = proc(clamp=True, min=0.0, max=10.0, scale=2.0)
    assert values(scaled, [4, 6, -1]) == [8.0, 10.0, 0.0]
    upper_only = proc(clamp=True, max=1.0)
    assert values(upper_only, [-50, 2]) == [-50, 1.0]


def test_limits_without_clamp_do_not_clamp() -> None:
    p = Processor([("d", TagBase(name="t", min=0, max=1)), ("d", TagBase(name="x", scale=2))])
    assert values(p, [5, -5]) == [5, -5]


def test_unchanged_batch_is_returned_as_is_and_unconfigured_tags_pass() -> None:
    p = Processor(
        [("d", TagBase(name="t", clamp=True, min=0, max=10)), ("d", TagBase(name="plain"))], clock=FakeClock()
    )
    batch = Batch("src", [s(5), s(1.0, tag="plain"), s(3, tag="other"), s(3, device="elsewhere")])
    assert p.apply(batch) is batch
    changed = Batch("src", [s(50), s(1.0, tag="plain")])
    out = p.apply(changed)
    assert out is not None and out is not changed
    assert out.source == "src"
    assert out.samples[0].value == 10.0
    assert out.samples[1] is changed.samples[1]


def test_absolute_deadband_against_last_reported_value() -> None:
    p = proc(deadband=1.0)
    seq: list[Value] = [10.0, 10.5, 11.0, 11.1, 9.9, 9.95, 12.0]
    assert values(p, seq) == [10.0, 11.1, 9.9, 12.0]
    assert p.filtered == 3
    creep = proc(deadband=1.0)  # slow drift: compared with the last *reported*, not the last seen
    assert values(creep, [10.0, 10.4, 10.8, 11.2, 11.6]) == [10.0, 11.2]


def test_zero_deadband_suppresses_only_repeats() -> None:
    p = proc(deadband=0.0)
    assert values(p, [1, 1, 1.0, 2, 2]) == [1, 2]


def test_percent_deadband_relative_to_last_reported() -> None:
    p = proc(deadband_percent=10.0)
    assert values(p, [100.0, 105.0, 111.0, 120.0, 123.0, 111.0, 110.6]) == [100.0, 111.0, 123.0, 110.6]
    zero = proc(deadband_percent=10.0)
    assert values(zero, [0.0, 0.0, 0.001]) == [0.0, 0.001]


def test_both_deadbands_use_the_larger_threshold() -> None:
    p = proc(deadband=5.0, deadband_percent=1.0)
    # at 1000 the percent band (10) is wider; at 10 the absolute one (5) is
    assert values(p, [1000.0, 1008.0, 1011.0]) == [1000.0, 1011.0]
    q = proc(deadband=5.0, deadband_percent=1.0)
    assert values(q, [10.0, 14.0, 15.5]) == [10.0, 15.5]


def test_deadband_compares_scaled_values() -> None:
    p = proc(deadband=1.0, scale=10.0)
    assert values(p, [1.0, 1.05, 1.2]) == [10.0, 12.0]


def test_on_change() -> None:
    p = proc(on_change=True)
    assert values(p, [1, 1, 2, 2, 2, 1, "a", "a", "b", True, True, False, None, None]) == [
        1, 2, 1, "a", "b", True, False, None,
    ]
    typed = proc(on_change=True)  # equal but of another type (1 == True): the type change is reported
    assert values(typed, [1, True, True, 0, False, "x", 5, 5, None, 7.5]) == [1, True, 0, False, "x", 5, None, 7.5]


def test_nan_is_reported() -> None:
    p = proc(deadband=1.0)
    out = values(p, [1.0, math.nan, 1.0])
    assert out[0] == 1.0 and math.isnan(out[1]) and out[2] == 1.0  # type: ignore[arg-type]


def test_max_silence_resends_unchanged_value() -> None:
    clock = FakeClock()
    p = proc(clock, on_change=True, max_silence="5s")
    reported = []
    for at, v in [(0, 1), (1, 1), (4.9, 1), (5.0, 1), (6, 1), (9.9, 1), (10.0, 1), (11, 2), (12, 2)]:
        clock.now = 1000.0 + at
        reported += [(at, x.value) for x in run(p, s(v))]
    assert reported == [(0, 1), (5.0, 1), (10.0, 1), (11, 2)]


def test_max_silence_with_deadband_restarts_after_each_report() -> None:
    clock = FakeClock()
    p = proc(clock, deadband=1.0, max_silence=10)
    reported = []
    for at, v in [(0, 1.0), (3, 1.5), (6, 5.0), (12, 5.2), (15.9, 5.2), (16, 5.3)]:
        clock.now = 1000.0 + at
        reported += [(at, x.value) for x in run(p, s(v))]
    assert reported == [(0, 1.0), (6, 5.0), (16, 5.3)]


def test_without_max_silence_unchanged_values_stay_suppressed() -> None:
    clock = FakeClock()
    p = proc(clock, on_change=True)
    run(p, s(1))
    clock.now += 1e6
    assert run(p, s(1)) == []


def test_quality_change_always_passes() -> None:
    p = proc(on_change=True, deadband=100.0)
    seq = [(1.0, GOOD), (1.0, GOOD), (1.0, UNCERTAIN), (1.0, UNCERTAIN), (1.0, GOOD), (1.0, BAD), (1.0, GOOD)]
    out = [(x.value, x.quality) for v, q in seq for x in run(p, s(v, q))]
    assert out == [(1.0, GOOD), (1.0, UNCERTAIN), (1.0, GOOD), (1.0, BAD), (1.0, GOOD)]


def test_state_is_per_device_and_tag() -> None:
    p = Processor(
        [("a", TagBase(name="t", on_change=True)), ("b", TagBase(name="t", on_change=True)),
         ("a", TagBase(name="u", on_change=True))],
        clock=FakeClock(),
    )
    first = run(p, s(1, device="a"), s(1, device="b"), s(1, device="a", tag="u"))
    assert len(first) == 3
    second = run(p, s(1, device="a"), s(2, device="b"), s(1, device="a", tag="u"))
    assert [(x.device, x.tag, x.value) for x in second] == [("b", "t", 2)]


def test_mixed_batch_keeps_order_and_counts_filtered() -> None:
    p = Processor(
        [("d", TagBase(name="f", on_change=True)), ("d", TagBase(name="k", scale=2.0))], clock=FakeClock()
    )
    run(p, s(1, tag="f"))
    out = run(p, s(0, tag="x"), s(1, tag="f"), s(3, tag="k"), s(1, tag="f"), s(2, tag="f"))
    assert [(x.tag, x.value) for x in out] == [("x", 0), ("k", 6.0), ("f", 2)]
    assert p.filtered == 2


def test_all_filtered_gives_none() -> None:
    p = proc(on_change=True)
    run(p, s(1))
    assert p.apply(Batch("src", [s(1), s(1)])) is None
    assert p.filtered == 2
