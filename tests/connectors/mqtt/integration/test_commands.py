"""The MQTT command path end to end: a real broker, the runtime, the synthetic source's writable tags."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from gateway.config.loader import load_config
from gateway.runtime import Runtime
from tests.mqtt_subscriber import Received, Subscriber
from tests.servers import Mosquitto

PREFIX = "acme/busan/packaging/line1/cmd"


def iso_now(offset: float = 0.0) -> str:
    t = time.time() + offset
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


@pytest.fixture
async def gateway(tmp_path: Path, mosquitto_server: Mosquitto,
                  request: pytest.FixtureRequest) -> AsyncIterator[Runtime]:
    protocol = getattr(request, "param", "5")
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({
        "data_dir": str(tmp_path / "data"),
        "http": {"enabled": False},
        "site": {"enterprise": "acme", "site": "busan", "area": "packaging", "line": "line1"},
        "sources": {"line": {"type": "synthetic", "interval": "50ms", "devices": {"m1": {"tags": [
            {"name": "setpoint", "signal": "constant", "value": 10.0, "writable": True, "min": 0, "max": 100,
             "scale": 2.0},
            {"name": "temp", "signal": "sine"},
            {"name": "pump", "signal": "square", "low": False, "high": True, "period": 60, "writable": True},
        ]}}}},
        "sinks": {"cloud": {
            "type": "mqtt", "port": mosquitto_server.port, "protocol": protocol, "layout": "tag",
            "client_id": f"cmd-gw-{protocol}", "clean_start": True,
            "commands": {"enabled": True, "max_age": "5s", "rate": 50, "burst": 20},
        }},
    }))
    runtime = Runtime(load_config(path))
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    await asyncio.wait_for(runtime.started.wait(), 10)
    try:
        yield runtime
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def request(sub: Subscriber, tag: str, payload: object, corr: bytes, **kw: object) -> dict[str, object]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    sub.publish(f"{PREFIX}/line/m1/{tag}/set", body, response_topic=f"replies/{corr.decode()}",
                correlation_data=corr, **kw)  # type: ignore[arg-type]
    got = await sub.wait_for(lambda m: any(r.topic == f"replies/{corr.decode()}" for r in m))
    reply: Received = next(r for r in got if r.topic == f"replies/{corr.decode()}")
    assert reply.correlation_data == corr
    answer: dict[str, object] = json.loads(reply.payload)
    return answer


async def test_v5_commands_write_or_are_refused_with_a_reason(gateway: Runtime, mosquitto_server: Mosquitto) -> None:
    with Subscriber(mosquitto_server.port, ["replies/#", "acme/busan/packaging/line1/m1/setpoint"]) as sub:
        # wait for the gateway's command subscription: the first value on the data topic means it is connected
        await sub.wait_for(lambda m: any(r.topic.endswith("/setpoint") for r in m))
        ok = await request(sub, "setpoint", {"value": 42.0, "ts": iso_now()}, b"c1")
        assert ok["ok"] is True and ok["value"] == 42.0
        # the source holds raw 21.0 (scale 2 inverted); collection scales it back to 42.0
        await sub.wait_for(lambda m: any(r.topic.endswith("/setpoint") and json.loads(r.payload)["value"] == 42.0
                                         for r in m))
        refused = {
            b"c2": ("temp", {"value": 1.0, "ts": iso_now()}, {}, "not writable"),
            b"c3": ("setpoint", {"value": 150, "ts": iso_now()}, {}, "above the tag's maximum 100"),
            b"c4": ("setpoint", {"value": 5, "ts": iso_now(-60)}, {}, "command expired"),
            b"c5": ("setpoint", 5, {}, "no ts and no message expiry"),
            b"c6": ("nosuch", {"value": 5, "ts": iso_now()}, {}, "no tag 'nosuch'"),
        }
        for corr, (tag, payload, kw, reason) in refused.items():
            body = await request(sub, tag, payload, corr, **kw)
            assert body["ok"] is False and reason in str(body["error"]), (corr, body)
        # a v5 message expiry stands in for the timestamp
        body = await request(sub, "setpoint", 7.5, b"c7", expiry=30)
        assert body == {"ok": True, "value": 7.5, "ts": body["ts"]}
    assert gateway.sinks["cloud"].commands.executed == 2  # type: ignore[attr-defined]
    assert gateway.sinks["cloud"].commands.refused == 5  # type: ignore[attr-defined]


async def test_values_a_tag_does_not_accept_never_reach_the_device(gateway: Runtime,
                                                                   mosquitto_server: Mosquitto) -> None:
    source = gateway.sources["line"]
    with Subscriber(mosquitto_server.port, ["replies/#", "acme/busan/packaging/line1/m1/pump"]) as sub:
        await sub.wait_for(lambda m: any(r.topic.endswith("/pump") for r in m))
        before = source.batch(0.0).samples  # type: ignore[attr-defined]
        refused = {
            b"b1": ("pump", "false", "accepts true or false"),  # bool("false") would be True
            b"b2": ("pump", "maybe", "accepts true or false"),
            b"b3": ("pump", 0, "accepts true or false"),
            b"b4": ("pump", None, "accepts true or false"),
            b"b5": ("setpoint", True, "accepts a number"),  # True is not 1, and never passes min/max
            b"b6": ("setpoint", "42", "accepts a number"),
            b"b7": ("setpoint", [1, 2], "accepts a number"),
            b"b8": ("setpoint", {"x": 1}, "value must be"),
            b"b9": ("setpoint", 10**400, "above the tag's maximum 100"),  # no float can hold it: no crash
            b"b10": ("pump", [[True]] * 1000, "accepts true or false"),
        }
        for corr, (tag, value, reason) in refused.items():
            body = await request(sub, tag, {"value": value, "ts": iso_now()}, corr)
            assert body["ok"] is False and reason in str(body["error"]), (corr, body)
            assert len(str(body["error"])) < 300  # the value is quoted short
        deep = b'{"value": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        body = await request(sub, "pump", deep, b"b11")
        assert body["ok"] is False and "at most 65536 are accepted" in str(body["error"])
        nested = b'{"value": ' + b"[" * 5 + b"]" * 5 + b"}"  # small, but deeper than any tag's value
        body = await request(sub, "pump", nested, b"b13")
        assert body["ok"] is False and "nests more than 4 levels" in str(body["error"])
        assert source.batch(0.0).samples[0].value == before[0].value  # type: ignore[attr-defined]
        ok = await request(sub, "pump", {"value": False, "ts": iso_now()}, b"b12")
        assert ok["ok"] is True and ok["value"] is False
        await sub.wait_for(lambda m: any(r.topic.endswith("/pump") and json.loads(r.payload)["value"] is False
                                         for r in m[-3:]))
    assert gateway.sinks["cloud"].commands.refused == len(refused) + 2  # type: ignore[attr-defined]


@pytest.mark.parametrize("gateway", ["3.1.1"], indirect=True)
async def test_v311_correlation_and_response_topic_in_the_payload(gateway: Runtime,
                                                                  mosquitto_server: Mosquitto) -> None:
    replies = "acme/busan/packaging/line1/cmd-response"
    mine = f"{replies}/app7/a"  # a response_topic field must stay under the response prefix
    with Subscriber(mosquitto_server.port, [f"{replies}/#", "replies311/#",
                                            "acme/busan/packaging/line1/m1/temp"]) as sub:
        await sub.wait_for(lambda m: any(r.topic.endswith("/temp") for r in m))
        sub.publish(f"{PREFIX}/line/m1/setpoint/set", json.dumps(
            {"value": 12, "ts": int(time.time() * 1000), "correlation": {"id": 7},
             "response_topic": mine}).encode())
        got = await sub.wait_for(lambda m: any(r.topic == mine for r in m))
        body = json.loads(next(r for r in got if r.topic == mine).payload)
        assert body["ok"] is True and body["value"] == 12 and body["correlation"] == {"id": 7}
        # anywhere else: refused before the write, answered on the tag's default response topic
        sub.publish(f"{PREFIX}/line/m1/setpoint/set", json.dumps(
            {"value": 13, "ts": int(time.time() * 1000), "correlation": {"id": 8},
             "response_topic": "replies311/a"}).encode())
        default = f"{replies}/line/m1/setpoint"
        got = await sub.wait_for(lambda m: any(r.topic == default for r in m))
    refused = json.loads(next(r for r in got if r.topic == default).payload)
    assert refused["ok"] is False and "must be under" in refused["error"] and refused["correlation"] == {"id": 8}
    assert not any(r.topic.startswith("replies311/") for r in got)
    assert gateway.sinks["cloud"].commands.executed == 1  # type: ignore[attr-defined]


async def test_command_round_trips_to_the_modbus_simulator(tmp_path: Path, mosquitto_server: Mosquitto) -> None:
    from simulators.modbus.config import SimulatorConfig
    from simulators.modbus.server import running_simulator
    from tests.servers import free_port

    port = free_port()
    sim = SimulatorConfig.model_validate({"devices": {"plc": {"unit": 1, "tags": [
        {"name": "sp", "address": 0, "type": "float32", "signal": "constant", "value": 0},
        {"name": "ro", "address": 2, "type": "int16", "signal": "constant", "value": 7}]}}})
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({
        "data_dir": str(tmp_path / "data"), "http": {"enabled": False},
        "site": {"enterprise": "acme", "site": "busan", "area": "packaging", "line": "line1"},
        "sources": {"mb": {"type": "modbus", "host": "127.0.0.1", "port": port, "interval": "100ms",
                           "devices": {"plc": {"unit": 1, "tags": [
                               {"name": "sp", "address": 0, "type": "float32", "writable": True, "scale": 0.5,
                                "min": 0, "max": 50},
                               {"name": "ro", "address": 2, "type": "int16"}]}}}},
        "sinks": {"cloud": {"type": "mqtt", "port": mosquitto_server.port, "layout": "tag",
                            "client_id": "cmd-gw-modbus", "clean_start": True,
                            "commands": {"enabled": True}}},
    }))
    async with running_simulator(sim, port=port) as server:
        runtime = Runtime(load_config(path))
        stop = asyncio.Event()
        task = asyncio.create_task(runtime.run(stop))
        await asyncio.wait_for(runtime.started.wait(), 10)
        try:
            with Subscriber(mosquitto_server.port, ["replies/#", "acme/busan/packaging/line1/plc/sp"]) as sub:
                await sub.wait_for(lambda m: any(r.topic.endswith("/sp") for r in m))
                cmd = f"{PREFIX}/mb/plc/sp/set"
                sub.publish(cmd, json.dumps({"value": 21.0, "ts": iso_now()}).encode(),
                            response_topic="replies/mb1", correlation_data=b"mb1")
                got = await sub.wait_for(lambda m: any(r.topic == "replies/mb1" for r in m))
                assert json.loads(next(r for r in got if r.topic == "replies/mb1").payload)["ok"] is True
                # and back: the device holds raw 42.0 (scale 0.5 inverted), collected as 21.0
                assert await server.devices["plc"].read_tag("sp") == 42.0
                await sub.wait_for(lambda m: any(r.topic.endswith("/sp") and json.loads(r.payload)["value"] == 21.0
                                                 for r in m))
                for corr, tag, value, reason in ((b"mb2", "ro", 1, "not writable"),
                                                 (b"mb3", "sp", 80, "above the tag's maximum 50")):
                    body = await request_on(sub, f"{PREFIX}/mb/plc/{tag}/set", value, corr)
                    assert body["ok"] is False and reason in str(body["error"])
            assert await server.devices["plc"].read_tag("ro") == 7
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)


async def request_on(sub: Subscriber, topic: str, value: object, corr: bytes) -> dict[str, object]:
    reply_topic = f"replies/{corr.decode()}"
    sub.publish(topic, json.dumps({"value": value, "ts": iso_now()}).encode(), response_topic=reply_topic,
                correlation_data=corr)
    got = await sub.wait_for(lambda m: any(r.topic == reply_topic for r in m))
    body: dict[str, object] = json.loads(next(r for r in got if r.topic == reply_topic).payload)
    return body


REPLIES = "acme/busan/packaging/line1/cmd-response"


async def answers(sub: Subscriber, topic: str, n: int) -> list[dict[str, object]]:
    got = await sub.wait_for(lambda m: sum(r.topic == topic for r in m) >= n)
    return [json.loads(r.payload) for r in got if r.topic == topic]


async def test_hostile_response_topics_are_refused_before_the_write_and_the_link_stays_up(
        gateway: Runtime, mosquitto_server: Mosquitto) -> None:
    sink = gateway.sinks["cloud"]
    default = f"{REPLIES}/line/m1/setpoint"
    telemetry = "acme/busan/packaging/line1/m1/temp"
    with Subscriber(mosquitto_server.port, [f"{REPLIES}/#", "replies/#", telemetry]) as sub:
        await sub.wait_for(lambda m: any(r.topic == telemetry for r in m))
        connects = sink.link.connects  # type: ignore[attr-defined]
        hostile = ["", "evil/#", "a/+/b", telemetry, "$SYS/x", "replies/elsewhere"]
        for n, topic in enumerate(hostile):  # as a payload field (MQTT 3.1.1 style)
            sub.publish(f"{PREFIX}/line/m1/setpoint/set", json.dumps(
                {"value": 20 + n, "ts": iso_now(), "correlation": f"h{n}", "response_topic": topic}).encode())
        for n, topic in enumerate(["evil/#", telemetry, "acme/busan/packaging/line1/gateway/busan-line1/status",
                                   f"{PREFIX}/line/m1/setpoint/set"]):  # as the MQTT 5 response topic
            sub.publish(f"{PREFIX}/line/m1/setpoint/set", json.dumps({"value": 40 + n, "ts": iso_now()}).encode(),
                        response_topic=topic, correlation_data=f"v{n}".encode())
        got = await answers(sub, default, len(hostile) + 4)
        assert all(a["ok"] is False and "refused" in str(a["error"]) for a in got), got
        # telemetry keeps flowing, on the same connection; nothing was written
        seen = len([r for r in sub.messages if r.topic == telemetry])
        await sub.wait_for(lambda m: len([r for r in m if r.topic == telemetry]) > seen + 3)
        assert sink.link.connects == connects  # type: ignore[attr-defined]
        assert not [r for r in sub.messages if r.topic == telemetry and json.loads(r.payload).get("ok") is not None]
    assert sink.commands.executed == 0  # type: ignore[attr-defined]
    assert sink.commands.refused == len(hostile) + 4  # type: ignore[attr-defined]


async def test_a_command_runs_once_however_often_it_arrives(gateway: Runtime, mosquitto_server: Mosquitto) -> None:
    commands = gateway.sinks["cloud"].commands  # type: ignore[attr-defined]
    with Subscriber(mosquitto_server.port, [f"{REPLIES}/#", "replies/#", "acme/busan/packaging/line1/m1/temp"]) as sub:
        await sub.wait_for(lambda m: any(r.topic.endswith("/temp") for r in m))
        by_id = {"value": 30.0, "ts": iso_now(), "correlation": "once-1"}
        first = await request(sub, "setpoint", by_id, b"r1")
        again = await request(sub, "setpoint", by_id, b"r2")  # the same command id, redelivered
        assert first["ok"] is True and "duplicate" not in first
        assert again["ok"] is True and again["duplicate"] is True and again["value"] == 30.0
        same = json.dumps({"value": 31.0, "ts": iso_now()}).encode()  # no id at all: the same payload twice
        sub.publish(f"{PREFIX}/line/m1/setpoint/set", same)
        sub.publish(f"{PREFIX}/line/m1/setpoint/set", same)
        got = await answers(sub, f"{REPLIES}/line/m1/setpoint", 2)
    assert [a.get("duplicate", False) for a in got] == [False, True]
    assert commands.executed == 2 and commands.duplicates == 2
