"""The MQTT sink: encodes spooled batches and publishes them, returning only once the broker acked all."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from typing import Protocol

import structlog

from connectors.mqtt.adapter import InboundMessage, MqttLink, endpoint_text
from connectors.mqtt.config import MqttSinkConfig
from connectors.mqtt.payloads import Encoder
from connectors.mqtt.presence import Presence
from gateway.config.site import SiteConfig
from gateway.errors import RetryableSinkError
from gateway.fleet.member import FleetMember
from gateway.fleet.message import GatewayStatus
from gateway.health import UplinkState
from gateway.model import Batch
from gateway.watch import ValueMaps

LOOP_WINDOW = 300.0
LOOP_LOSSES = 3
"""This many lost connections within ``LOOP_WINDOW`` seconds is a reconnect loop (unhealthy)."""


CHANGE_CHECK = 2.0
"""Seconds between looks at whether the status changed (devices ok/bad, config): published at once if so. A
look judges every device (2.2 ms at 10,000 tags in 100 devices), so not every second."""


def site_fields(site: SiteConfig) -> dict[str, str]:
    return {"enterprise": site.enterprise, "site": site.site, "area": site.area, "line": site.line}


def default_client_id(site: SiteConfig, sink: str, gateway_id: str | None) -> str:
    """Unique per sink on one broker, and per gateway of a fleet once ``gateway.id`` is set."""
    return f"edge-gateway-{site.site}-{gateway_id}-{sink}" if gateway_id else f"edge-gateway-{site.site}-{sink}"


class MqttSink:
    def __init__(
        self,
        name: str,
        config: MqttSinkConfig,
        site: SiteConfig,
        *,
        log: structlog.stdlib.BoundLogger,
        value_maps: Mapping[str, ValueMaps] | None = None,
        fleet: FleetMember | None = None,
        explicit_id: str | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.site = site
        self.log = log
        self.fleet = fleet
        self.client_id = config.client_id or default_client_id(site, name, explicit_id)
        gateway_id = fleet.id if fleet is not None else (explicit_id or "")
        self.status_topic = config.status_topic.format(**site_fields(site), gateway=gateway_id)
        self.presence = Presence(fleet, self.status_topic, log) if fleet is not None else None
        self._heartbeat: asyncio.Task[None] | None = None
        self.encoder = Encoder(config.topic_template(), site, layout=config.layout, units=config.units,
                               value_maps=value_maps)
        self.link: MqttLink | None = None
        self.commands: CommandHandlerLike | None = None

    async def open(self) -> None:
        if self.link is not None:
            await self.link.stop()
        if self.fleet is not None and self.fleet.replaced_by is not None:
            # the gateway stood down (on this sink's broker or another's): never connect again
            raise RetryableSinkError(f"stopped: gateway id {self.fleet.replaced_by.id!r} is run by another "
                                     f"instance (host {self.fleet.replaced_by.host})")
        on_message = self.commands.on_message if self.commands is not None else None
        self.link = MqttLink(self.config, client_id=self.client_id, log=self.log, presence=self.presence,
                             on_message=on_message, on_replaced=self._replaced)
        if self.commands is not None:
            self.commands.attach(self.link)
        await self.link.start()
        if self.presence is not None and self._heartbeat is None:
            self._heartbeat = asyncio.create_task(self._beat(self.presence), name=f"sink:{self.name}:status")

    def _replaced(self, by: GatewayStatus) -> None:
        if self.fleet is not None:
            self.fleet.stand_down(by)

    async def _beat(self, presence: Presence) -> None:
        """The status every interval, and within ``CHANGE_CHECK`` when what it says about the gateway changed
        since the link last published it (its birth included)."""
        while True:
            await asyncio.sleep(CHANGE_CHECK)
            link = self.link
            last = link.last_status if link is not None else None
            if link is None or not link.connected or last is None:
                continue  # the link publishes a fresh status when it comes back
            status = presence.status()
            changed = (status.devices_ok, status.devices_bad, status.config_hash) != (
                last.devices_ok, last.devices_bad, last.config_hash)
            if changed or (status.ts_ns - last.ts_ns) / 1e9 >= presence.interval - CHANGE_CHECK / 2:
                link.publish_status()

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
        if link.replaced_by is not None:
            out.append("replaced: another instance runs this gateway id; stopped")
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
        beat, self._heartbeat = self._heartbeat, None
        if beat is not None:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
        if self.commands is not None:
            await self.commands.stop()
        if link is not None:
            await link.stop()


class CommandHandlerLike(Protocol):
    """What the sink needs of the command path (``connectors.mqtt.commands.CommandHandler``)."""

    def on_message(self, msg: InboundMessage) -> None: ...

    def attach(self, link: MqttLink) -> None: ...

    async def stop(self) -> None: ...
