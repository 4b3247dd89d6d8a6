"""The MQTT sink against a real mosquitto: layouts, QoS levels, protocol versions, birth and acks."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from connectors.mqtt.config import MqttSinkConfig
from connectors.mqtt.sink import MqttSink
from gateway.config.site import SiteConfig
from gateway.errors import RetryableSinkError
from gateway.fleet.message import GatewayStatus
from gateway.logs import get_logger
from gateway.model import Batch, Quality, Sample
from tests.fakes import fleet_member
from tests.mqtt_subscriber import Received, Subscriber
from tests.servers import Mosquitto, free_port, mosquitto

SITE = SiteConfig(enterprise="acme", site="busan", area="packaging", line="line1")
TS = 1_795_460_550_318_000_000  # 2026-11-23T...: a fixed, recent timestamp
TS_ISO = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(TS // 10**9)) + ".318Z"


def make_sink(port: int, name: str = "cloud", **cfg: object) -> MqttSink:
    """A sink of a gateway whose id is the sink's name (its status on …/gateway/<name>/status)."""
    config = MqttSinkConfig.model_validate({"port": port, **cfg})
    return MqttSink(name, config, SITE, log=get_logger("test"), fleet=fleet_member(name))


def state(r: Received) -> str | None:
    """``online``/``offline`` of a status message, None for anything else."""
    return GatewayStatus.parse(r.payload).state if r.topic.endswith("/status") else None


def scan(device: str, ts: int, **values: object) -> list[Sample]:
    return [Sample(device, tag, v, Quality.GOOD, 0, ts, ts, "degC" if tag == "temperature" else None)
            for tag, v in values.items()]


async def open_connected(sink: MqttSink) -> None:
    await sink.open()
    assert sink.link is not None and await sink.link.wait_connected(10)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_device_layout_one_message_per_device_and_scan(mosquitto_server: Mosquitto, protocol: str) -> None:
    sink = make_sink(mosquitto_server.port, name=f"dev{protocol.replace('.', '')}", protocol=protocol)
    samples = [*scan("filler", TS, temperature=21.5, running=True, state="RUN", count=7),
               Sample("filler", "pressure", None, Quality.BAD, 4, TS, TS),
               *scan("capper", TS, temperature=30.0)]
    with Subscriber(mosquitto_server.port, ["acme/busan/packaging/line1/#"]) as sub:
        await open_connected(sink)
        await sink.write([Batch("plc", samples)])
        await sub.wait_for(lambda m: sum(1 for r in m if "/gateway/" not in r.topic) >= 2)
        await sink.close()
        got = await sub.wait_for(lambda m: state(m[-1]) == "offline")
    data = {r.topic: json.loads(r.payload) for r in got if "/gateway/" not in r.topic}
    assert data["acme/busan/packaging/line1/filler"] == {
        "ts": TS_ISO, "source": "plc", "device": "filler",
        "values": {"temperature": 21.5, "running": True, "state": "RUN", "count": 7, "pressure": None},
        "quality": {"pressure": "bad"}, "units": {"temperature": "degC"},
        "status": {"pressure": "ServerDeviceFailure"},  # Modbus exception 4, by name
    }
    assert data["acme/busan/packaging/line1/capper"]["values"] == {"temperature": 30.0}
    topic = f"acme/busan/packaging/line1/gateway/dev{protocol.replace('.', '')}/status"
    status = [GatewayStatus.parse(r.payload) for r in got if r.topic == topic and not r.retain]
    assert [s.state for s in status] == ["online", "offline"]
    assert {s.id for s in status} == {f"dev{protocol.replace('.', '')}"} and status[0].config_hash == "0123456789ab"


async def test_device_layout_interleaved_timestamps_one_message_each(mosquitto_server: Mosquitto) -> None:
    """An OPC-UA notification with several values per item (t1 a, t2 a, t1 b, ...): one message per device and ts."""
    sink = make_sink(mosquitto_server.port, name="interleaved")
    t2 = TS + 100_000_000
    samples = [Sample(d, f"t{i}", i * 10 + k, Quality.GOOD, 0, ts, TS + 10**9)
               for d in ("opc_m1", "opc_m2") for i in range(100) for k, ts in enumerate((TS, t2))]
    with Subscriber(mosquitto_server.port, ["acme/busan/packaging/line1/#"]) as sub:
        await open_connected(sink)
        await sink.write([Batch("opc", samples)])
        await sink.close()
        # our own offline status (a live one, not retained from an earlier test) comes after every data message
        got = await sub.wait_for(lambda m: any(state(r) == "offline" and not r.retain for r in m))
    docs = [(r.topic, json.loads(r.payload)) for r in got if "/gateway/" not in r.topic]
    stamps = (TS_ISO, TS_ISO[:-4] + "418Z")
    assert [(t, d["ts"]) for t, d in docs] == [
        (f"acme/busan/packaging/line1/{dev}", ts) for dev in ("opc_m1", "opc_m2") for ts in stamps]
    per_device = [{f"t{i}": i * 10 + k for i in range(100)} for k in (0, 1)]
    assert [d["values"] for _, d in docs] == per_device * 2


