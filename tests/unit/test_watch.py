"""Tags watched over time: a frozen value turns UNCERTAIN, alarm rules raise and clear with their delay,
both from values and from the clock alone, and the processing stage hands every reading to them."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from gateway.config.base import AlarmRule, TagBase
from gateway.model import Batch, Quality, Sample, Value
from gateway.processing import Processor
from gateway.status_codes import UNCERTAIN_LAST_USABLE_VALUE
from gateway.watch import ALARM_STATES, TagWatch

GOOD, UNCERTAIN, BAD = Quality.GOOD, Quality.UNCERTAIN, Quality.BAD
SEC = 1_000_000_000


def tag(**kw: Any) -> TagBase:
    return TypeAdapter(TagBase).validate_python({"name": "t", **kw})


def s(value: Value, t: float, quality: Quality = GOOD, name: str = "t") -> Sample:
    ts = int(t * SEC)
    return Sample("d", name, value, quality, 0 if quality is not BAD else 0x800A0000, ts, ts, "degC")


def test_rules_take_exactly_one_condition_and_say_what_they_are() -> None:
    assert AlarmRule(above=80, delay=5).text == "above 80 for 5 s"
    assert AlarmRule(not_equals=1).text == "not equals 1"
    for bad in ({}, {"above": 1, "below": 0}):
        with pytest.raises(ValidationError, match="exactly one of above, below, equals, not_equals"):
            TypeAdapter(AlarmRule).validate_python(bad)
    assert tag(states={"1": "running"}).states == {1: "running"}  # JSON keys are strings


def test_a_polled_value_unchanged_for_stale_after_turns_uncertain_until_it_changes() -> None:
    w = TagWatch("src", [("d", tag(stale_after=5))])
    seen = [w.see(s(20.0, t), 1000 + t) for t in range(8)]
    assert [(x.quality, x.status) for x in seen[:5]] == [(GOOD, 0)] * 5
    assert [(x.quality, x.status, x.value) for x in seen[5:]] == [(UNCERTAIN, UNCERTAIN_LAST_USABLE_VALUE, 20.0)] * 3
    assert w.is_stale("d", "t")
    changed = w.see(s(20.5, 8), 1008)
    assert (changed.quality, changed.status) == (GOOD, 0) and not w.is_stale("d", "t")
    assert w.see(s(20.5, 12), 1012).quality is GOOD  # the clock starts again at the change
    assert w.see(s(20.5, 13), 1013).quality is UNCERTAIN


def test_a_subscribed_value_that_never_comes_again_is_marked_stale_by_the_clock_once() -> None:
    w = TagWatch("src", [("d", tag(stale_after=60))])
    w.see(s(61.5, 0), 1000)
    assert w.tick(1059.9, 59 * SEC) == []
    (marked,) = w.tick(1060.0, 60 * SEC)
    assert (marked.tag, marked.value, marked.quality, marked.status) == ("t", 61.5, UNCERTAIN,
                                                                         UNCERTAIN_LAST_USABLE_VALUE)
    assert marked.source_ts == 60 * SEC  # when the gateway decided it, not the old reading's time
    assert w.tick(1070.0, 70 * SEC) == []  # once per episode
    assert w.see(s(62.0, 75), 1075).quality is GOOD


def test_no_answer_is_not_a_frozen_value() -> None:
    w = TagWatch("src", [("d", tag(stale_after=5))])
    w.see(s(1.0, 0), 1000)
    w.see(s(None, 3, BAD), 1003)
    assert w.tick(1010, 10 * SEC) == []  # the device is not answering: BAD says so already
    assert w.see(s(1.0, 11), 1011).quality is GOOD  # answering again: a new episode, same value
    assert w.see(s(1.0, 15), 1015).quality is GOOD
    assert w.see(s(1.0, 16), 1016).quality is UNCERTAIN


def test_alarm_raises_after_its_delay_clears_at_once_and_is_a_sample_each_time() -> None:
    w = TagWatch("src", [("d", tag(alarm=[{"above": 80, "delay": 3, "severity": "high"}]))])
    for t, v in enumerate([70.0, 85.0, 86.0, 87.0]):
        w.see(s(v, t), 1000 + t)
    assert w.out == []  # true since t=1, held 2 s of 3
    w.see(s(88.0, 4), 1004)
    (raised,) = w.out
    assert (raised.device, raised.tag, raised.value, raised.quality, raised.source_ts) == ("d", "t.alarm", 3, GOOD,
                                                                                          4 * SEC)
    (active,) = w.active()
    assert (active.severity, active.text, active.since_ns, active.value) == ("high", "above 80 for 3 s", 4 * SEC, 88.0)
    w.out.clear()
    w.see(s(79.0, 5), 1005)
    (cleared,) = w.out
    assert (cleared.tag, cleared.value, ALARM_STATES[cleared.value]) == ("t.alarm", 0, "cleared")
    assert w.active() == []


def test_a_delayed_alarm_rises_on_the_clock_when_no_new_value_comes() -> None:
    w = TagWatch("src", [("d", tag(alarm=[{"equals": 4, "delay": 10, "message": "capper in fault"}]))])
    w.see(s(4, 0), 1000)  # one notification, then the server sends nothing while it stays 4
    assert w.tick(1009.0, 9 * SEC) == []
    (raised,) = w.tick(1010.0, 10 * SEC)
    assert (raised.tag, raised.value, raised.source_ts) == ("t.alarm", 3, 10 * SEC)
    assert [a.text for a in w.active()] == ["capper in fault"]


def test_the_highest_severity_holding_wins_and_a_change_of_it_is_a_sample() -> None:
    rules = [{"above": 80, "severity": "medium"}, {"above": 95, "severity": "critical"}]
    w = TagWatch("src", [("d", tag(alarm=rules))])
    for t, v in enumerate([85, 97, 90, 50]):
        w.see(s(float(v), t), 1000 + t)
    assert [x.value for x in w.tick(1004, 4 * SEC)] == [2, 4, 2, 0]
    assert [ALARM_STATES[r] for r in (2, 4, 0)] == ["medium", "critical", "cleared"]


def test_bad_values_neither_raise_nor_clear() -> None:
    w = TagWatch("src", [("d", tag(alarm=[{"above": 80}]))])
    w.see(s(90.0, 0), 1000)
    assert [x.value for x in w.tick(1000, 0)] == [3]
    w.see(s(None, 1, BAD), 1001)
    assert w.tick(1002, 2 * SEC) == [] and len(w.active()) == 1


def test_processing_hands_every_reading_to_the_watch_before_the_deadband() -> None:
    clock = [1000.0]
    p = Processor([("d", tag(scale=10.0, on_change=True, stale_after=3, alarm=[{"above": 500}]))],
                  clock=lambda: clock[0], source="src")
    reported = []
    for t, raw in enumerate([40, 60, 60, 60, 60, 60]):
        clock[0] = 1000 + t
        out = p.apply(Batch("src", [s(raw, t)]))
        reported.append([] if out is None else [(x.tag, x.value, x.quality) for x in out.samples])
    assert reported == [
        [("t", 400.0, GOOD)],
        [("t", 600.0, GOOD), ("t.alarm", 3, GOOD)],  # engineering value 600 > 500: raised with the reading
        [], [],  # unchanged: filtered by on_change, still seen by the watch
        [("t", 600.0, UNCERTAIN)],  # 3 s unchanged: stale, a quality change the filter reports
        [],
    ]
    assert p.watch is not None and p.watch.is_stale("d", "t")
    assert p.filtered == 3
