"""Sparkplug B values and payloads on Eclipse Tahu's ``sparkplug_b.proto`` (the generated ``sparkplug_b_pb2``).

What a metric's datatype is when the config does not say (``infer``, ``widen``), how a value of a datatype
is put into a metric (``put``) and read back from a command (``value_of``), a sample's quality and status as
metric properties, and the fixed payloads of an edge node (NBIRTH, NDEATH, DDEATH). The sink's state (seq,
aliases, what was born) lives in ``connectors.sparkplug.session``.

Integers follow the specification: Int8/16/32 and UInt8/16/32 in ``int_value`` (signed ones as 32-bit two's
complement), Int64/UInt64/DateTime in ``long_value`` (Int64 as 64-bit two's complement), arrays as
little-endian packed ``bytes_value``.
"""

from __future__ import annotations

import math
import struct
from datetime import UTC, datetime
from typing import Any, Final

from connectors.sparkplug import sparkplug_b_pb2 as pb
from gateway.model import Quality, Value
from gateway.status_codes import status_name
from gateway.values import array_json

Payload = pb.Payload
Metric = pb.Payload.Metric

UNKNOWN: Final = 0
INT8: Final = 1
INT16: Final = 2
INT32: Final = 3
INT64: Final = 4
UINT8: Final = 5
UINT16: Final = 6
UINT32: Final = 7
UINT64: Final = 8
FLOAT: Final = 9
DOUBLE: Final = 10
BOOLEAN: Final = 11
STRING: Final = 12
DATETIME: Final = 13
TEXT: Final = 14
INT8_ARRAY: Final = 22
INT16_ARRAY: Final = 23
INT32_ARRAY: Final = 24
INT64_ARRAY: Final = 25
UINT8_ARRAY: Final = 26
UINT16_ARRAY: Final = 27
UINT32_ARRAY: Final = 28
UINT64_ARRAY: Final = 29
FLOAT_ARRAY: Final = 30
DOUBLE_ARRAY: Final = 31
BOOLEAN_ARRAY: Final = 32
STRING_ARRAY: Final = 33
DATETIME_ARRAY: Final = 34

NAMES: Final[dict[str, int]] = {
    "Int8": INT8, "Int16": INT16, "Int32": INT32, "Int64": INT64, "UInt8": UINT8, "UInt16": UINT16,
    "UInt32": UINT32, "UInt64": UINT64, "Float": FLOAT, "Double": DOUBLE, "Boolean": BOOLEAN, "String": STRING,
    "DateTime": DATETIME, "Text": TEXT, "Int8Array": INT8_ARRAY, "Int16Array": INT16_ARRAY,
    "Int32Array": INT32_ARRAY, "Int64Array": INT64_ARRAY, "UInt8Array": UINT8_ARRAY, "UInt16Array": UINT16_ARRAY,
    "UInt32Array": UINT32_ARRAY, "UInt64Array": UINT64_ARRAY, "FloatArray": FLOAT_ARRAY,
    "DoubleArray": DOUBLE_ARRAY, "BooleanArray": BOOLEAN_ARRAY, "StringArray": STRING_ARRAY,
    "DateTimeArray": DATETIME_ARRAY,
}
"""The datatypes a config may name (``datatypes:``), by their names in the specification."""

NODE_REBIRTH: Final = "Node Control/Rebirth"
BDSEQ: Final = "bdSeq"

# Quality as the specification's ``Quality`` property (Int32): 0 BAD, 192 GOOD, 500 STALE. It has no
# UNCERTAIN; a doubtful value (a frozen sensor, a replaced timestamp, an OPC-UA Uncertain) is sent as STALE,
# never as GOOD, and its status (``Status``, ``StatusCode``) says exactly what it is.
QUALITY_CODES: Final = {Quality.GOOD: 192, Quality.UNCERTAIN: 500, Quality.BAD: 0}

