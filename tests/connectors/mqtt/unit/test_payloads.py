"""MQTT topics and payloads, config validation, and the command handler's checks (no broker)."""

from __future__ import annotations

import asyncio
import json
import math
import time
from pathlib import Path

import pytest
import yaml

from connectors.mqtt import payloads
from connectors.mqtt.adapter import InboundMessage
from connectors.mqtt.commands import CommandHandler, parse_ts
from connectors.mqtt.config import CommandConfig, MqttSinkConfig
from connectors.mqtt.payloads import Encoder, TimestampFormatter, json_value
from gateway.config.loader import load_config
from gateway.config.site import SiteConfig
from gateway.errors import ConfigError, WriteError
from gateway.model import Batch, Quality, Sample, Value
from tests import REPO

SITE = SiteConfig(enterprise="acme", site="busan", area="packaging", line="line1")
TS = 1_795_460_550_318_999_999


def test_json_values() -> None:
    assert [json_value(v) for v in (1.5, 3, True, False, None, 'a "b"', float("nan"), float("inf"))] == [
        "1.5", "3", "true", "false", "null", '"a \\"b\\""', "null", "null"]


def test_timestamp_is_utc_iso_with_milliseconds() -> None:
    fmt = TimestampFormatter()
    assert fmt(TS) == "2026-11-23T19:02:30.318Z"
    assert fmt(0) == "1970-01-01T00:00:00.000Z"
    # the seconds are cached apart from the milliseconds
    assert [fmt(TS + d) for d in (10**6, 999 * 10**6, 10**9, 3600 * 10**9)] == [
        "2026-11-23T19:02:30.319Z", "2026-11-23T19:02:31.317Z", "2026-11-23T19:02:31.318Z", "2026-11-23T20:02:30.318Z"]


def test_device_layout_groups_by_device_and_timestamp() -> None:
    enc = Encoder("{enterprise}/{site}/{area}/{line}/{device}", SITE, layout="device", units=False)
    samples = [Sample("m1", "a", 1.0, Quality.GOOD, 0, TS, TS), Sample("m1", "b", 2, Quality.UNCERTAIN, 0, TS, TS),
               Sample("m1", "a", 1.5, Quality.GOOD, 0, TS + 10**9, TS), Sample("m2", "a", None, Quality.BAD, 3, 0, TS)]
    out = enc.encode([Batch("plc", samples)])
    assert [t for t, _ in out] == ["acme/busan/packaging/line1/m1"] * 2 + ["acme/busan/packaging/line1/m2"]
    docs = [json.loads(p) for _, p in out]
    assert docs[0] == {"ts": "2026-11-23T19:02:30.318Z", "source": "plc", "device": "m1",
                       "values": {"a": 1.0, "b": 2}, "quality": {"b": "uncertain"}}
    assert docs[1]["values"] == {"a": 1.5} and docs[1]["ts"] == "2026-11-23T19:02:31.318Z"
    # no device timestamp: the gateway's receive time
    assert docs[2]["values"] == {"a": None} and docs[2]["quality"] == {"a": "bad"}


def device_docs(samples: list[Sample], units: bool = False) -> list[tuple[str, dict[str, object]]]:
    enc = Encoder("{source}/{device}", SITE, layout="device", units=units)
    return [(t, json.loads(p)) for t, p in enc.encode([Batch("plc", samples)])]


@pytest.mark.parametrize("ntags", [3, 2 * payloads.SMALL_GROUP])  # both ways of building a payload
def test_device_layout_interleaved_timestamps_make_one_message_per_timestamp(ntags: int) -> None:
    """OPC-UA, queue size > 1, late publish: each item carries several values; t1 a, t2 a, t1 b, t2 b, ..."""
    t1, t2 = TS, TS + 10**8
    samples = [Sample(d, f"tag{i}", i * 10 + k, Quality.GOOD, 0, ts, TS + 10**9)
               for d in ("m1", "m2") for i in range(ntags) for k, ts in enumerate((t1, t2))]
    out = device_docs(samples)
    assert [(t, doc["device"], doc["ts"]) for t, doc in out] == [
        ("plc/m1", "m1", "2026-11-23T19:02:30.318Z"), ("plc/m1", "m1", "2026-11-23T19:02:30.418Z"),
        ("plc/m2", "m2", "2026-11-23T19:02:30.318Z"), ("plc/m2", "m2", "2026-11-23T19:02:30.418Z")]
    for n, (_, doc) in enumerate(out):
        assert doc["values"] == {f"tag{i}": i * 10 + n % 2 for i in range(ntags)}