@pytest.mark.parametrize("qos", [0, 1, 2])
async def test_tag_layout_every_sample_with_its_topic_and_payload(mosquitto_server: Mosquitto, qos: int) -> None:
    sink = make_sink(mosquitto_server.port, name=f"tags{qos}", layout="tag", qos=qos,
                     topic="{enterprise}/{site}/{source}/{device}/{tag}")
    batches = [Batch("plc", scan("m1", TS + i * 1_000_000, temperature=float(i), count=i)) for i in range(50)]
    with Subscriber(mosquitto_server.port, ["acme/busan/plc/#"]) as sub:  # QoS 2 to paho subscribers is slow
        await open_connected(sink)
        await sink.write(batches[:25])
        await sink.write(batches[25:])
        got = await sub.wait_for(lambda m: len(m) >= 100)
        await sink.close()
    temps = [json.loads(r.payload) for r in got if r.topic == "acme/busan/plc/m1/temperature"]
    counts = [json.loads(r.payload)["value"] for r in got if r.topic == "acme/busan/plc/m1/count"]
    assert [t["value"] for t in temps] == [float(i) for i in range(50)]  # all of them, in order
    assert counts == list(range(50))
    assert temps[0] == {"value": 0.0, "quality": "good", "ts": TS_ISO, "unit": "degC"}


async def test_retained_values_reach_a_late_subscriber(mosquitto_server: Mosquitto) -> None:
    sink = make_sink(mosquitto_server.port, name="retained", layout="tag", retain=True,
                     topic="retained/{device}/{tag}")
    await open_connected(sink)
    await sink.write([Batch("plc", scan("m9", TS, level=3.25))])  # returns after PUBACK: stored
    await sink.close()
    with Subscriber(mosquitto_server.port, ["retained/#"]) as sub:
        got = await sub.wait_for(lambda m: len(m) >= 1)
    assert got[0].retain and json.loads(got[0].payload)["value"] == 3.25


async def test_write_without_broker_is_retryable_and_open_does_not_block() -> None:
    sink = make_sink(free_port(), name="nobroker", reconnect_min="1s")
    await sink.open()  # the broker being down at start must not stall the sink's start
    with pytest.raises(RetryableSinkError, match="not connected"):
        await sink.write([Batch("plc", scan("m1", TS, t=1.0))])
    await sink.close()


async def test_write_waits_through_a_broker_restart(tmp_path: Path) -> None:
    """A write whose messages were queued by paho while the broker was down returns once they are acked."""
    workdir = tmp_path / "broker"
    with mosquitto(workdir) as broker:
        port = broker.port
        sink = make_sink(port, name="restart", layout="tag", topic="r/{device}/{tag}", reconnect_min="1s",
                         reconnect_max="1s")
        with Subscriber(port, ["r/#"], client_id="restart-sub") as sub:
            await open_connected(sink)
            await sink.write([Batch("plc", scan("m1", TS, v=0))])
            await sub.wait_for(lambda m: len(m) == 1)
            sub.client.disconnect()
    assert sink.link is not None
    await sink.link.wait_connected(0)
    import asyncio

    write = asyncio.create_task(sink.write([Batch("plc", scan("m1", TS + 1, v=i)) for i in range(1, 3)]))
    # the link may not have noticed the broker is gone yet; either it queues or it refuses
    with mosquitto(workdir, port=port):
        try:
            await asyncio.wait_for(write, 20)
        except RetryableSinkError:
            assert await sink.link.wait_connected(10)
            await sink.write([Batch("plc", scan("m1", TS + 1, v=i)) for i in range(1, 3)])
        with Subscriber(port, ["r/#"], client_id="restart-sub") as sub:
            got = await sub.wait_for(lambda m: len(m) >= 2)
        await sink.close()
    assert [json.loads(r.payload)["value"] for r in got][-2:] == [1, 2]


async def test_a_connection_lost_while_reading_the_retained_status_counts_as_lost(tmp_path: Path) -> None:
    """After a reconnect the link waits (up to RETAINED_WAIT) for its retained status before it goes online;
    a broker that goes away in that window still ended an accepted connection: a loss like any other."""
    from tests.waiting import until

    sink = make_sink(free_port(), name="flap", reconnect_min="1s", reconnect_max="1s")
    await sink.open()  # connects in the background, retrying until a broker is there
    link = sink.link
    assert link is not None
    try:
        for i in range(2):
            with mosquitto(tmp_path / f"broker{i}", port=sink.config.port):  # a fresh broker: no retained status
                await until(lambda n=i: link.connects > n, 15, f"connection {i + 1}")
                online = link.connected  # the first connect goes online at once; the second is still checking
            await until(lambda: link._fd is None, 10, "socket closed")
            assert online is (i == 0)
        assert link.losses_within(60) == 2
    finally:
        await sink.close()
