"""The field order of ``Sample`` is pinned: positional builders and spooled payloads depend on it."""

from __future__ import annotations

from gateway import samples
from gateway.model import Quality, Sample
from gateway.spool_codec import decode, encode


def test_field_order_is_pinned() -> None:
    assert Sample._fields == samples.FIELDS == (
        "device", "tag", "value", "quality", "status", "source_ts", "gateway_ts", "unit", "server_ts")
    for i, name in enumerate(samples.FIELDS):
        assert getattr(samples, name.upper()) == i


def test_builders_fill_the_fields_they_name() -> None:
    g = samples.good("m1", "temp", 21.5, 1_000, "°C")
    assert g == Sample(device="m1", tag="temp", value=21.5, quality=Quality.GOOD, status=0, source_ts=1_000,
                       gateway_ts=1_000, unit="°C", server_ts=0)
    b = samples.bad("m1", "temp", 0x800A0000, 2_000, "°C")
    assert (b.value, b.quality, b.status, b.source_ts, b.gateway_ts) == (None, Quality.BAD, 0x800A0000, 2_000, 2_000)
    r = samples.reading("m1", "t", [1, 2], Quality.UNCERTAIN, 0x40A50000, 10, 20, None, 15)
    assert (r.value, r.quality, r.status, r.source_ts, r.gateway_ts, r.unit, r.server_ts) == (
        [1, 2], Quality.UNCERTAIN, 0x40A50000, 10, 20, None, 15)
    v = samples.with_value(r, 7)
    assert v == r._replace(value=7) and type(v) is Sample
    assert samples.from_fields(tuple(r)) == r and type(samples.from_fields(tuple(r))) is Sample


def test_the_spool_codec_keeps_every_field_in_place() -> None:
    s = samples.reading("dev", "tag", 3, Quality.UNCERTAIN, 5, 11, 12, "u", 13)
    (back,) = decode(encode([s]), 1)
    assert back._asdict() == s._asdict()
