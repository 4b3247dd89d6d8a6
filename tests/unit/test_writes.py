"""The one write rule (gateway.writes): nothing a tag does not accept exactly can become a device write."""

from __future__ import annotations

import dataclasses

import pytest

from connectors.modbus.config import ModbusTag
from connectors.modbus.writer import register_bit, set_bit, write_kind
from gateway.config.base import TagBase
from gateway.errors import WriteError
from gateway.model import Value
from gateway.writes import BOOL, FLOAT32_MAX, WriteKind, coerce, int_kind, parse_cli, shown

W = TagBase(name="t", writable=True)
UINT16 = int_kind(16, False)
INT16 = int_kind(16, True)
REAL = WriteKind("float", -FLOAT32_MAX, FLOAT32_MAX, type_name="float32")


@pytest.mark.parametrize("value", ["false", "maybe", "true", 0, 1, 0.0, None, "", [True], "1"])
def test_a_bool_tag_takes_only_json_true_or_false(value: Value) -> None:
    with pytest.raises(WriteError, match=r"accepts true or false"):
        coerce(W, BOOL, value)


def test_a_bool_tag_passes_true_and_false_unchanged() -> None:
    assert coerce(W, BOOL, True) is True
    assert coerce(W, BOOL, False) is False


@pytest.mark.parametrize("text,expected", [("true", True), ("FALSE", False), ("1", True), ("0", False),
                                           (" True ", True)])
def test_the_cli_words_for_a_bool(text: str, expected: bool) -> None:
    assert parse_cli(BOOL, text) is expected


@pytest.mark.parametrize("text", ["on", "off", "yes", "2", "maybe", "", "tru"])
def test_other_cli_words_are_refused_for_a_bool(text: str) -> None:
    with pytest.raises(WriteError, match="expected true, false, 1 or 0"):
        parse_cli(BOOL, text)


@pytest.mark.parametrize("value", [True, False, "12", "abc", None, [1]])
def test_numeric_tags_refuse_booleans_text_and_arrays(value: Value) -> None:
    limited = TagBase(name="sp", min=0, max=100, writable=True)
    with pytest.raises(WriteError, match="accepts"):
        coerce(limited, UINT16, value)
    with pytest.raises(WriteError, match="accepts"):
        coerce(limited, REAL, value)


def test_true_never_passes_a_min_max_check() -> None:
    tag = TagBase(name="sp", min=0, max=100, writable=True)
    with pytest.raises(WriteError, match="accepts a number"):
        coerce(tag, REAL, True)


def test_integers_refuse_fractions_and_values_outside_the_raw_range_after_inversion() -> None:
    assert coerce(W, UINT16, 65535) == 65535
    assert coerce(W, UINT16, 12.0) == 12 and type(coerce(W, UINT16, 12.0)) is int
    with pytest.raises(WriteError, match="not a whole number"):
        coerce(W, UINT16, 12.5)
    with pytest.raises(WriteError, match="outside"):
        coerce(W, UINT16, 65536)
    with pytest.raises(WriteError, match="outside"):
        coerce(W, UINT16, -1)
    tenth = TagBase(name="temp", scale=0.1, writable=True)
    assert coerce(tenth, UINT16, 64.9) == 649  # 64.9 / 0.1 is 648.999... in binary: still whole
    assert coerce(tenth, UINT16, 6553.5) == 65535
    with pytest.raises(WriteError, match="raw 65536, outside"):
        coerce(tenth, UINT16, 6553.6)
    with pytest.raises(WriteError, match="not a whole number"):
        coerce(tenth, UINT16, 1.05)
    assert coerce(tenth, INT16, -3276.8) == -32768


def test_min_max_apply_to_the_engineering_value_and_floats_keep_their_range() -> None:
    tag = TagBase(name="sp", scale=2.0, min=0, max=10, writable=True)
    assert coerce(tag, REAL, 10) == 5.0 and type(coerce(tag, REAL, 10)) is float
    with pytest.raises(WriteError, match="maximum 10"):
        coerce(tag, REAL, 10.5)
    with pytest.raises(WriteError, match="outside"):
        coerce(W, REAL, 1e39)
    with pytest.raises(WriteError, match="finite"):
        coerce(W, REAL, float("inf"))


