"""The edge node's state machine without a broker: births, DDATA by exception, DDEATH/DBIRTH on a device's
link, rebirth on new metrics or datatypes, seq, and a write's state applied only once it was delivered."""

from __future__ import annotations

from typing import Any

from connectors.sparkplug import codec
from connectors.sparkplug.codec import Payload
from connectors.sparkplug.session import EdgeNode, Encoded
from gateway.model import Batch, Quality, Sample, Value
from gateway.status_codes import BAD_NOT_CONNECTED, BAD_TIMEOUT

TS = 1_795_460_550_318_000_000
MS = TS // 1_000_000


def node(**kw: Any) -> EdgeNode:
    n = EdgeNode("plant", "line1", lambda source, device: device, **kw)
    n.births(4, MS)
    return n


def good(device: str, tag: str, value: Value, dt_ms: int = 0) -> Sample:
    ts = TS + dt_ms * 1_000_000
    return Sample(device, tag, value, Quality.GOOD, 0, ts, ts)


def bad(device: str, tag: str, status: int, dt_ms: int = 0) -> Sample:
    ts = TS + dt_ms * 1_000_000
    return Sample(device, tag, None, Quality.BAD, status, ts, ts)


def write(n: EdgeNode, *samples: Sample, source: str = "plc", commit: bool = True) -> list[tuple[str, Payload]]:
    enc = n.encode([Batch(source, list(samples))], MS + 5000)
    if commit:
        enc.commit()
    return decoded(enc)


def decoded(enc: Encoded) -> list[tuple[str, Payload]]:
    return [(topic.split("/")[2] + ":" + "/".join(topic.split("/")[4:]), Payload.FromString(raw))
            for topic, raw in enc.messages]


def values(p: Payload) -> dict[Any, Value]:
    return {(m.name or m.alias): codec.value_of(m, m.datatype or codec.DOUBLE) for m in p.metrics}


def test_births_then_dbirth_with_values_then_ddata_by_exception_with_aliases_only() -> None:
    n = EdgeNode("plant", "line1", lambda source, device: f"{source}_{device}")
    (topic, raw), = n.births(4, MS)
    assert topic == "spBv1.0/plant/NBIRTH/line1" and Payload.FromString(raw).seq == 0
    msgs = write(n, good("filler", "temp", 21.5), good("filler", "run", True), good("filler", "count", 7))
    assert [k for k, _ in msgs] == ["DBIRTH:plc_filler"]
    birth = msgs[0][1]
    assert birth.seq == 1
    assert [(m.name, m.alias, m.datatype, m.timestamp) for m in birth.metrics] == [
        ("temp", 1, codec.DOUBLE, MS), ("run", 2, codec.BOOLEAN, MS), ("count", 3, codec.INT64, MS)]
    assert values(birth) == {"temp": 21.5, "run": True, "count": 7}
    msgs = write(n, good("filler", "temp", 21.5, 1000), good("filler", "run", False, 1000),
                 good("filler", "count", 7, 1000))
    ((kind, data),) = msgs
    assert kind == "DDATA:plc_filler" and data.seq == 2
    (m,) = data.metrics  # only what changed
    assert (m.alias, m.name, m.HasField("datatype"), m.boolean_value, m.timestamp) == (2, "", False, False, MS + 1000)
    assert write(n, good("filler", "run", False, 2000)) == []  # nothing changed: nothing published


def test_seq_counts_every_message_and_wraps_after_255() -> None:
    n = node()
    seqs = [p.seq for i in range(300) for _, p in write(n, good("m1", "v", i))]
    assert seqs == [(1 + i) % 256 for i in range(300)]


def test_a_device_whose_link_drops_dies_and_is_born_again_when_it_answers() -> None:
    n = node()
    write(n, good("m1", "a", 1.0), good("m1", "b", 2.0), good("m2", "a", 5.0))
    # one batch per poll, as a source emits them
    enc = n.encode([Batch("plc", [good("m1", "a", 1.5, 100)]),
                    Batch("plc", [bad("m1", "a", BAD_NOT_CONNECTED, 200), bad("m1", "b", BAD_TIMEOUT, 200)]),
                    Batch("plc", [bad("m1", "a", BAD_NOT_CONNECTED, 300), bad("m1", "b", BAD_NOT_CONNECTED, 300)])],
                   MS + 5000)
    enc.commit()
    msgs = decoded(enc)
    assert [k for k, _ in msgs] == ["DDATA:m1", "DDEATH:m1"]  # what it read before, then its death
    assert msgs[1][1].timestamp == MS + 200 and not msgs[1][1].metrics
    assert write(n, bad("m1", "a", BAD_NOT_CONNECTED, 400), bad("m1", "b", BAD_NOT_CONNECTED, 400)) == []
    msgs = write(n, good("m1", "a", 3.0, 500))
    assert [k for k, _ in msgs] == ["DBIRTH:m1"]
    birth = msgs[0][1]
    assert values(birth) == {"a": 3.0, "b": None}  # b not read since: null, BAD, with the reason
    b = birth.metrics[1]
    assert b.is_null and dict(zip(b.properties.keys, [v.int_value for v in b.properties.values], strict=True))[
        "Quality"] == 0
    assert [k for k, _ in write(n, good("m2", "a", 6.0))] == ["DDATA:m2"]  # the other device never noticed


def test_a_device_never_born_dies_silently() -> None:
    n = node()
    assert write(n, bad("m9", "a", BAD_NOT_CONNECTED)) == []
    assert [k for k, _ in write(n, good("m9", "a", 1))] == ["DBIRTH:m9"]


