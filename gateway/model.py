"""The one record that flows through the pipeline, and its batch.

``Sample`` is a NamedTuple: immutable, slotted (``__slots__ = ()``) and built by ``tuple.__new__``,
which is several times cheaper than a frozen dataclass on the hot path.
"""

from __future__ import annotations

import time
from enum import IntEnum
from typing import NamedTuple

Value = float | int | bool | str | list["Value"] | None
"""A tag's value. Arrays (and matrices, as nested lists) travel as Python lists and leave as JSON arrays."""


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
    ``status`` is the raw code: an OPC-UA StatusCode, a Modbus exception code (1-255), a gateway code
    (``gateway.status_codes``), or 0. ``server_ts`` is the OPC-UA server timestamp when the tag asks
    for it, else 0. New fields go at the end: spooled batches and positional builders depend on the order.
    """

    device: str
    tag: str
    value: Value
    quality: Quality = Quality.GOOD
    status: int = 0
    source_ts: int = 0
    gateway_ts: int = 0
    unit: str | None = None
    server_ts: int = 0


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