def test_cli_numbers_are_parsed_for_numeric_kinds_only() -> None:
    assert parse_cli(UINT16, "42") == 42 and type(parse_cli(UINT16, "42")) is int
    assert parse_cli(REAL, "21.5") == 21.5
    with pytest.raises(WriteError, match="expected a number"):
        parse_cli(REAL, "warm")
    assert parse_cli(WriteKind("string"), "true") == "true"  # text tags take the text as it is


def test_strings_need_text_that_fits() -> None:
    kind = WriteKind("string", max_bytes=4)
    assert coerce(W, kind, "OK") == "OK"
    with pytest.raises(WriteError, match="longer than 4 bytes"):
        coerce(W, kind, "TOO LONG")
    with pytest.raises(WriteError, match="accepts text"):
        coerce(W, kind, 42)


def test_arrays_are_checked_element_by_element() -> None:
    kind = WriteKind("int", -128, 127, array=True, type_name="SByte[]")
    assert coerce(W, kind, [1, -2, 3]) == [1, -2, 3]
    with pytest.raises(WriteError, match="JSON array"):
        coerce(W, kind, 5)
    with pytest.raises(WriteError, match="outside"):
        coerce(W, kind, [1, 200])
    with pytest.raises(WriteError, match="accepts"):
        coerce(W, kind, [1, True])
    with pytest.raises(WriteError, match="accepts"):
        coerce(W, kind, [[1, 2], [3, 4]])  # a matrix is not an array of numbers
    with pytest.raises(WriteError, match="accepts"):
        coerce(W, UINT16, [1, 2])  # a scalar tag refuses an array
    assert parse_cli(kind, "[1, 2, 3]") == [1, 2, 3]
    with pytest.raises(WriteError, match="JSON array"):
        parse_cli(kind, "1,2,3")


def test_datetime_and_bytes_kinds() -> None:
    when = WriteKind("datetime")
    assert coerce(W, when, "2026-12-05T10:00:00Z") == "2026-12-05T10:00:00Z"
    with pytest.raises(WriteError, match="time zone"):
        coerce(W, when, "2026-12-05T10:00:00")
    with pytest.raises(WriteError, match="accepts"):
        coerce(W, when, "yesterday")
    blob = WriteKind("bytes")
    assert coerce(W, blob, "00ff") == "00ff"
    with pytest.raises(WriteError, match="accepts hex"):
        coerce(W, blob, "zz")


def test_a_refused_value_is_quoted_short() -> None:
    text = shown("x" * 10_000)
    assert len(text) < 120 and "10002 characters" in text
    with pytest.raises(WriteError) as info:
        coerce(W, BOOL, "y" * 1_000_000)
    assert len(str(info.value)) < 200


def test_modbus_tag_kinds_come_from_the_configured_type() -> None:
    def tag(**kw: object) -> ModbusTag:
        return ModbusTag(name="t", address=0, writable=True, **kw)  # type: ignore[arg-type]

    assert write_kind(tag(table="coil", type="bool")).base == "bool"
    assert write_kind(tag(type="bit", bit=3)).base == "bool"
    assert (write_kind(tag(type="int16")).lo, write_kind(tag(type="int16")).hi) == (-32768, 32767)
    assert write_kind(tag(type="uint32")).hi == 2**32 - 1
    assert write_kind(tag(type="int64")).lo == -(2**63)
    assert write_kind(tag(type="float32")).hi == FLOAT32_MAX
    assert write_kind(tag(type="float64")).hi is None
    assert write_kind(tag(type="string", length=3)).max_bytes == 6


def test_bit_positions_follow_the_byte_order() -> None:
    bit3 = ModbusTag(name="b", address=0, type="bit", bit=3)
    swapped = ModbusTag(name="b", address=0, type="bit", bit=3, order="BADC")
    assert register_bit(bit3) == 3 and register_bit(swapped) == 11
    assert set_bit(0x00F0, bit3, True) == 0x00F8
    assert set_bit(0xFFFF, bit3, False) == 0xFFF7


