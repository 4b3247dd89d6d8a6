"""The MQTT sink's broker list (``hosts``): the mechanics against two real mosquittos (a broker that does not
answer, one frozen with a write in flight, all of them down), and against the nats-server cluster what only
it shows: MQTT 5 refused, and the command path over MQTT 3.1.1 across nodes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bench.servers import Server
from bench.servers import mosquitto as mosquitto_server
from connectors.mqtt.config import MqttSinkConfig
from connectors.mqtt.sink import MqttSink
from gateway.config.site import SiteConfig
from gateway.health import UplinkState
from gateway.logs import get_logger
from gateway.model import Batch, Quality, Sample
from gateway.runtime import Runtime
from tests.gateways import StartGateway
from tests.mqtt_subscriber import Subscriber
from tests.servers import NatsCluster, free_port
from tests.waiting import until

SITE = SiteConfig(enterprise="acme", site="fo", area="a1", line="l1")


def make_sink(name: str, hosts: list[str], **cfg: object) -> MqttSink:
    config = MqttSinkConfig.model_validate({"hosts": hosts, "layout": "tag", "topic": "fo/{device}/{tag}", **cfg})
    return MqttSink(name, config, SITE, log=get_logger("test"))


def batch(value: int) -> list[Batch]:
    ts = time.time_ns()
    return [Batch("plc", [Sample("m1", "v", value, Quality.GOOD, 0, ts, ts, None)])]


@pytest.fixture
def two_brokers(tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    for d in ("m1", "m2"):
        (tmp_path / d).mkdir()
    first, second = mosquitto_server(tmp_path / "m1"), mosquitto_server(tmp_path / "m2")
    first.start()
    second.start()
    try:
        yield first, second
    finally:
        first.stop()
        second.stop()


@pytest.mark.timeout(30)
async def test_a_broker_that_does_not_answer_is_passed_over_at_once(two_brokers: tuple[Server, Server]) -> None:
    _, up = two_brokers
    dead = f"127.0.0.1:{free_port()}"
    sink = make_sink("skip", [dead, f"127.0.0.1:{up.port}"], reconnect_min="5s", reconnect_max="5s")
    assert sink.uplink() == UplinkState(dead, False, 2, 0)
    t0 = time.monotonic()
    await sink.open()
    try:
        assert sink.link is not None and await sink.link.wait_connected(4)
        assert time.monotonic() - t0 < 2  # the next broker at once, not after the 5 s backoff
        assert sink.uplink() == UplinkState(f"127.0.0.1:{up.port}", True, 2, 0)  # a first connect moves nothing
        await sink.write(batch(1))
    finally:
        await sink.close()


@pytest.mark.timeout(30)
async def test_a_write_in_flight_when_the_broker_dies_completes_on_the_next(
        two_brokers: tuple[Server, Server], capsys: pytest.CaptureFixture[str]) -> None:
    first, second = two_brokers
    sink = make_sink("inflight", [f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}"], reconnect_min="5s",
                     reconnect_max="5s")
    with Subscriber(second.port, ["fo/#"], client_id="failover-sub") as sub:
        await sink.open()
        link = sink.link
        assert link is not None and await link.wait_connected(5)
        await sink.write(batch(1))
        assert first.proc is not None
        os.kill(first.proc.pid, signal.SIGSTOP)  # frozen: takes the publish, never acknowledges it
        try:
            before = link.published_mono
            write = asyncio.create_task(sink.write(batch(2)))
            await until(lambda: link.published_mono > before, 5, "publish handed to the frozen broker")
            assert not write.done()
            t0 = time.monotonic()
            first.proc.kill()  # SIGKILL: the connection drops with the message unacknowledged
            first.proc.wait(5)
            first.proc = None
            await asyncio.wait_for(write, 4)  # re-sent by paho to the next broker, acknowledged there
            took = time.monotonic() - t0
        finally:
            if first.proc is not None:
                os.kill(first.proc.pid, signal.SIGCONT)
        got = await sub.wait_for(lambda m: any(json.loads(r.payload)["value"] == 2 for r in m))
        await sink.close()
    assert took < 3, took  # no reconnect backoff between brokers
    assert [json.loads(r.payload)["value"] for r in got] == [2]
    assert link.failovers == 1 and link.endpoint == f"127.0.0.1:{second.port}"
    out = capsys.readouterr().out
    assert "mqtt broker unavailable; trying the next" in out and f"broker=127.0.0.1:{first.port}" in out
    assert f"broker=127.0.0.1:{second.port}" in out and "failovers=1" in out


@pytest.mark.timeout(30)
async def test_every_broker_down_backs_off_between_rounds_and_logs_each_once(
        capsys: pytest.CaptureFixture[str]) -> None:
    hosts = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    sink = make_sink("alldown", hosts, reconnect_min="1s", reconnect_max="2s")
    await sink.open()
    await asyncio.sleep(4.5)  # the observation window for the retry rate, not a synchronisation
    assert sink.link is not None
    attempts = sink.link.attempts
    await sink.close()
    # rounds of three at about 0, 1 and 3 s (1 s, then 2 s between rounds): no tight loop
    assert 6 <= attempts <= 10, attempts
    lines = [line for line in capsys.readouterr().out.splitlines() if "mqtt broker unavailable" in line]
    assert sorted(h for line in lines for h in hosts if f"broker={h}" in line) == sorted(hosts)  # once each


@pytest.mark.timeout(60)
async def test_mqtt5_to_nats_is_refused_with_a_clear_hint(nats_cluster: NatsCluster,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    sink = make_sink("v5nats", nats_cluster.hosts, protocol="5", client_id="v5-to-nats", reconnect_min="1s",
                     reconnect_max="1s")
    await sink.open()
    try:
        await until(lambda: 'the broker does not speak MQTT 5 (set protocol: "3.1.1")' in sink.health_problems(), 10,
                    "version refusal reported")
    finally:
        await sink.close()
    assert 'hint=\'set protocol: "3.1.1": this broker does not speak MQTT 5\'' in capsys.readouterr().out


@pytest.mark.timeout(60)
async def test_commands_over_mqtt_311_reach_a_gateway_on_another_node(
        tmp_path: Path, nats_cluster: NatsCluster, gateway: StartGateway) -> None:
    a, _, c = nats_cluster.nodes
    site = f"cmd{os.getpid()}"
    runtime: Runtime = await gateway(yaml.safe_load(f"""
        data_dir: {tmp_path / "data"}
        http: {{enabled: false}}
        site: {{enterprise: acme, site: {site}, area: a1, line: l1}}
        sources:
          line: {{type: synthetic, interval: 100ms, devices: {{m1: {{tags: [
            {{name: setpoint, signal: constant, value: 10.0, writable: true, min: 0, max: 100}}]}}}}}}
        sinks:
          cloud:
            type: mqtt
            hosts: {json.dumps(nats_cluster.hosts)}
            protocol: "3.1.1"
            client_id: gw-{site}
            commands: {{enabled: true, max_age: 10s}}
    """))
    link = runtime.sinks["cloud"].link  # type: ignore[attr-defined]
    await until(lambda: link.connected and link.endpoint == a.host, 15, "gateway on node A")
    replies = f"acme/{site}/a1/l1/cmd-response"
    with Subscriber(c.mqtt_port, [f"{replies}/#", f"acme/{site}/a1/l1/m1"], client_id=f"app-{site}",
                    protocol="3.1.1") as app:
        await app.wait_for(lambda m: len(m) > 0, 15)  # data flows: the gateway's command subscription is up
        # MQTT 3.1.1 has no response topic or expiry: both travel in the payload
        app.publish(f"acme/{site}/a1/l1/cmd/line/m1/setpoint/set", json.dumps(
            {"value": 42.0, "ts": int(time.time() * 1000), "correlation": "c1",
             "response_topic": f"{replies}/app1"}).encode())
        got = await app.wait_for(lambda m: any(r.topic == f"{replies}/app1" for r in m), 15)
        answer = json.loads(next(r for r in got if r.topic == f"{replies}/app1").payload)
        assert answer["ok"] is True and answer["value"] == 42.0 and answer["correlation"] == "c1"
        await app.wait_for(lambda m: any(r.topic.endswith("/m1") and json.loads(r.payload)["values"]["setpoint"]
                                         == 42.0 for r in m), 10)
