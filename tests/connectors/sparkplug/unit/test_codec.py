"""Sparkplug B values: datatypes from values, every datatype into a metric and back, the specification's
array examples byte for byte, quality as properties, and the fixed payloads."""

from __future__ import annotations

import math
import struct

import pytest

from connectors.sparkplug import codec
from connectors.sparkplug.codec import Metric, Payload
from gateway.model import Quality, Value


@pytest.mark.parametrize(("value", "datatype"), [
    (True, codec.BOOLEAN), (7, codec.INT64), (-(2**63), codec.INT64), (2**63, codec.UINT64), (2**64, codec.DOUBLE),
    (2.5, codec.DOUBLE), ("RUN", codec.STRING), (None, codec.UNKNOWN), ([1, 2], codec.INT64_ARRAY),
    ([1, 2.5], codec.DOUBLE_ARRAY), ([1.0, None], codec.DOUBLE_ARRAY), ([True, False], codec.BOOLEAN_ARRAY),
    (["a"], codec.STRING_ARRAY), ([1, "a"], codec.STRING_ARRAY), ([], codec.DOUBLE_ARRAY),
    ([[1, 2], [3, 4]], codec.STRING),
])
def test_infer(value: Value, datatype: int) -> None:
    assert codec.infer(value) == datatype


@pytest.mark.parametrize(("a", "b", "wider"), [
    (codec.BOOLEAN, codec.INT64, codec.INT64), (codec.INT64, codec.DOUBLE, codec.DOUBLE),
    (codec.BOOLEAN, codec.DOUBLE, codec.DOUBLE), (codec.INT64, codec.UINT64, codec.DOUBLE),
    (codec.DOUBLE, codec.STRING, codec.STRING), (codec.INT64_ARRAY, codec.DOUBLE_ARRAY, codec.DOUBLE_ARRAY),
    (codec.DOUBLE, codec.DOUBLE_ARRAY, codec.STRING), (codec.DOUBLE, codec.UNKNOWN, codec.DOUBLE),
])
def test_widen_is_symmetric_and_holds_both(a: int, b: int, wider: int) -> None:
    assert codec.widen(a, b) == codec.widen(b, a) == wider


# (datatype, value, the value field protobuf holds, what a command reading it back gets)
ROUND_TRIPS = [
    (codec.INT8, -5, ("int_value", 2**32 - 5), -5),
    (codec.INT16, -30000, ("int_value", 2**32 - 30000), -30000),
    (codec.INT32, -(2**31), ("int_value", 2**31), -(2**31)),
    (codec.INT64, -1, ("long_value", 2**64 - 1), -1),
    (codec.UINT8, 255, ("int_value", 255), 255),
    (codec.UINT16, 65535, ("int_value", 65535), 65535),
    (codec.UINT32, 4_000_000_000, ("int_value", 4_000_000_000), 4_000_000_000),
    (codec.UINT64, 2**64 - 1, ("long_value", 2**64 - 1), 2**64 - 1),
    (codec.FLOAT, 1.5, ("float_value", 1.5), 1.5),
    (codec.DOUBLE, 21.123456789, ("double_value", 21.123456789), 21.123456789),
    (codec.DOUBLE, 3, ("double_value", 3.0), 3.0),
    (codec.BOOLEAN, True, ("boolean_value", True), True),
    (codec.STRING, "AUTO", ("string_value", "AUTO"), "AUTO"),
    (codec.STRING, [[1, 2], [3, 4]], ("string_value", "[[1,2],[3,4]]"), "[[1,2],[3,4]]"),
    (codec.DATETIME, "2026-11-23T21:07:51.123Z", ("long_value", 1795468071123), "2026-11-23T21:07:51.123Z"),
]


@pytest.mark.parametrize(("datatype", "value", "stored", "read_back"), ROUND_TRIPS)
def test_put_and_value_of(datatype: int, value: Value, stored: tuple[str, object], read_back: Value) -> None:
    m = Metric()
    codec.put(m, datatype, value)
    field, raw = stored
    assert m.WhichOneof("value") == field and getattr(m, field) == raw
    again = Metric.FromString(m.SerializeToString())
    assert codec.value_of(again, datatype) == read_back


