"""Entry-point descriptor of the ``mqtt`` sink; paho is imported only when a sink is built."""

from __future__ import annotations

from typing import TYPE_CHECKING

from connectors.mqtt.config import MqttSinkConfig
from gateway.plugins import BuildContext, SinkPlugin

if TYPE_CHECKING:
    from gateway.contracts import Sink
    from gateway.fleet.message import StatusQuery


def _build(name: str, config: MqttSinkConfig, ctx: BuildContext) -> Sink:
    from connectors.mqtt.sink import MqttSink

    sink = MqttSink(name, config, ctx.site, log=ctx.log.bind(sink=name), value_maps=ctx.value_maps,
                    fleet=ctx.fleet, explicit_id=ctx.gateway_id)
    if config.commands.enabled:
        from connectors.mqtt.commands import CommandHandler

        sink.commands = CommandHandler(config.commands, ctx.site, ctx.writer, sink=name,
                                       forbidden=[config.topic_template(), config.status_topic])
    return sink


def _read_status(query: StatusQuery) -> list[tuple[str, bytes]]:
    from connectors.mqtt.adapter import read_retained

    return read_retained(query)


PLUGIN = SinkPlugin(
    kind="mqtt",
    requires=("paho", "orjson"),
    extra="mqtt",
    config_model=MqttSinkConfig,
    factory=_build,
    read_status=_read_status,
    description="MQTT 3.1.1/5 publisher (per-device or per-tag JSON, QoS 0-2, TLS), optional command topic",
)
