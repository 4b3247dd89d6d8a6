"""The one rule that turns a requested value into what a device stores, shared by every write path.

``edge-gateway write``, the MQTT command path (and any later one) all go through ``coerce``, so they
refuse exactly the same things, before anything touches the device. A write is the most dangerous
thing the gateway does, so the rule never guesses: ``bool("false")`` is True in Python, and a JSON
``1`` is not a coil state.

What a tag accepts is a ``WriteKind``, given by its source: a Modbus source knows it from the tag's
configured type; an OPC-UA source from the node's DataType and ValueRank once connected.

- ``bool``: only ``true``/``false`` (JSON booleans). The CLI also takes the words true/false/1/0.
- ``int``/``float``: a number, never a boolean or text (the CLI parses its text as a number). min/max are
  checked on the engineering value, then scale/offset are inverted (raw = (v - offset) / scale); an
  ``int`` tag refuses a raw value that is not whole or outside its raw type's range, a ``float`` tag one
  outside its range (float32: +-3.4e38). NaN and infinities are refused.
- ``string``: text, at most ``max_bytes`` UTF-8 bytes when the tag has a fixed size.
- ``datetime``: ISO 8601 text with a time zone. ``bytes``: hex text.
- ``array`` kinds: a JSON array whose every element follows the element rule; a scalar kind refuses arrays.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, localcontext
from typing import Literal

from gateway.config.base import TagBase
from gateway.contracts import WritableSource
from gateway.errors import WriteError
from gateway.model import Value

Base = Literal["bool", "int", "float", "string", "datetime", "bytes"]

FLOAT32_MAX = 3.4028234663852886e38
_CLI_BOOLS = {"true": True, "false": False, "1": True, "0": False}
_NOISE = Decimal("1e-12")  # relative: what a float computed by a client may be off by
_SHOWN = 60  # characters of a refused value quoted back: a huge value must not flood a log or a response


@dataclass(frozen=True, slots=True)
class WriteKind:
    """What a tag accepts. ``lo``/``hi`` bound the RAW value of numeric kinds (None: unbounded)."""

    base: Base
    lo: float | None = None
    hi: float | None = None
    max_bytes: int | None = None
    array: bool = False
    type_name: str = ""
    """The device-side type, for messages (``uint16``, ``Float``, ``coil``)."""

    def fits(self, raw: float) -> bool:
        """``raw`` lies within the kind's bounds (an unbounded side always fits)."""
        return (self.lo is None or raw >= self.lo) and (self.hi is None or raw <= self.hi)

    def describe(self) -> str:
        what = {
            "bool": "true or false",
            "int": "a whole number",
            "float": "a number",
            "string": "text",
            "datetime": "an ISO 8601 time with a zone",
            "bytes": "hex text",
        }[self.base]
        if self.base in ("int", "float") and self.lo is not None and self.hi is not None:
            what += f" (raw {_num(self.lo)}..{_num(self.hi)})"
        if self.max_bytes is not None:
            what += f" of at most {self.max_bytes} bytes"
        if self.array:
            what = f"a JSON array of {what}"
        return f"{what} [{self.type_name}]" if self.type_name else what


BOOL = WriteKind("bool", type_name="bool")


def int_kind(bits: int, signed: bool, type_name: str = "") -> WriteKind:
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    return WriteKind("int", lo, hi, type_name=type_name or f"{'' if signed else 'u'}int{bits}")


def shown(value: object) -> str:
    """``value`` as short text for a message or an audit line."""
    if isinstance(value, str):
        text = repr(value)
    else:
        try:  # as JSON: a sender wrote `true`, not Python's True
            text = json.dumps(value)
        except (TypeError, ValueError, RecursionError):
            text = repr(value)
    return text if len(text) <= _SHOWN else f"{text[:_SHOWN]}... ({len(text)} characters)"


def coerce(tag: TagBase, kind: WriteKind, value: Value) -> Value:
    """Check an engineering ``value`` against the tag and its kind; return the raw value to write."""
    if not tag.writable:
        raise WriteError(f"tag {tag.name!r} is not writable")
    if kind.array:
        if not isinstance(value, list):
            raise _refused(tag, kind, value)
        return [_coerce_one(tag, kind, v, value) for v in value]
    if isinstance(value, list):
        raise _refused(tag, kind, value)
    return _coerce_one(tag, kind, value, value)


async def write_value(source: WritableSource, device: str, tag: TagBase, value: Value) -> Value:
    """The whole write: what the tag accepts, the rule, then the device. Returns the raw value written."""
    if not tag.writable:
        raise WriteError(f"tag {tag.name!r} is not writable (set `writable: true` on the tag)")
    raw = coerce(tag, await source.write_kind(device, tag.name), value)
    await source.write(device, tag.name, raw)
    return raw