# The specification's examples (Sparkplug 3.0, "Array Types"), little-endian as its text says and Tahu encodes
# (its FloatArray example prints big-endian bytes, and its Int8Array one 0xEF for -23, which is 0xE9).
SPEC_ARRAYS = [
    (codec.INT8_ARRAY, [-23, 123], bytes([0xE9, 0x7B])),
    (codec.INT16_ARRAY, [-30000, 30000], bytes([0xD0, 0x8A, 0x30, 0x75])),
    (codec.INT32_ARRAY, [-1, 315338746], bytes([0xFF, 0xFF, 0xFF, 0xFF, 0xFA, 0xAF, 0xCB, 0x12])),
    (codec.INT64_ARRAY, [-4270929666821191986, -3601064768563266876],
     bytes([0xCE, 0x06, 0x72, 0xAC, 0x18, 0x9C, 0xBA, 0xC4, 0xC4, 0xBA, 0x9C, 0x18, 0xAC, 0x72, 0x06, 0xCE])),
    (codec.UINT8_ARRAY, [23, 250], bytes([0x17, 0xFA])),
    (codec.UINT16_ARRAY, [30, 52360], bytes([0x1E, 0x00, 0x88, 0xCC])),
    (codec.UINT32_ARRAY, [52, 3293969225], bytes([0x34, 0x00, 0x00, 0x00, 0x49, 0xFB, 0x55, 0xC4])),
    (codec.UINT64_ARRAY, [52, 16444743074749521625],
     bytes([0x34, 0, 0, 0, 0, 0, 0, 0, 0xD9, 0x9E, 0x02, 0xD1, 0xB2, 0x76, 0x37, 0xE4])),
    (codec.DOUBLE_ARRAY, [12.354213, 1022.9123213], struct.pack("<2d", 12.354213, 1022.9123213)),
    (codec.FLOAT_ARRAY, [1.5, -2.25], struct.pack("<2f", 1.5, -2.25)),
    (codec.BOOLEAN_ARRAY, [False, False, True, True, False, True, False, False, True, True, False, True],
     bytes([0x0C, 0x00, 0x00, 0x00, 0x34, 0xD0])),
    (codec.STRING_ARRAY, ["ABC", "hello"], bytes([0x41, 0x42, 0x43, 0x00, 0x68, 0x65, 0x6C, 0x6C, 0x6F, 0x00])),
]


@pytest.mark.parametrize(("datatype", "value", "packed"), SPEC_ARRAYS)
def test_arrays_as_the_specification_packs_them(datatype: int, value: list[Value], packed: bytes) -> None:
    m = Metric()
    codec.put(m, datatype, value)
    assert m.bytes_value == packed
    assert codec.value_of(m, datatype) == value


def test_datetime_array_example() -> None:
    m = Metric()
    codec.put(m, codec.DATETIME_ARRAY, [1256102875335, 1656107875000])
    assert m.bytes_value == bytes([0xC7, 0xD0, 0x90, 0x75, 0x24, 0x01, 0, 0, 0xB8, 0xBA, 0xB8, 0x97, 0x81, 0x01, 0, 0])
    assert codec.value_of(m, codec.DATETIME_ARRAY) == ["2009-10-21T05:27:55.335Z", "2022-06-24T21:57:55.000Z"]


@pytest.mark.parametrize(("datatype", "value"), [
    (codec.INT16, 70000), (codec.UINT8, -1), (codec.INT32, 2.5), (codec.DOUBLE, "x"), (codec.BOOLEAN, 2),
    (codec.DATETIME, "yesterday"), (codec.INT8_ARRAY, [1, 300]), (codec.UINT64, 2**64),
])
def test_a_value_the_datatype_cannot_hold_is_refused(datatype: int, value: Value) -> None:
    assert not codec.fits(datatype, value)
    with pytest.raises(codec.DoesNotFit):
        codec.put(Metric(), datatype, value)


def test_null_and_nan() -> None:
    m = Metric()
    codec.put(m, codec.DOUBLE, None)
    assert m.is_null and m.WhichOneof("value") is None and codec.value_of(m, codec.DOUBLE) is None
    codec.put(m := Metric(), codec.DOUBLE, math.nan)
    assert math.isnan(m.double_value)
    codec.put(m := Metric(), codec.DOUBLE_ARRAY, [1.0, None])
    assert math.isnan(struct.unpack("<2d", m.bytes_value)[1])


def test_quality_and_status_as_properties() -> None:
    m = Metric()
    codec.quality_properties(m, Quality.BAD, 0x800A0000)
    props = dict(zip(m.properties.keys, m.properties.values, strict=True))
    assert (props["Quality"].type, props["Quality"].int_value) == (codec.INT32, 0)
    assert props["Status"].string_value == "BadTimeout"
    assert (props["StatusCode"].type, props["StatusCode"].int_value) == (codec.UINT32, 0x800A0000)
    codec.quality_properties(u := Metric(), Quality.UNCERTAIN, 0x40900000)
    assert u.properties.values[0].int_value == 500  # STALE: Sparkplug has no UNCERTAIN, and it is not GOOD


def test_node_payloads() -> None:
    birth = Payload.FromString(codec.nbirth(7, 0, 1000))
    assert birth.seq == 0 and birth.timestamp == 1000
    bdseq, rebirth = birth.metrics
    assert (bdseq.name, bdseq.datatype, bdseq.long_value) == ("bdSeq", codec.INT64, 7)
    assert (rebirth.name, rebirth.datatype, rebirth.boolean_value) == ("Node Control/Rebirth", codec.BOOLEAN, False)
    assert not rebirth.HasField("alias")  # any host may ask for a rebirth without knowing aliases
    death = Payload.FromString(codec.ndeath(7, 2000))
    assert not death.HasField("seq") and [(m.name, m.long_value) for m in death.metrics] == [("bdSeq", 7)]
