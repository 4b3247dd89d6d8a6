"""The MQTT sink: encodes spooled batches and publishes them, returning only once the broker acked all."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Protocol

import structlog

from connectors.mqtt.adapter import InboundMessage, MqttLink, endpoint_text
from connectors.mqtt.config import MqttSinkConfig
from connectors.mqtt.payloads import Encoder
from gateway.config.site import SiteConfig
from gateway.health import UplinkState
from gateway.model import Batch
from gateway.watch import ValueMaps

LOOP_WINDOW = 300.0
LOOP_LOSSES = 3
"""This many lost connections within ``LOOP_WINDOW`` seconds is a reconnect loop (unhealthy)."""


def site_fields(site: SiteConfig) -> dict[str, str]:
    return {"enterprise": site.enterprise, "site": site.site, "area": site.area, "line": site.line}


class MqttSink:
    def __init__(
        self,
        name: str,
        config: MqttSinkConfig,
        site: SiteConfig,
        *,
        log: structlog.stdlib.BoundLogger,
        value_maps: Mapping[str, ValueMaps] | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.site = site
        self.log = log
        self.client_id = config.client_id or f"edge-gateway-{site.site}-{name}"
        self.status_topic = config.status_topic.format(**site_fields(site), source="", device="", tag="")
        self.encoder = Encoder(config.topic_template(), site, layout=config.layout, units=config.units,
                               value_maps=value_maps)
        self.link: MqttLink | None = None
        self.commands: CommandHandlerLike | None = None

    async def open(self) -> None:
        if self.link is not None:
            await self.link.stop()
        on_message = self.commands.on_message if self.commands is not None else None
        self.link = MqttLink(self.config, client_id=self.client_id, status_topic=self.status_topic,
                             log=self.log, on_message=on_message)
        if self.commands is not None:
            self.commands.attach(self.link)
        await self.link.start()

    async def write(self, batches: Sequence[Batch]) -> None:
        link = self.link
        assert link is not None, "write before open"
        await link.publish_all(self.encoder.encode(batches), self.config.qos, self.config.retain)

    @property
    def published_mono(self) -> float:
        """When the last write handed its last message to the MQTT client (``gateway.contracts.PublishClock``)."""
        return self.link.published_mono if self.link is not None else 0.0

    async def wait_uplink(self, timeout: float) -> bool:
        """True as soon as the broker accepts us again after the link was down (see ``UplinkProbe``)."""
        link = self.link
        if link is None or link.connected:  # connected but the write failed: let the backoff run
            await asyncio.sleep(timeout)
            return False
        return await link.wait_connected(timeout)

    def uplink(self) -> UplinkState:
        """The broker the sink is on, or trying (``gateway.contracts.UplinkReport``)."""
        link = self.link
        if link is None:
            host, port = self.config.endpoints()[0]
            return UplinkState(endpoint_text(host, port), False, len(self.config.endpoints()), 0)
        return UplinkState(link.endpoint, link.connected, len(self.config.endpoints()), link.failovers)

    def health_problems(self) -> list[str]:
        link = self.link
        if link is None:
            return []
        out = []
        if link.login_refused:
            out.append("the broker refuses the login")
        if link.protocol_refused:
            out.append('the broker does not speak MQTT 5 (set protocol: "3.1.1")')
        losses = link.losses_within(LOOP_WINDOW)
        if losses >= LOOP_LOSSES:
            out.append(f"reconnect loop: {losses} connections lost in {LOOP_WINDOW / 60:.0f} min")
        return out

    async def close(self) -> None:
        link, self.link = self.link, None
        if self.commands is not None:
            await self.commands.stop()
        if link is not None:
            await link.stop()


class CommandHandlerLike(Protocol):
    """What the sink needs of the command path (``connectors.mqtt.commands.CommandHandler``)."""

    def on_message(self, msg: InboundMessage) -> None: ...

    def attach(self, link: MqttLink) -> None: ...

    async def stop(self) -> None: ...