def parse_cli(kind: WriteKind, text: str) -> Value:
    """The command line's VALUE text as the JSON value it stands for, by what the tag accepts."""
    if kind.array:
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            raise WriteError(f"expected a JSON array such as [1, 2, 3], got {shown(text)}") from None
        return value  # type: ignore[no-any-return]  # checked by coerce
    if kind.base == "bool":
        word = _CLI_BOOLS.get(text.strip().lower())
        if word is None:
            raise WriteError(f"expected true, false, 1 or 0, got {shown(text)}")
        return word
    if kind.base in ("int", "float"):
        t = text.strip()
        try:
            return int(t)
        except ValueError:
            pass
        try:
            return float(t)
        except ValueError:
            raise WriteError(f"expected a number, got {shown(text)}") from None
    return text


def _coerce_one(tag: TagBase, kind: WriteKind, v: Value, whole: Value) -> Value:
    base = kind.base
    if base == "bool":
        if v is True or v is False:
            return v
        raise _refused(tag, kind, whole)
    if base in ("int", "float"):
        if type(v) is bool or not isinstance(v, int | float):
            raise _refused(tag, kind, whole)
        return _number(tag, kind, v)
    if not isinstance(v, str):
        raise _refused(tag, kind, whole)
    if base == "string":
        if kind.max_bytes is not None and len(v.encode("utf-8")) > kind.max_bytes:
            raise WriteError(f"tag {tag.name!r}: {shown(v)} is longer than {kind.max_bytes} bytes")
        return v
    if base == "datetime":
        try:
            dt = datetime.fromisoformat(v.strip().replace("Z", "+00:00"))
        except ValueError:
            raise _refused(tag, kind, whole) from None
        if dt.tzinfo is None:
            raise WriteError(f"tag {tag.name!r}: {shown(v)} needs a time zone (e.g. a trailing Z)")
        return v
    try:  # bytes
        bytes.fromhex(v)
    except ValueError:
        raise _refused(tag, kind, whole) from None
    return v


def _number(tag: TagBase, kind: WriteKind, v: int | float) -> int | float:
    if isinstance(v, float) and not math.isfinite(v):
        raise WriteError(f"tag {tag.name!r}: {v!r} is not a finite number")
    if tag.min is not None and v < tag.min:
        raise WriteError(f"tag {tag.name!r}: {shown(v)} is below the tag's minimum {tag.min:g}")
    if tag.max is not None and v > tag.max:
        raise WriteError(f"tag {tag.name!r}: {shown(v)} is above the tag's maximum {tag.max:g}")
    if tag.scale == 0.0:
        raise WriteError(f"tag {tag.name!r} has scale 0; a write cannot be inverted")
    # Exact decimal arithmetic on the numbers as written (64.9 and scale 0.1 give raw 649, not
    # 648.9999999999999), and no float overflow for a 400-digit JSON integer.
    with localcontext() as ctx:
        ctx.prec = 60
        exact = (_dec(v) - _dec(tag.offset)) / _dec(tag.scale)
    raw: int | float
    if kind.base == "int":
        whole = exact.to_integral_value()
        # a float sent by a client may carry binary noise from its own arithmetic (0.1 * 3); an int never does
        noise = isinstance(v, float) and abs(exact - whole) <= abs(exact) * _NOISE
        if exact != whole and not noise:
            raise WriteError(f"tag {tag.name!r}: {shown(v)} gives raw {_num(exact)}, not a whole number; "
                             f"it accepts {kind.describe()}")
        raw = int(whole)
    else:
        raw = float(exact)
        if not math.isfinite(raw):
            raise WriteError(f"tag {tag.name!r}: {shown(v)} gives raw {_num(exact)}, outside {kind.describe()}")
    if not kind.fits(raw):
        raise WriteError(f"tag {tag.name!r}: {shown(v)} gives raw {_num(exact)}, outside {kind.describe()}")
    return raw


def _refused(tag: TagBase, kind: WriteKind, value: Value) -> WriteError:
    return WriteError(f"tag {tag.name!r} accepts {kind.describe()}, not {shown(value)}")


def _dec(x: int | float) -> Decimal:
    """``x`` as the decimal it was written as (a float's shortest repr), exactly."""
    return Decimal(x) if isinstance(x, int) else Decimal(repr(x))


def _num(x: Decimal | float) -> str:
    d = x if isinstance(x, Decimal) else _dec(x)
    if d == d.to_integral_value() and abs(d) < 10**20:
        return str(int(d))
    return f"{d.normalize():.8g}"
