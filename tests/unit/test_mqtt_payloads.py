"""MQTT topics and payloads, config validation, and the command handler's checks (no broker)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
import yaml

from connectors.mqtt.adapter import InboundMessage
from connectors.mqtt.commands import CommandHandler, parse_ts
from connectors.mqtt.config import CommandConfig, MqttSinkConfig
from connectors.mqtt.payloads import Encoder, TimestampFormatter, json_value
from gateway.config.loader import load_config
from gateway.config.site import SiteConfig
from gateway.errors import ConfigError, WriteError
from gateway.model import Batch, Quality, Sample, Value

SITE = SiteConfig(enterprise="acme", site="busan", area="packaging", line="line1")
TS = 1_795_460_550_318_999_999


def test_json_values() -> None:
    assert [json_value(v) for v in (1.5, 3, True, False, None, 'a "b"', float("nan"), float("inf"))] == [
        "1.5", "3", "true", "false", "null", '"a \\"b\\""', "null", "null"]


def test_timestamp_is_utc_iso_with_milliseconds() -> None:
    fmt = TimestampFormatter()
    assert fmt(TS) == "2026-11-23T19:02:30.318Z"
    assert fmt(0) == "1970-01-01T00:00:00.000Z"


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
    sample = yaml.safe_load((Path(__file__).parents[2] / "connectors" / "mqtt" / "sample.yaml").read_text())
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump({"sinks": {"plant_broker": sample}}))
    cfg = load_config(path).sinks["plant_broker"]
    assert isinstance(cfg, MqttSinkConfig) and cfg.tls is not None and cfg.layout == "device"
