"""LiveTags: the last sample per tag, and the per-device grouping status checks read."""

from __future__ import annotations

from gateway.live import LiveTags
from gateway.model import Quality, Sample


def _s(device: str, tag: str, value: float, ts: int = 1, quality: Quality = Quality.GOOD) -> Sample:
    return Sample(device, tag, value, quality, 0, ts, ts)


def test_per_device_holds_each_device_s_latest_samples_in_recording_order() -> None:
    live = LiveTags(history_points=0)
    live.record("plc", [_s("press", "p", 1.0), _s("oven", "t", 2.0), _s("press", "q", 3.0)])
    assert live.per_device("plc") == {"press": [_s("press", "p", 1.0), _s("press", "q", 3.0)],
                                      "oven": [_s("oven", "t", 2.0)]}
    live.record("plc", [_s("press", "p", 5.0, ts=2, quality=Quality.BAD)])  # a newer reading replaces it
    assert live.per_device("plc")["press"] == [_s("press", "p", 5.0, ts=2, quality=Quality.BAD), _s("press", "q", 3.0)]
    assert live.per_device("nothing") == {}


def test_tags_and_devices_that_appear_later_are_grouped_too() -> None:
    live = LiveTags(history_points=0)
    live.record("plc", [_s("press", "p", 1.0)])
    assert list(live.per_device("plc")) == ["press"]
    live.record("plc", [_s("press", "r", 4.0), _s("dryer", "h", 6.0)])
    assert live.per_device("plc") == {"press": [_s("press", "p", 1.0), _s("press", "r", 4.0)],
                                      "dryer": [_s("dryer", "h", 6.0)]}


def test_a_forgotten_source_starts_over() -> None:
    live = LiveTags(history_points=0)
    live.record("plc", [_s("press", "p", 1.0), _s("press", "q", 2.0)])
    live.per_device("plc")
    live.forget_source("plc")
    assert live.per_device("plc") == {}
    live.record("plc", [_s("oven", "t", 7.0), _s("oven", "u", 8.0)])  # a reload's source: as many tags as before
    assert live.per_device("plc") == {"oven": [_s("oven", "t", 7.0), _s("oven", "u", 8.0)]}