def test_device_layout_devices_interleaved_one_message_per_device_and_timestamp() -> None:
    t1, t2, t3 = TS, TS + 10**6, TS + 2 * 10**6
    order = [("m2", t2, "a"), ("m1", t3, "a"), ("m2", t1, "a"), ("m1", t1, "a"), ("m2", t2, "b"),
             ("m1", t3, "b"), ("m2", t1, "b"), ("m1", t1, "b"), ("m3", 0, "a"), ("m2", t2, "c")]
    samples = [Sample(d, tag, n, Quality.BAD if tag == "b" else Quality.GOOD, 0, ts, t1, "u" if d == "m1" else None)
               for n, (d, ts, tag) in enumerate(order)]
    out = device_docs(samples, units=True)
    # devices in the order they first appear, each device's messages in time order
    assert [(doc["device"], doc["ts"][-7:], doc["values"]) for _, doc in out] == [
        ("m2", "30.318Z", {"a": 2, "b": 6}), ("m2", "30.319Z", {"a": 0, "b": 4, "c": 9}),
        ("m1", "30.318Z", {"a": 3, "b": 7}), ("m1", "30.320Z", {"a": 1, "b": 5}),
        ("m3", "30.318Z", {"a": 8})]  # no device timestamp: the gateway's
    assert [doc["quality"] for _, doc in out][:4] == [{"b": "bad"}] * 4
    assert [doc.get("units") for _, doc in out] == [None, None, {"a": "u", "b": "u"}, {"a": "u", "b": "u"}, None]


def test_device_layout_a_repeated_tag_is_not_dropped() -> None:
    samples = [Sample("m1", tag, v, Quality.GOOD, 0, TS, TS) for tag, v in (("a", 1), ("b", 2), ("a", 3), ("a", 4))]
    assert [doc["values"] for _, doc in device_docs(samples)] == [{"a": 1, "b": 2}, {"a": 3}, {"a": 4}]


def _no_constant(token: str) -> None:
    raise AssertionError(f"not JSON: {token}")


@pytest.mark.parametrize("units", [True, False])
@pytest.mark.parametrize("huge_int", [True, False])  # orjson refuses ints beyond 64 bits: the standard encoder
def test_device_payload_both_builders_give_the_same_document(monkeypatch: pytest.MonkeyPatch, units: bool,
                                                             huge_int: bool) -> None:
    values: list[Value] = [1.5, -0.0, 1e300, float("nan"), float("inf"), float("-inf"), 0,
                           -(2**70) if huge_int else -(2**63), True, False, None, "", 'q"\\', "é\u2603\n",
                           2.0**-1074, 21.899999618530273, 1e-7, 2**64 - 1]
    samples = [Sample("dé\"v", f"t{i}é\"", v, Quality(i % 3), 0, TS, TS, None if i % 4 else f"u{i % 3}°")
               for i, v in enumerate(values)]
    docs = []
    for small in (1, 10**9):
        monkeypatch.setattr(payloads, "SMALL_GROUP", small)
        ((_, payload),) = Encoder("{device}", SITE, layout="device", units=units).encode([Batch("s\"1", samples)])
        docs.append(json.loads(payload, parse_constant=_no_constant))  # strict JSON: no NaN or Infinity tokens
    assert docs[0] == docs[1]
    doc = docs[0]
    assert list(doc) == ["ts", "source", "device", "values", "quality", *(["units"] if units else [])]
    assert [doc["values"][f"t{i}é\""] for i in range(len(values))] == [
        None if isinstance(v, float) and not math.isfinite(v) else v for v in values]
    assert doc["quality"] == {f"t{i}é\"": "uncertain" if i % 3 == 1 else "bad" for i in range(len(values)) if i % 3}


def test_tag_layout_topic_placeholders_and_wildcards_escaped() -> None:
    enc = Encoder("{enterprise}/{source}/{device}/{tag}", SITE, layout="tag", units=True)
    out = enc.encode([Batch("plc", [Sample("m+1", "t#", 1.0, Quality.GOOD, 0, TS, TS, "degC")])])
    assert out == [("acme/plc/m_1/t_", b'{"value":1.0,"quality":"good","ts":"2026-11-23T19:02:30.318Z","unit":"degC"}')]


