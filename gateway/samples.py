"""The one way to build a ``Sample`` on the hot path, and where its field order is written down.

``Sample`` is a NamedTuple; ``Sample(...)`` goes through a Python-level ``__new__`` per sample, so
sources, processors and the spool codec build samples through these helpers instead (``tuple.__new__``
underneath: no object beyond the tuple itself). Positional tuples appear only here and in
``gateway.model``; ``tests/unit/test_samples.py`` pins the order, so reordering a field cannot corrupt
data silently. New fields go at the end (spooled payloads depend on it).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, Final

from gateway.model import Quality, Sample, Value

FIELDS: Final = ("device", "tag", "value", "quality", "status", "source_ts", "gateway_ts", "unit", "server_ts")
# Positions, for hot loops that index a sample (``s[VALUE]``) instead of a slower attribute look-up.
DEVICE, TAG, VALUE, QUALITY, STATUS, SOURCE_TS, GATEWAY_TS, UNIT, SERVER_TS = range(len(FIELDS))

_new = tuple.__new__
_GOOD: Final = Quality.GOOD
_BAD: Final = Quality.BAD

from_fields: Callable[[tuple[Any, ...]], Sample] = partial(tuple.__new__, Sample)
"""A sample from a complete tuple in ``FIELDS`` order (the spool codec's columns)."""


def good(device: str, tag: str, value: Value, ts: int, unit: str | None) -> Sample:
    """A GOOD reading stamped once: source and gateway time are the same instant (a poll's answer)."""
    return _new(Sample, (device, tag, value, _GOOD, 0, ts, ts, unit, 0))


def bad(device: str, tag: str, status: int, ts: int, unit: str | None) -> Sample:
    """A BAD sample without a value: the device or link did not deliver one (``status`` says why)."""
    return _new(Sample, (device, tag, None, _BAD, status, ts, ts, unit, 0))


def reading(device: str, tag: str, value: Value, quality: Quality, status: int, source_ts: int,
            gateway_ts: int, unit: str | None, server_ts: int = 0) -> Sample:
    """A reading with every field given (a server that stamps its own times)."""
    return _new(Sample, (device, tag, value, quality, status, source_ts, gateway_ts, unit, server_ts))


def with_value(s: Sample, value: Value) -> Sample:
    """``s`` with another value (scaled, clamped); everything else unchanged."""
    return _new(Sample, (s[0], s[1], value, *s[3:]))
