"""The MQTT command path: ``<prefix>/<source>/<device>/<tag>/set`` -> the source's ``write``.

Request payload: JSON, either a bare value (``42``, ``true``, ``"AUTO"``) or an object::

    {"value": 42.5, "ts": "2026-11-23T21:07:51.123Z", "correlation": "abc-1", "response_topic": "my/replies"}

``ts`` (ISO 8601 or epoch milliseconds) is when the command was issued. A command must be fresh: with
MQTT v5 the sender may instead set a message expiry, and the broker then discards it once expired;
a command with neither (a bare value over v3.1.1) is refused, because nothing tells its age and a
command queued during an outage must not fire minutes later. Fresh means at most ``max_age`` old by
``ts``.

Checks, in order, each refusal answered with its reason: freshness, the rate limit (token bucket),
then the runtime's writer, which refuses unknown or non-writable tags, values that are not exactly of
the tag's type (``gateway.writes``: a coil takes only ``true``/``false``) and values outside the tag's
min/max before anything reaches the device. Commands run one at a time, in arrival order.

Response on the request's v5 response topic (with its correlation data), else its ``response_topic``
field, else ``<response_prefix>/<source>/<device>/<tag>``::

    {"ok": true, "value": 42.5, "correlation": "abc-1", "ts": "..."}
    {"ok": false, "error": "42.5 is above the tag's maximum 40", "correlation": "abc-1", "ts": "..."}

Every command, executed or refused, is logged as an audit event (logger ``gateway.audit``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from connectors.mqtt.adapter import InboundMessage, MqttLink
from connectors.mqtt.config import CommandConfig
from connectors.mqtt.payloads import TimestampFormatter
from gateway.config.site import SiteConfig
from gateway.errors import WriteError
from gateway.logs import get_logger
from gateway.model import Value
from gateway.plugins import TagWriter
from gateway.writes import shown

WRITE_TIMEOUT = 10.0
QUEUE_MAX = 100


class Refused(Exception):
    """A command not executed; the message goes back to the requester."""


class _ParsedRefusal(Refused):
    def __init__(self, command: Command, message: str) -> None:
        super().__init__(message)
        self.command = command


def _refuse(cmd: Command, message: str) -> Refused:
    return _ParsedRefusal(cmd, message)


@dataclass(frozen=True, slots=True)
class Command:
    source: str
    device: str
    tag: str
    value: Value
    correlation: Any
    response_topic: str
    request: InboundMessage


def parse_ts(raw: Any) -> float:
    """``ts`` of a request -> seconds since the epoch."""
    if isinstance(raw, bool):
        raise Refused("ts must be ISO 8601 or epoch milliseconds")
    if isinstance(raw, int | float):
        return float(raw) / 1000.0
    if isinstance(raw, str):
        text = raw.strip().replace("Z", "+00:00")
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise Refused(f"ts {raw!r} is not ISO 8601") from None
        if dt.tzinfo is None:
            raise Refused("ts needs a time zone (e.g. a trailing Z)")
        return dt.timestamp()
    raise Refused("ts must be ISO 8601 or epoch milliseconds")


class CommandHandler:
    def __init__(self, config: CommandConfig, site: SiteConfig, writer: TagWriter, *, sink: str) -> None:
        self.config = config
        fields = {"enterprise": site.enterprise, "site": site.site, "area": site.area, "line": site.line}
        self.prefix = config.topic_prefix.format(**fields).rstrip("/")
        self.response_prefix = config.response_prefix.format(**fields).rstrip("/")
        self.writer = writer
        self.audit = get_logger("gateway.audit", sink=sink)
        self.link: MqttLink | None = None
        self._queue: asyncio.Queue[InboundMessage] = asyncio.Queue(QUEUE_MAX)
        self._worker: asyncio.Task[None] | None = None
        self._tokens = float(config.burst)
        self._refill = time.monotonic()
        self._fmt = TimestampFormatter()
        self.executed = 0
        self.refused = 0

    def attach(self, link: MqttLink) -> None:
        self.link = link
        link.subscribe(f"{self.prefix}/+/+/+/set", self.config.qos)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="mqtt-commands")

    async def stop(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    def on_message(self, msg: InboundMessage) -> None:
        """Called on the event loop for each request; never blocks."""
        try:
            self._queue.put_nowait(msg)
        except asyncio.QueueFull:
            self._answer_refusal(msg, "too many commands queued")

    async def _run(self) -> None:
        while True:
            msg = await self._queue.get()
            try:
                await self._handle(msg)
            except Exception as exc:  # one malformed command must not end the command path
                self.audit.exception("command handling failed", topic=msg.topic, error=str(exc))

    async def _handle(self, msg: InboundMessage) -> None:
        try:
            cmd = self._parse(msg)
        except _ParsedRefusal as exc:
            self._respond(exc.command, ok=False, error=str(exc))
            return
        except Refused as exc:
            self._answer_refusal(msg, str(exc))
            return
        try:
            self._check_rate()
            await asyncio.wait_for(self.writer(cmd.source, cmd.device, cmd.tag, cmd.value), WRITE_TIMEOUT)
        except (Refused, WriteError) as exc:
            self._respond(cmd, ok=False, error=str(exc))
            return
        except TimeoutError:
            self._respond(cmd, ok=False, error=f"the device did not answer within {WRITE_TIMEOUT:g}s")
            return
        except Exception as exc:  # a fault of ours still gets an answer: the sender must not wait forever
            self.audit.exception("command failed", target=f"{cmd.source}.{cmd.device}.{cmd.tag}")
            self._respond(cmd, ok=False, error=f"write failed: {type(exc).__name__}: {shown(str(exc))}")
            return
        self._respond(cmd, ok=True)

    def _parse(self, msg: InboundMessage) -> Command:
        parts = msg.topic[len(self.prefix) + 1:].split("/")
        if len(parts) != 4 or parts[3] != "set":
            raise Refused("topic must be <prefix>/<source>/<device>/<tag>/set")
        source, device, tag = parts[:3]
        try:
            body = json.loads(msg.payload)
        except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
            raise Refused("payload is not JSON (or is nested too deeply)") from None
        correlation = None
        reply_to = msg.response_topic
        ts: float | None = None
        if isinstance(body, dict):
            if "value" not in body:
                raise Refused("payload object needs a `value`")
            value = body["value"]
            correlation = body.get("correlation")
            if reply_to is None and isinstance(body.get("response_topic"), str):
                reply_to = body["response_topic"]
            if body.get("ts") is not None:
                ts = parse_ts(body["ts"])
        else:
            value = body
        if reply_to is None:
            reply_to = f"{self.response_prefix}/{source}/{device}/{tag}"
        cmd = Command(source, device, tag, value, correlation, reply_to, msg)
        if isinstance(value, dict):
            raise _refuse(cmd, "value must be true/false, a number, text, or an array of them")
        if ts is not None:
            age = time.time() - ts
            if age > self.config.max_age:
                raise _refuse(cmd, f"command expired: issued {age:.1f}s ago, max_age {self.config.max_age:g}s")
            if age < -self.config.max_age:
                raise _refuse(cmd, "command ts is in the future; check the sender's clock")
        elif msg.expiry is None:
            raise _refuse(cmd, "command has no ts and no message expiry; its age cannot be checked")
        return cmd

    def _check_rate(self) -> None:
        now = time.monotonic()
        self._tokens = min(float(self.config.burst), self._tokens + (now - self._refill) * self.config.rate)
        self._refill = now
        if self._tokens < 1.0:
            raise Refused(f"rate limit: at most {self.config.rate:g} commands/s")
        self._tokens -= 1.0

    def _answer_refusal(self, msg: InboundMessage, error: str) -> None:
        reply_to = msg.response_topic or f"{self.response_prefix}/invalid"
        self.refused += 1
        self.audit.warning("command refused", topic=msg.topic, error=error)
        self._publish(reply_to, {"ok": False, "error": error}, msg)

    def _respond(self, cmd: Command, *, ok: bool, error: str | None = None) -> None:
        target = f"{cmd.source}.{cmd.device}.{cmd.tag}"
        if ok:
            self.executed += 1
            self.audit.info("command executed", target=target, value=shown(cmd.value), correlation=cmd.correlation)
            body: dict[str, Any] = {"ok": True, "value": cmd.value}
        else:
            self.refused += 1
            self.audit.warning("command refused", target=target, value=shown(cmd.value), error=error,
                               correlation=cmd.correlation)
            body = {"ok": False, "error": error}
        if cmd.correlation is not None:
            body["correlation"] = cmd.correlation
        self._publish(cmd.response_topic, body, cmd.request)

    def _publish(self, topic: str, body: dict[str, Any], request: InboundMessage) -> None:
        body["ts"] = self._fmt(time.time_ns())
        if self.link is not None:
            self.link.publish_nowait(topic, json.dumps(body).encode(), self.config.qos, response_to=request)