@pytest.mark.parametrize(("cfg", "message"), [
    ({"topic": "a/{nope}"}, "unknown placeholder(s) nope"),
    ({"topic": "a/#/{device}"}, "wildcards"),
    ({"topic": "a/{device}/{tag}", "layout": "device"}, "cannot use {tag}"),
    ({"password": "x"}, "password needs a username"),
    ({"tls": {"cert_file": "c.pem"}}, "cert_file and key_file go together"),
    ({"qos": 3}, "qos"),
])
def test_config_errors_name_the_field(tmp_path: Path, cfg: dict[str, object], message: str) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump({"sinks": {"cloud": {"type": "mqtt", **cfg}}}))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert any(p.startswith(f"{path}: sinks.cloud") and message in p for p in err.value.problems), err.value.problems


def test_password_is_never_shown() -> None:
    cfg = MqttSinkConfig.model_validate({"username": "u", "password": "hunter2"})
    assert "hunter2" not in repr(cfg) and "hunter2" not in cfg.model_dump_json()


def test_parse_ts() -> None:
    assert parse_ts("2026-11-23T19:02:30.318Z") == pytest.approx(1_795_460_550.318)
    assert parse_ts(1_795_460_550_318) == pytest.approx(1_795_460_550.318)
    for bad in ("yesterday", "2026-11-23T19:02:30", True):
        with pytest.raises(Exception, match="ts"):
            parse_ts(bad)


class _Link:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, object]]] = []

    def subscribe(self, topic: str, qos: int) -> None:
        self.topic = topic

    def publish_nowait(self, topic: str, payload: bytes, qos: int, retain: bool = False,
                       response_to: InboundMessage | None = None) -> None:
        self.sent.append((topic, json.loads(payload)))


async def test_rate_limit_refuses_past_the_burst() -> None:
    writes: list[tuple[str, str, str, Value]] = []

    async def writer(source: str, device: str, tag: str, value: Value) -> None:
        if tag == "ro":
            raise WriteError(f"tag {tag!r} is not writable")
        writes.append((source, device, tag, value))

    handler = CommandHandler(CommandConfig(enabled=True, rate=0.5, burst=3), SITE, writer, sink="cloud")
    link = _Link()
    handler.attach(link)  # type: ignore[arg-type]
    assert link.topic == "acme/busan/packaging/line1/cmd/+/+/+/set"
    for i in range(5):
        body = json.dumps({"value": i, "ts": int(time.time() * 1000), "correlation": i}).encode()
        handler.on_message(InboundMessage("acme/busan/packaging/line1/cmd/plc/m1/sp/set", body, None, None, None))
    handler.on_message(InboundMessage("acme/busan/packaging/line1/cmd/plc/m1/sp", b"1", None, None, 5))
    deadline = time.monotonic() + 5
    while len(link.sent) < 6:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    await handler.stop()
    assert writes == [("plc", "m1", "sp", 0), ("plc", "m1", "sp", 1), ("plc", "m1", "sp", 2)]
    replies = [body for _, body in link.sent]
    assert [r["ok"] for r in replies[:5]] == [True, True, True, False, False]
    assert "rate limit" in str(replies[3]["error"]) and replies[4]["correlation"] == 4
    assert link.sent[0][0] == "acme/busan/packaging/line1/cmd-response/plc/m1/sp"
    assert link.sent[5] == ("acme/busan/packaging/line1/cmd-response/invalid",
                            {"ok": False, "error": "topic must be <prefix>/<source>/<device>/<tag>/set",
                             "ts": link.sent[5][1]["ts"]})
    assert handler.executed == 3 and handler.refused == 3


def test_sample_yaml_is_a_valid_config(tmp_path: Path) -> None:
    sample = yaml.safe_load((REPO / "connectors" / "mqtt" / "sample.yaml").read_text())
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump({"sinks": {"plant_broker": sample}}))
    cfg = load_config(path).sinks["plant_broker"]
    assert isinstance(cfg, MqttSinkConfig) and cfg.tls is not None and cfg.layout == "device"


def test_arrays_are_json_arrays_and_never_a_repr() -> None:
    assert json_value([1, 2.5, [True, None]]) == "[1,2.5,[true,null]]"
    assert json_value([float("nan"), float("-inf"), "x"]) == '[null,null,"x"]'
    enc = Encoder("{line}/{device}/{tag}", SITE, layout="tag", units=False)
    ((_, payload),) = enc.encode([Batch("s", [Sample("d", "m", [[1.0, 2.0], [3.0, float("nan")]], Quality.GOOD,
                                                     0, TS, TS, None)])])
    assert json.loads(payload)["value"] == [[1.0, 2.0], [3.0, None]]
    for n in (3, payloads.SMALL_GROUP + 2):  # both ways a device message is built
        dev = Encoder("{line}/{device}", SITE, layout="device", units=False)
        samples = [Sample("d", f"a{i}", [i, float("inf")], Quality.GOOD, 0, TS, TS, None) for i in range(n)]
        ((_, body),) = dev.encode([Batch("s", samples)])
        assert json.loads(body)["values"]["a1"] == [1, None]


