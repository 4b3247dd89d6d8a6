"""The one record that flows through the pipeline, and its batch.

``Sample`` is a NamedTuple: immutable, slotted (``__slots__ = ()``) and built by ``tuple.__new__``,
which is several times cheaper than a frozen dataclass on the hot path.
"""

from __future__ import annotations

import time
from enum import IntEnum
from typing import NamedTuple

Value = float | int | bool | str | None


class Quality(IntEnum):
    """OPC-UA style quality class. The raw device code travels beside it in ``Sample.status``."""

    GOOD = 0
    UNCERTAIN = 1
    BAD = 2

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {Quality.GOOD: "good", Quality.UNCERTAIN: "uncertain", Quality.BAD: "bad"}


class Sample(NamedTuple):
    """One reading of one tag.

    Timestamps are wall-clock nanoseconds since the Unix epoch (``time.time_ns()``); intervals and
    timeouts elsewhere use monotonic time, because edge boxes without an RTC boot in 1970.
    ``status`` is the raw device code: an OPC-UA StatusCode, a Modbus exception code, or 0.
    """

    device: str
    tag: str
    value: Value
    quality: Quality = Quality.GOOD
    status: int = 0
    source_ts: int = 0
    gateway_ts: int = 0
    unit: str | None = None


class Batch(NamedTuple):
    """Samples one source emitted together (one poll, one notification burst).

    ``source`` is the configured source name; sinks select what they take by it.
    """

    source: str
    samples: list[Sample]


class SpooledBatch(NamedTuple):
    """A batch as read back from the spool: ``seq`` orders it and is what a sink cursor points to."""

    seq: int
    source: str
    samples: list[Sample]


def now_ns() -> int:
    return time.time_ns()