_MASK32: Final = 0xFFFFFFFF
_MASK64: Final = 0xFFFFFFFFFFFFFFFF
_INT_RANGES: Final[dict[int, tuple[int, int]]] = {
    INT8: (-(2**7), 2**7 - 1), INT16: (-(2**15), 2**15 - 1), INT32: (-(2**31), 2**31 - 1),
    INT64: (-(2**63), 2**63 - 1), UINT8: (0, 2**8 - 1), UINT16: (0, 2**16 - 1), UINT32: (0, 2**32 - 1),
    UINT64: (0, 2**64 - 1),
}
_SIGNED32: Final = frozenset({INT8, INT16, INT32})
_PACKED: Final[dict[int, tuple[str, int]]] = {  # array datatype -> (struct code, element datatype)
    INT8_ARRAY: ("b", INT8), INT16_ARRAY: ("h", INT16), INT32_ARRAY: ("i", INT32), INT64_ARRAY: ("q", INT64),
    UINT8_ARRAY: ("B", UINT8), UINT16_ARRAY: ("H", UINT16), UINT32_ARRAY: ("I", UINT32),
    UINT64_ARRAY: ("Q", UINT64), FLOAT_ARRAY: ("f", FLOAT), DOUBLE_ARRAY: ("d", DOUBLE),
    DATETIME_ARRAY: ("q", DATETIME),
}
_ARRAY_OF: Final = {BOOLEAN: BOOLEAN_ARRAY, INT64: INT64_ARRAY, UINT64: UINT64_ARRAY, DOUBLE: DOUBLE_ARRAY,
                    STRING: STRING_ARRAY}
_ELEMENT_OF: Final = {v: k for k, v in _ARRAY_OF.items()}


class DoesNotFit(ValueError):
    """A value that the metric's datatype cannot hold (a configured Int16 given 70000, text for a Double)."""


# --- datatypes from values ---------------------------------------------------------------------------

SCALAR_TYPES: Final[dict[type, int]] = {bool: BOOLEAN, int: INT64, float: DOUBLE, str: STRING}


def infer(value: Value) -> int:
    """The datatype a value suggests: Boolean, Int64 (UInt64 past Int64's range), Double, String, an array
    of those (``[]`` a DoubleArray), String for a matrix (sent as its JSON text); UNKNOWN for None."""
    t = type(value)
    dt = SCALAR_TYPES.get(t)
    if dt == INT64:
        return _int_type(value)  # type: ignore[arg-type]  # an int, by its type
    if dt is not None:
        return dt
    if value is None:
        return UNKNOWN
    if t is list:
        element = UNKNOWN
        for x in value:  # type: ignore[union-attr]  # a list, by its type
            if type(x) is list:
                return STRING  # a matrix: JSON text
            e = DOUBLE if x is None else infer(x)
            element = e if element == UNKNOWN else widen(element, e)
        return _ARRAY_OF[element] if element != UNKNOWN else DOUBLE_ARRAY
    return STRING


def _int_type(v: int) -> int:
    if -(2**63) <= v < 2**63:
        return INT64
    return UINT64 if 0 <= v < 2**64 else DOUBLE


def widen(a: int, b: int) -> int:
    """The narrowest inferred datatype that holds values of both ``a`` and ``b``: Boolean < Int64 < Double,
    UInt64 with Int64 is Double, anything with String is String; arrays by their elements; an array and a
    scalar meet in String."""
    if a == b or b == UNKNOWN:
        return a
    if a == UNKNOWN:
        return b
    ea, eb = _ELEMENT_OF.get(a), _ELEMENT_OF.get(b)
    if ea is not None and eb is not None:
        return _ARRAY_OF[widen(ea, eb)]
    if ea is not None or eb is not None or STRING in (a, b):
        return STRING
    pair = {a, b}
    if pair <= {BOOLEAN, INT64}:
        return INT64
    if pair <= {BOOLEAN, UINT64}:
        return UINT64
    return DOUBLE


# --- values into metrics -------------------------------------------------------------------------------


def _as_int(v: Any, dt: int) -> int:
    if type(v) is float:
        if not v.is_integer():
            raise DoesNotFit(f"{v!r} is not a whole number")
        v = int(v)
    elif type(v) is not int and type(v) is not bool:
        raise DoesNotFit(f"{v!r} is not a number")
    lo, hi = _INT_RANGES[dt]
    if not lo <= v <= hi:
        raise DoesNotFit(f"{v} is outside {lo}..{hi}")
    return int(v)