def test_status_names_and_server_timestamps_appear_only_where_needed() -> None:
    srv = TS - 5 * 10**6
    good = Sample("d", "ok", 1.0, Quality.GOOD, 0, TS, TS, None)
    bad = Sample("d", "hole", None, Quality.BAD, 2, TS, TS, None)
    timeout = Sample("d", "slow", None, Quality.BAD, 0x800A0000, TS, TS, None)
    stamped = Sample("d", "temp", 21.5, Quality.GOOD, 0, TS, TS, "degC", srv)
    enc = Encoder("{line}/{device}/{tag}", SITE, layout="tag", units=False)
    msgs = {t.rsplit("/", 1)[1]: json.loads(p) for t, p in enc.encode([Batch("s", [good, bad, timeout, stamped])])}
    assert msgs["ok"] == {"value": 1.0, "quality": "good", "ts": "2026-11-23T19:02:30.318Z"}  # unchanged
    assert msgs["hole"]["status"] == "IllegalDataAddress"
    assert msgs["slow"]["status"] == "BadTimeout"
    assert msgs["temp"]["server_ts"] == "2026-11-23T19:02:30.313Z" and "status" not in msgs["temp"]
    for group in ([good, bad, timeout, stamped], [good, bad, timeout, stamped] * 1 + [
            Sample("d", f"x{i}", 0.0, Quality.GOOD, 0, TS, TS, None) for i in range(payloads.SMALL_GROUP)]):
        dev = Encoder("{line}/{device}", SITE, layout="device", units=False)
        ((_, body),) = dev.encode([Batch("s", group)])
        doc = json.loads(body)
        assert doc["status"] == {"hole": "IllegalDataAddress", "slow": "BadTimeout"}
        assert doc["server_ts"] == {"temp": "2026-11-23T19:02:30.313Z"}
    plain = Encoder("{line}/{device}", SITE, layout="device", units=False)
    ((_, body),) = plain.encode([Batch("s", [good])])
    assert set(json.loads(body)) == {"ts", "source", "device", "values", "quality"}


def test_a_timestamp_no_clock_can_show_never_breaks_a_message() -> None:
    fmt = TimestampFormatter()
    for insane in (-11_644_473_600 * 10**9, 10**21, -1):
        assert fmt(insane).startswith(time.strftime("%Y-", time.gmtime()))


def test_state_words_ride_along_in_both_layouts_for_tags_that_have_them() -> None:
    maps = {"plc": {("m1", "state"): {1: "running", 4: "fault"}, ("m1", "code.alarm"): {0: "cleared", 3: "high"}}}
    small = [Sample("m1", "state", 4, Quality.GOOD, 0, TS, TS), Sample("m1", "temp", 4.0, Quality.GOOD, 0, TS, TS),
             Sample("m1", "code.alarm", 3, Quality.GOOD, 0, TS, TS)]
    big = small + [Sample("m1", f"x{i}", float(i), Quality.GOOD, 0, TS, TS) for i in range(payloads.SMALL_GROUP)]
    for group in (small, big):  # hand-built and json-encoded messages say the same
        (_, payload), = Encoder("{device}", SITE, layout="device", units=False, value_maps=maps).encode(
            [Batch("plc", group)])
        doc = json.loads(payload)
        assert doc["states"] == {"state": "fault", "code.alarm": "high"}  # temp 4.0 has no map: no word
        assert doc["values"]["state"] == 4
    unknown = [Sample("m1", "state", 9, Quality.GOOD, 0, TS, TS), Sample("m2", "state", 1, Quality.GOOD, 0, TS, TS)]
    docs = [json.loads(p) for _, p in Encoder("{device}", SITE, layout="device", units=False, value_maps=maps)
            .encode([Batch("plc", unknown)])]
    assert all("states" not in d for d in docs)  # no word for 9; m2's state has no map
    per_tag = Encoder("{device}/{tag}", SITE, layout="tag", units=False, value_maps=maps).encode(
        [Batch("plc", small), Batch("other", small[:1])])
    assert [json.loads(p).get("state") for _, p in per_tag] == ["fault", None, "high", None]