def test_inversion_is_exact_and_never_overflows() -> None:
    """Decimal arithmetic on the numbers as written: no float overflow, no inf written, no lost digits."""
    huge = int("1" + "0" * 400)  # what json.loads makes of a 401-digit number
    for kind in (UINT16, REAL, WriteKind("float", type_name="float64"), int_kind(64, False)):
        with pytest.raises(WriteError, match="outside"):
            coerce(W, kind, huge)
        with pytest.raises(WriteError, match="outside"):
            coerce(TagBase(name="s", scale=0.5, writable=True), kind, -huge)
    with pytest.raises(WriteError, match="outside"):  # 1e308 / 0.5 is inf as a float: never written
        coerce(TagBase(name="s", scale=0.5, writable=True), WriteKind("float", type_name="float64"), 1e308)
    halves = TagBase(name="count", scale=0.5, writable=True)
    assert coerce(halves, int_kind(64, False), 2**62 + 1) == 2**63 + 2  # exact beyond a float's 53 bits
    tenth = TagBase(name="temp", scale=0.1, offset=-40.0, writable=True)
    assert coerce(tenth, INT16, -39.7) == 3
    assert coerce(tenth, INT16, 1.1 * 3) == 433  # a client's float noise (3.3000000000000003) is not a fraction
    with pytest.raises(WriteError, match="not a whole number"):
        coerce(tenth, INT16, -39.75)


def test_values_are_quoted_as_the_json_a_sender_wrote() -> None:
    assert (shown(True), shown(None), shown([1.5, False]), shown("1")) == ("true", "null", "[1.5, false]", "'1'")
    with pytest.raises(WriteError, match=r"\[float32\], not true$"):
        coerce(W, REAL, True)


def test_cli_array_text_nested_too_deeply_is_refused_not_a_crash() -> None:
    kind = WriteKind("int", -128, 127, array=True)
    with pytest.raises(WriteError, match="JSON array"):
        parse_cli(kind, "[" * 100_000 + "]" * 100_000)


class _NoDevice:
    """A Modbus client that fails the test if a write ever reaches it."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the device was called ({name}) with a value the tag does not accept")


@pytest.mark.parametrize("tag_kw,value", [
    ({"table": "coil", "type": "bool"}, "false"), ({"table": "coil", "type": "bool"}, 1),
    ({"type": "bit", "bit": 2}, None), ({"type": "uint16"}, True), ({"type": "uint16"}, "42"),
    ({"type": "float32"}, float("nan")), ({"type": "float32"}, 10**400), ({"type": "int16"}, 1.5),
    ({"type": "string", "length": 1}, 7),
])
async def test_the_modbus_writer_refuses_on_its_own_what_is_not_exactly_its_type(tag_kw: dict[str, object],
                                                                                 value: Value) -> None:
    from connectors.modbus.config import ModbusDevice
    from connectors.modbus.writer import write_tag

    tag = ModbusTag(name="t", address=0, writable=True, **tag_kw)  # type: ignore[arg-type]
    dev = ModbusDevice.model_validate({"unit": 1, "tags": [dataclasses.asdict(tag)]})
    with pytest.raises(WriteError):
        await write_tag(_NoDevice(), dev, tag, value)  # type: ignore[arg-type]


def test_the_opcua_adapter_refuses_on_its_own_what_is_not_exactly_the_node_type() -> None:
    from asyncua import ua

    from connectors.opcua.adapter import OpcUaError, _coerce

    vt = ua.VariantType
    for value, variant in [("false", vt.Boolean), (0, vt.Boolean), (True, vt.Int16), (1.5, vt.Int16),
                           (40000, vt.Int16), (10**400, vt.Int64), (float("inf"), vt.Int32), ("1", vt.Double),
                           (float("nan"), vt.Double), (1e39, vt.Float), (5, vt.String), ("noon", vt.DateTime)]:
        with pytest.raises(OpcUaError, match="cannot write"):
            _coerce(value, variant)
    assert _coerce(12.0, vt.Int16) == 12 and type(_coerce(12.0, vt.Int16)) is int
    assert _coerce(7, vt.Float) == 7.0 and _coerce(False, vt.Boolean) is False
