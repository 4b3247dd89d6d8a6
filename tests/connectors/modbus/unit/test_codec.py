"""The register codec against register values written out by hand (never against our own encode)."""

from __future__ import annotations

import math
import struct

import pytest

from connectors.modbus.codec import decode, encode

# value, type, {order: registers} -- the hex is the IEEE / two's complement layout, permuted by hand
CASES: list[tuple[float | int | str, str, dict[str, list[int]]]] = [
    (3.5, "float32", {"ABCD": [0x4060, 0x0000], "CDAB": [0x0000, 0x4060],
                      "BADC": [0x6040, 0x0000], "DCBA": [0x0000, 0x6040]}),
    (-123456, "int32", {"ABCD": [0xFFFE, 0x1DC0], "CDAB": [0x1DC0, 0xFFFE],
                        "BADC": [0xFEFF, 0xC01D], "DCBA": [0xC01D, 0xFEFF]}),
    (0x12345678, "uint32", {"ABCD": [0x1234, 0x5678], "CDAB": [0x5678, 0x1234],
                            "BADC": [0x3412, 0x7856], "DCBA": [0x7856, 0x3412]}),
    (0.1, "float64", {"ABCD": [0x3FB9, 0x9999, 0x9999, 0x999A], "CDAB": [0x999A, 0x9999, 0x9999, 0x3FB9],
                      "BADC": [0xB93F, 0x9999, 0x9999, 0x9A99], "DCBA": [0x9A99, 0x9999, 0x9999, 0xB93F]}),
    (0x0102030405060708, "uint64", {"ABCD": [0x0102, 0x0304, 0x0506, 0x0708],
                                    "CDAB": [0x0708, 0x0506, 0x0304, 0x0102],
                                    "BADC": [0x0201, 0x0403, 0x0605, 0x0807],
                                    "DCBA": [0x0807, 0x0605, 0x0403, 0x0201]}),
    (-2, "int64", {"ABCD": [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE], "CDAB": [0xFFFE, 0xFFFF, 0xFFFF, 0xFFFF],
                   "BADC": [0xFFFF, 0xFFFF, 0xFFFF, 0xFEFF], "DCBA": [0xFEFF, 0xFFFF, 0xFFFF, 0xFFFF]}),
    (-2, "int16", {"ABCD": [0xFFFE], "CDAB": [0xFFFE], "BADC": [0xFEFF], "DCBA": [0xFEFF]}),
    (0x1234, "uint16", {"ABCD": [0x1234], "CDAB": [0x1234], "BADC": [0x3412], "DCBA": [0x3412]}),
]


@pytest.mark.parametrize(("value", "dtype", "by_order"), CASES, ids=[c[1] for c in CASES])
@pytest.mark.parametrize("order", ["ABCD", "CDAB", "BADC", "DCBA"])
def test_numeric_types_in_every_order(value: float | int, dtype: str, by_order: dict[str, list[int]],
                                      order: str) -> None:
    regs = by_order[order]
    assert decode(regs, dtype, order) == value  # type: ignore[arg-type]
    assert encode(value, dtype, order) == regs  # type: ignore[arg-type]


def test_float32_to_the_last_bit() -> None:
    # pi as float32 is 0x40490FDB; decoding must give exactly that float, not a rounded neighbour
    expected = struct.unpack(">f", bytes.fromhex("40490FDB"))[0]
    assert decode([0x0FDB, 0x4049], "float32", "CDAB") == expected
    assert decode([0xDB0F, 0x4940], "float32", "DCBA") == expected
    assert math.isnan(decode([0x7FC0, 0x0000], "float32", "ABCD"))  # type: ignore[arg-type]


@pytest.mark.parametrize(("order", "regs"), [
    ("ABCD", [0x4142, 0x4300]), ("BADC", [0x4241, 0x0043]), ("CDAB", [0x4300, 0x4142]), ("DCBA", [0x0043, 0x4241]),
])
def test_strings(order: str, regs: list[int]) -> None:
    assert decode(regs, "string", order) == "ABC"  # type: ignore[arg-type]
    assert encode("ABC", "string", order, length=2) == regs  # type: ignore[arg-type]


def test_bits_in_a_register() -> None:
    assert decode([0b1000_0000_0000_0101], "bit", "ABCD", bit=0) is True
    assert decode([0b1000_0000_0000_0101], "bit", "ABCD", bit=1) is False
    assert decode([0b1000_0000_0000_0101], "bit", "ABCD", bit=15) is True
    # byte-swapped device: the register arrives as 0x0580, which means 0x8005
    assert decode([0x0580], "bit", "BADC", bit=15) is True
    assert decode([0x0580], "bit", "BADC", bit=2) is True


def test_encode_refuses_what_does_not_fit() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        encode(70000, "int16")
    with pytest.raises(ValueError, match="whole number"):
        encode(1.5, "int32")
    with pytest.raises(ValueError, match="holds 4"):
        encode("ABCDE", "string", "ABCD", length=2)