def _as_float(v: Any) -> float:
    if type(v) is float or type(v) is int or type(v) is bool:
        return float(v)
    raise DoesNotFit(f"{v!r} is not a number")


def _as_ms(v: Any) -> int:
    """A DateTime: ISO 8601 text with a zone (what the OPC-UA source reads), or milliseconds since the epoch."""
    if type(v) is str:
        try:
            dt = datetime.fromisoformat(v.strip().replace("Z", "+00:00"))
        except ValueError:
            raise DoesNotFit(f"{v!r} is not ISO 8601") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return round(dt.timestamp() * 1000)
    if type(v) is int or (type(v) is float and math.isfinite(v)):
        return round(v)
    raise DoesNotFit(f"{v!r} is not a date and time")


def _as_text(v: Any) -> str:
    if type(v) is str:
        return v
    if type(v) is list:
        return array_json(v)
    if type(v) is bool:
        return "true" if v else "false"
    return str(v)


def _as_bool(v: Any) -> bool:
    if type(v) is bool:
        return v
    if type(v) is int and v in (0, 1):
        return bool(v)
    raise DoesNotFit(f"{v!r} is not true or false")


def pack_array(dt: int, v: Any) -> bytes:
    """An array value as the specification's packed little-endian bytes."""
    if type(v) is not list:
        raise DoesNotFit(f"{v!r} is not an array")
    if dt == BOOLEAN_ARRAY:
        bits = [_as_bool(x) for x in v]
        out = bytearray(struct.pack("<I", len(bits)))
        for i in range(0, len(bits), 8):
            byte = 0
            for j, bit in enumerate(bits[i:i + 8]):
                byte |= bit << (7 - j)  # first value in the most significant bit, as the specification's example
            out.append(byte)
        return bytes(out)
    if dt == STRING_ARRAY:
        return b"".join(_as_text(x).encode() + b"\0" for x in v)
    code, element = _PACKED[dt]
    if element == DATETIME:
        items: list[Any] = [_as_ms(x) for x in v]
    elif element in (FLOAT, DOUBLE):
        items = [math.nan if x is None else _as_float(x) for x in v]
    else:
        items = [_as_int(x, element) for x in v]
    return struct.pack(f"<{len(items)}{code}", *items)


