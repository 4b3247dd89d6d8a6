"""DCMD: Sparkplug writes to device tags, through the MQTT command path's checks (``connectors.mqtt.commands``).

A DCMD on ``spBv1.0/<group>/DCMD/<node>/<device>`` names metrics by alias (as the specification wants) or
by name, each with a value of the metric's datatype. Each is written like a JSON command: at a bounded rate
(token bucket), by the runtime's writer (only ``writable: true`` tags; one strict coercion rule per tag
type, limits, scale/offset inverted), audited as one ``command executed`` / ``command refused`` event on
logger ``gateway.audit`` with ``via: sparkplug``. Before that, a DCMD must be fresh (its payload timestamp at
most ``max_age`` old: one queued during an outage must not fire minutes later; one without a timestamp is
refused), and one the broker delivers again is not executed twice. Sparkplug has no response message:
the result shows in the device's next DDATA (the tag's new value as the device reports it), and a refusal
in the audit log.
"""

from __future__ import annotations

import time
from typing import Any

from google.protobuf.message import DecodeError

from connectors.mqtt.adapter import InboundMessage
from connectors.mqtt.commands import CommandQueue, RateLimit, ReplayGuard, execute
from connectors.sparkplug import codec
from connectors.sparkplug.config import DeviceCommandConfig
from connectors.sparkplug.session import Device, EdgeNode, MetricDef
from gateway.logs import get_logger
from gateway.plugins import TagWriter
from gateway.writes import shown

MAX_PAYLOAD = 64 * 1024


class DeviceCommands:
    def __init__(self, config: DeviceCommandConfig, node: EdgeNode, writer: TagWriter, *, sink: str) -> None:
        self.config = config
        self.node = node
        self.writer = writer
        self.audit = get_logger("gateway.audit", sink=sink, via="sparkplug")
        self._rate = RateLimit(config.rate, config.burst)
        self._replays = ReplayGuard(2 * config.max_age)
        self._commands = CommandQueue(self._handle, lambda m: self._refuse(m.topic, "too many commands queued"),
                                      self.audit, "sparkplug-dcmd")
        self.executed = 0
        self.refused = 0
        self.duplicates = 0

    @property
    def topic(self) -> str:
        return self.node.dcmd_prefix + "+"

    def start(self) -> None:
        self._commands.start()

    async def stop(self) -> None:
        await self._commands.stop()

    def on_message(self, msg: InboundMessage) -> None:
        """On the event loop, for each DCMD; never blocks."""
        self._commands.put(msg)

    def _refuse(self, target: str, error: str, value: Any = None) -> None:
        self.refused += 1
        self.audit.warning("command refused", target=target, value=shown(value), error=error)

    async def _handle(self, msg: InboundMessage) -> None:
        device_id = msg.topic[len(self.node.dcmd_prefix):]
        dev = self.node.by_id.get(device_id)
        where = f"sparkplug device {device_id}"
        if dev is None:
            self._refuse(where, "no such Sparkplug device on this edge node")
            return
        if len(msg.payload) > MAX_PAYLOAD:
            self._refuse(where, f"payload of {len(msg.payload)} bytes; at most {MAX_PAYLOAD} are accepted")
            return
        try:
            payload = codec.decode(msg.payload)
        except DecodeError:
            self._refuse(where, "payload is not a Sparkplug B payload")
            return
        problem = self._stale(payload)
        if problem is not None:
            self._refuse(where, problem)
            return
        key = (msg.topic, msg.payload)
        if self._replays.get(key) is not None:
            self.duplicates += 1
            self.audit.warning("command duplicate; not executed again", target=where)
            return
        results: dict[str, Any] = {}
        for m in payload.metrics:
            d = self._metric(dev, m)
            if d is None:
                self._refuse(where, f"no metric {m.name or m.alias!r} in the device's birth")
                continue
            source, device = dev.key
            target = f"{source}.{device}.{d.name}"
            try:
                value = codec.value_of(m, m.datatype if m.HasField("datatype") else d.datatype)
            except (codec.DoesNotFit, ValueError) as exc:
                self._refuse(target, f"value not readable: {exc}")
                continue
            error = await execute(self.writer, source, device, d.name, value, self._rate, self.audit)
            if error is None:
                self.executed += 1
                self.audit.info("command executed", target=target, value=shown(value))
            else:
                self._refuse(target, error, value)
            results[d.name] = error
        self._replays.remember(key, results)

    def _metric(self, dev: Device, m: codec.Metric) -> MetricDef | None:
        if m.HasField("alias"):
            found = self.node.by_alias.get(m.alias)
            return found[1] if found is not None and found[0] is dev else None
        return dev.metrics.get(m.name) if m.name else None

    def _stale(self, payload: codec.Payload) -> str | None:
        """Why a command is too old (or too new) to run, None when it is fresh."""
        if not payload.HasField("timestamp"):
            return "DCMD has no timestamp; its age cannot be checked"
        age = time.time() - payload.timestamp / 1000
        if age > self.config.max_age:
            return f"command expired: issued {age:.1f}s ago, max_age {self.config.max_age:g}s"
        if age < -self.config.max_age:
            return "command timestamp is in the future; check the sender's clock"
        return None

