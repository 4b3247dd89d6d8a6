"""The replay model: recorded samples become points with exact types, served at their original offsets,
looping with the recording's own period, BAD samples served BAD."""

from __future__ import annotations

import pytest

from connectors.recording.files import RecordedSample
from gateway.model import Quality
from simulators.line.replay import ReplayError, ReplayModel

S = 1_000_000_000
T0 = 1_700_000_000 * S


def rs(t: float, device: str, tag: str, value: object, quality: Quality = Quality.GOOD,
       status: int = 0) -> RecordedSample:
    return RecordedSample(time_ns=T0 + int(t * S), source="src", device=device, tag=tag,
                          value=value, quality=quality, status=status, unit=None)  # type: ignore[arg-type]


def samples() -> list[RecordedSample]:
    out = []
    for i in range(5):  # every 0.5 s
        out.append(rs(i * 0.5, "press", "temp", 20.0 + i / 10))
        out.append(rs(i * 0.5, "press", "count", i))
    out.append(rs(0.0, "press", "running", True))
    out.append(rs(1.2, "press", "running", False))
    out.append(rs(0.1, "oven", "recipe", "A-12"))
    out.append(rs(1.5, "oven", "recipe", "B-7 long name"))
    return out


def value(m: ReplayModel, device: str, tag: str) -> object:
    p = next(p for p in m.points if (p.machine, p.name) == (device, tag))
    return m.values[p.index]


def test_points_are_typed_and_placed_exactly() -> None:
    m = ReplayModel(samples())
    by = {(p.machine, p.name): p for p in m.points}
    assert [(p.machine, p.name) for p in m.points] == [
        ("press", "count"), ("press", "running"), ("press", "temp"), ("oven", "recipe")]
    assert (by["press", "temp"].mtype, by["press", "temp"].opcua_type, by["press", "temp"].registers) == (
        "float64", "Double", 4)
    assert (by["press", "count"].mtype, by["press", "count"].opcua_type) == ("int64", "Int64")
    assert (by["press", "running"].table, by["press", "running"].opcua_type) == ("discrete_input", "Boolean")
    assert by["oven", "recipe"].mtype == "string" and by["oven", "recipe"].registers == 7  # the longest, 13 bytes
    assert (by["press", "count"].unit_id, by["oven", "recipe"].unit_id) == (1, 2)
    assert by["press", "count"].address == 0 and by["press", "temp"].address == 4  # no overlap
    assert m.span == 2.0


def test_values_follow_the_original_timing() -> None:
    m = ReplayModel(samples())
    assert m.next_time() == 0.0
    m.step_to(0.0)
    assert (value(m, "press", "temp"), value(m, "press", "count"), value(m, "press", "running")) == (20.0, 0, True)
    assert m.next_time() == pytest.approx(0.1)
    m.step_to(1.2)
    assert (value(m, "press", "temp"), value(m, "press", "count")) == (20.2, 2)
    assert value(m, "press", "running") is False and value(m, "oven", "recipe") == "A-12"
    m.step_to(2.0)
    assert (value(m, "press", "temp"), value(m, "press", "count"), value(m, "oven", "recipe")) == (
        20.4, 4, "B-7 long name")
    assert m.next_time() is None and m.finished  # no loop: the last values stay
    assert not m.step_to(10.0)


def test_loop_starts_over_with_the_recordings_period() -> None:
    m = ReplayModel(samples(), loop=True)
    m.step_to(2.0)
    # a pass: the span (2.0 s) plus the median gap between distinct sample times (0.1 0.4 0.5 0.2 0.3 0.5)
    assert m.period == pytest.approx(2.35)
    assert m.next_time() == pytest.approx(2.35)
    m.step_to(2.35)
    assert value(m, "press", "count") == 0 and m.passes == 1
    m.step_to(2.35 + 1.0)
    assert value(m, "press", "count") == 2
    m.step_to(4.7 + 2.0)  # a big jump: whole passes applied in order
    assert value(m, "press", "count") == 4 and m.passes == 2


def test_bad_samples_keep_the_value_and_serve_bad() -> None:
    rows = [rs(0, "d", "x", 1.5), rs(1, "d", "x", None, Quality.BAD, 0x80310000), rs(2, "d", "x", 2.5),
            rs(3, "d", "x", 3.5, Quality.UNCERTAIN, 7)]
    m = ReplayModel(rows)
    assert m.statuses == [0x80000000]  # nothing served yet
    m.step_to(0)
    assert (m.values, m.statuses) == ([1.5], [0])
    m.step_to(1)
    assert (m.values, m.statuses) == ([1.5], [0x80310000])  # the recorded OPC-UA status
    m.step_to(2)
    assert (m.values, m.statuses) == ([2.5], [0])
    m.step_to(3)
    assert (m.values, m.statuses) == ([3.5], [0x40000000])  # not an OPC-UA code: plain Uncertain


def test_mixed_types_widen_and_empty_recordings_are_refused() -> None:
    m = ReplayModel([rs(0, "d", "v", 1), rs(1, "d", "v", 2.5)])
    assert m.points[0].kind == "float"
    m.step_to(0)
    assert m.values == [1.0] and isinstance(m.values[0], float)
    with pytest.raises(ReplayError, match="no samples"):
        ReplayModel([])
    with pytest.raises(ValueError, match="read-only"):
        m.write(0, 3.0)