def unpack_array(dt: int, raw: bytes) -> list[Value]:
    if dt == BOOLEAN_ARRAY:
        (n,) = struct.unpack_from("<I", raw)
        return [bool(raw[4 + i // 8] >> (7 - i % 8) & 1) for i in range(n)]
    if dt == STRING_ARRAY:
        return [s.decode() for s in raw.split(b"\0")[:-1]]
    code, element = _PACKED[dt]
    values = list(struct.unpack(f"<{len(raw) // struct.calcsize(code)}{code}", raw))
    return [_iso(x) for x in values] if element == DATETIME else values


def put(m: Metric, dt: int, v: Value) -> None:
    """Set ``m``'s value to ``v`` as datatype ``dt``; raises DoesNotFit when it cannot hold it. None is
    ``is_null``."""
    if v is None:
        m.is_null = True
    elif dt == DOUBLE:
        m.double_value = _as_float(v)
    elif dt in (INT64, UINT64):
        m.long_value = _as_int(v, dt) & _MASK64
    elif dt == BOOLEAN:
        m.boolean_value = _as_bool(v)
    elif dt in (STRING, TEXT):
        m.string_value = _as_text(v)
    elif dt == FLOAT:
        m.float_value = _as_float(v)
    elif dt in _SIGNED32:
        m.int_value = _as_int(v, dt) & _MASK32
    elif dt in (UINT8, UINT16, UINT32):
        m.int_value = _as_int(v, dt)
    elif dt == DATETIME:
        m.long_value = _as_ms(v) & _MASK64
    elif dt in _PACKED or dt in (BOOLEAN_ARRAY, STRING_ARRAY):
        m.bytes_value = pack_array(dt, v)
    else:
        raise DoesNotFit(f"datatype {dt} is not supported")


def fits(dt: int, v: Value) -> bool:
    """Whether ``put`` takes ``v`` as ``dt`` (checked on a scratch metric: the rule is ``put``'s own)."""
    try:
        put(_SCRATCH, dt, v)
    except DoesNotFit:
        return False
    finally:
        _SCRATCH.Clear()
    return True


_SCRATCH = Metric()


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _signed(v: int, bits: int) -> int:
    return v - (1 << bits) if v >= 1 << (bits - 1) else v


def value_of(m: Metric, dt: int) -> Value:
    """A command's value (NCMD/DCMD metric) as the gateway's ``Value``, read from whichever value field the
    sender set, as datatype ``dt`` (the command's own, else the birth's): signed integers from their two's
    complement, a DateTime as ISO 8601 text, an array as a list."""
    if m.is_null:
        return None
    field = m.WhichOneof("value")
    if field is None:
        return None
    if field == "int_value":
        return _signed(m.int_value, 32) if dt in _SIGNED32 else m.int_value
    if field == "long_value":
        if dt == DATETIME:
            return _iso(m.long_value)
        return _signed(m.long_value, 64) if dt in (INT64, INT8, INT16, INT32) else m.long_value
    if field == "float_value":
        return m.float_value
    if field == "double_value":
        return m.double_value
    if field == "boolean_value":
        return m.boolean_value
    if field == "string_value":
        return m.string_value
    if field == "bytes_value" and (dt in _PACKED or dt in (BOOLEAN_ARRAY, STRING_ARRAY)):
        return unpack_array(dt, m.bytes_value)
    raise DoesNotFit(f"a {field} value is not supported for datatype {dt}")


# --- properties ------------------------------------------------------------------------------------------


def quality_properties(m: Metric, quality: int, status: int) -> None:
    """``Quality`` (Int32, the specification's codes) and the gateway's ``Status`` (its name) and
    ``StatusCode`` (UInt32): what a host needs to tell BAD and doubtful values from good ones, and why."""
    props = m.properties
    props.keys.append("Quality")
    props.values.add(type=INT32, int_value=QUALITY_CODES[Quality(quality)])
    props.keys.append("Status")
    props.values.add(type=STRING, string_value=status_name(status))
    props.keys.append("StatusCode")
    props.values.add(type=UINT32, int_value=status & _MASK32)


def unit_property(m: Metric, unit: str) -> None:
    """``engUnit``: the property an Ignition MQTT Engine tag takes its engineering unit from."""
    m.properties.keys.append("engUnit")
    m.properties.values.add(type=STRING, string_value=unit)


# --- fixed payloads -------------------------------------------------------------------------------------


def ndeath(bdseq: int, now_ms: int) -> bytes:
    """NDEATH: only the bdSeq of the session it ends (no seq, by the specification)."""
    p = Payload(timestamp=now_ms)
    p.metrics.add(name=BDSEQ, timestamp=now_ms, datatype=INT64, long_value=bdseq)
    return p.SerializeToString()


def nbirth(bdseq: int, seq: int, now_ms: int) -> bytes:
    """NBIRTH: bdSeq (the will's) and ``Node Control/Rebirth`` (false, no alias, so any host can ask)."""
    p = Payload(timestamp=now_ms, seq=seq)
    p.metrics.add(name=BDSEQ, timestamp=now_ms, datatype=INT64, long_value=bdseq)
    p.metrics.add(name=NODE_REBIRTH, timestamp=now_ms, datatype=BOOLEAN, boolean_value=False)
    return p.SerializeToString()


def ddeath(seq: int, now_ms: int) -> bytes:
    return Payload(timestamp=now_ms, seq=seq).SerializeToString()


def decode(raw: bytes) -> Payload:
    """A received payload (NCMD, DCMD); raises ``google.protobuf.message.DecodeError`` when malformed."""
    return Payload.FromString(raw)

