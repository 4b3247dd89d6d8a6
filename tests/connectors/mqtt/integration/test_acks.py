"""A real mosquitto's PUBACKs take the link's short way, reason codes included, and resolve the writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.mqtt.adapter import MqttLink
from connectors.mqtt.config import MqttSinkConfig
from gateway.errors import RetryableSinkError
from gateway.logs import get_logger
from tests.mqtt_subscriber import Subscriber
from tests.servers import Mosquitto, mosquitto
from tests.waiting import until


async def _link(port: int, protocol: str) -> MqttLink:
    link = MqttLink(MqttSinkConfig.model_validate({"port": port, "protocol": protocol}),
                    client_id=f"acks-{protocol}", log=get_logger("test"))
    await link.start()
    assert await link.wait_connected(10)
    return link


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_every_message_of_a_write_is_acked_the_short_way(mosquitto_server: Mosquitto, protocol: str,
                                                               decoded: list[bytes]) -> None:
    topic = f"acks/{protocol}"
    with Subscriber(mosquitto_server.port, [f"{topic}/#"]) as sub:
        link = await _link(mosquitto_server.port, protocol)
        try:
            for round_ in range(5):
                await link.publish_all([(f"{topic}/m{i}", f"{round_}.{i}".encode()) for i in range(40)], 1, False)
        finally:
            await link.stop()
        await until(lambda: len(sub.messages) >= 200, timeout=10)
    assert sorted(m.payload.decode() for m in sub.messages) == sorted(f"{r}.{i}" for r in range(5) for i in range(40))
    assert decoded == []  # 200 PUBACKs, none through paho's decoder


async def test_a_publish_the_broker_refuses_fails_its_write_with_the_reason(tmp_path: Path,
                                                                            decoded: list[bytes]) -> None:
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite open/#\n")  # anonymous clients: open/# only
    with mosquitto(tmp_path / "broker", listener_config=f"acl_file {acl}\n") as broker:
        link = await _link(broker.port, "5")
        try:
            await link.publish_all([("open/a", b"1"), ("open/b", b"2")], 1, False)  # no subscriber: 0x10, a success
            with pytest.raises(RetryableSinkError, match="Not authorized"):  # 0x87: the data stays spooled
                await link.publish_all([("open/c", b"3"), ("closed/a", b"4")], 1, False)
            await link.publish_all([("open/d", b"5")], 1, False)  # the link goes on
        finally:
            await link.stop()
    assert decoded == []
