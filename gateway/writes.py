"""Turning an engineering value into what a device stores: limit checks, then scale/offset inverted.

Shared by ``edge-gateway write`` and the MQTT command path, so both refuse exactly the same things.
"""

from __future__ import annotations

import math

from gateway.config.base import TagBase
from gateway.errors import WriteError
from gateway.model import Value


def to_raw(tag: TagBase, value: Value) -> Value:
    """Check ``value`` against the tag's write rules and return the raw value to write.

    Numbers must be finite and within [min, max]; scale/offset are inverted (raw = (v - offset) / scale).
    Booleans and strings pass unchanged.
    """
    if not tag.writable:
        raise WriteError(f"tag {tag.name!r} is not writable")
    if value is None:
        raise WriteError("no value")
    if isinstance(value, bool | str | list):
        return value
    v = float(value)
    if not math.isfinite(v):
        raise WriteError(f"{value!r} is not a finite number")
    if tag.min is not None and v < tag.min:
        raise WriteError(f"{value!r} is below the tag's minimum {tag.min:g}")
    if tag.max is not None and v > tag.max:
        raise WriteError(f"{value!r} is above the tag's maximum {tag.max:g}")
    if tag.scale == 1.0 and tag.offset == 0.0:
        return value
    if tag.scale == 0.0:
        raise WriteError("tag has scale 0; cannot invert")
    raw = (v - tag.offset) / tag.scale
    return round(raw) if isinstance(value, int) and raw.is_integer() else raw