def test_a_new_metric_or_a_wider_datatype_rebirths_the_device_with_every_metric() -> None:
    n = node()
    write(n, good("m1", "a", 1), good("m1", "b", 2))
    (kind, birth), = write(n, good("m1", "c", True, 100))
    assert kind == "DBIRTH:m1" and [m.name for m in birth.metrics] == ["a", "b", "c"]
    assert [m.alias for m in birth.metrics] == [1, 2, 3]  # aliases stay what they were
    (kind, birth), = write(n, good("m1", "a", 2.5, 200))
    assert kind == "DBIRTH:m1" and birth.metrics[0].datatype == codec.DOUBLE and values(birth)["a"] == 2.5
    assert [k for k, _ in write(n, good("m1", "a", 3, 300))] == ["DDATA:m1"]  # an int fits a Double


def test_a_metric_first_seen_without_value_takes_the_type_of_its_first_value() -> None:
    n = node()
    write(n, good("m1", "a", 1.0), bad("m1", "coil", 2))
    (kind, birth), = write(n, good("m1", "coil", True, 100))
    assert kind == "DBIRTH:m1" and birth.metrics[1].datatype == codec.BOOLEAN


def test_a_new_device_is_born_with_first_values_and_the_rest_follows_as_ddata() -> None:
    n = node()
    msgs = write(n, good("m1", "a", 1, 0), good("m1", "a", 2, 100), good("m1", "a", 3, 200))
    assert [k for k, _ in msgs] == ["DBIRTH:m1", "DDATA:m1"]
    assert values(msgs[0][1]) == {"a": 1}
    assert [(m.long_value, m.timestamp) for m in msgs[1][1].metrics] == [(2, MS + 100), (3, MS + 200)]


def test_ddata_values_are_in_chronological_order() -> None:
    n = node()
    write(n, good("m1", "a", 0), good("m1", "b", 0))
    (_, data), = write(n, good("m1", "a", 1, 300), good("m1", "b", 1, 100), good("m1", "a", 2, 200))
    assert [m.timestamp - MS for m in data.metrics] == [100, 200, 300]
    assert [(m.alias, m.long_value) for m in data.metrics] == [(2, 1), (1, 2), (1, 1)]


def test_a_write_not_delivered_is_encoded_again_from_the_same_state() -> None:
    n = node()
    write(n, good("m1", "a", 1))
    first = write(n, good("m1", "a", 2, 100), commit=False)  # the broker never acknowledged it
    n.reset()
    births = [Payload.FromString(raw) for _, raw in n.births(5, MS + 1000)]
    assert [values(p) for p in births[1:]] == [{"a": 1}]  # births carry what was delivered
    again = write(n, good("m1", "a", 2, 100))
    assert [values(p) for _, p in again] == [values(p) for _, p in first] == [{1: 2}]
    assert births[0].seq == 0 and [p.seq for _, p in again] == [2]


def test_births_leave_out_dead_devices() -> None:
    n = node()
    write(n, good("m1", "a", 1), good("m2", "a", 1))
    write(n, bad("m2", "a", BAD_NOT_CONNECTED))
    n.reset()
    topics = [t for t, _ in n.births(5, MS)]
    assert topics == ["spBv1.0/plant/NBIRTH/line1", "spBv1.0/plant/DBIRTH/line1/m1"]


def test_quality_and_status_as_properties_and_back_to_good() -> None:
    n = node()
    write(n, good("m1", "a", 1.0))
    (_, data), = write(n, Sample("m1", "a", 1.0, Quality.UNCERTAIN, 0x40900000, TS + 10**8, TS + 10**8))
    props = {k: v for k, v in zip(data.metrics[0].properties.keys, data.metrics[0].properties.values, strict=True)}
    assert props["Quality"].int_value == 500 and props["Status"].string_value == "UncertainLastUsableValue"
    (_, data), = write(n, good("m1", "a", 1.0, 200))  # the same value, good again: sent, and says so
    assert data.metrics[0].properties.values[0].int_value == 192


def test_without_report_by_exception_every_sample_goes() -> None:
    n = node(report_by_exception=False)
    write(n, good("m1", "a", 1))
    (_, data), = write(n, good("m1", "a", 1, 100), good("m1", "a", 1, 200))
    assert len(data.metrics) == 2


def test_configured_datatype_and_a_value_it_cannot_hold() -> None:
    n = node(datatypes={"m1/mode": codec.INT16, "*/level": codec.FLOAT})
    (_, birth), = write(n, good("m1", "mode", 3), good("m1", "level", 2.5))
    assert [m.datatype for m in birth.metrics] == [codec.INT16, codec.FLOAT]
    (_, data), = write(n, good("m1", "mode", 70000, 100))
    m = data.metrics[0]
    assert m.is_null and [v.string_value for v in m.properties.values][1] == "BadTypeMismatch"


def test_two_devices_with_one_sparkplug_id_are_rejected_not_mixed() -> None:
    n = EdgeNode("g", "n", lambda source, device: device)
    n.births(0, MS)
    enc = n.encode([Batch("plc1", [good("press", "a", 1)]), Batch("plc2", [good("press", "a", 2)])], MS)
    assert [t for t, _ in enc.messages] == ["spBv1.0/g/DBIRTH/n/press"]
    ((position, samples, reason),) = enc.rejected
    assert position == 1 and samples[0].value == 2 and "plc1.press" in reason
