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

Before anything runs, a payload must be at most ``MAX_PAYLOAD`` bytes and nest at most ``MAX_DEPTH``
levels, and its response topic must be acceptable: a ``response_topic`` field only under
``<response_prefix>/``; an MQTT 5 response topic only when it is a valid topic name (not empty, no
wildcard, not ``$``-reserved) that is not one of this sink's telemetry, status or command topics. A
command with an unacceptable response topic is not executed and is answered on the default topic.

A replay guard executes a command at most once: the same correlation id (or, without one, the same
topic and payload) within twice ``max_age`` is answered with the first answer (``"duplicate": true``),
not executed again, so a broker redelivering a command after a reconnect cannot repeat a device write.

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
import re
import time
from collections.abc import Awaitable, Callable, Sequence
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
MAX_PAYLOAD = 64 * 1024  # bytes of one request
MAX_DEPTH = 4  # JSON nesting of one request: an object holding a matrix is 3
ECHO_MAX = 1024  # characters of a value echoed in a response; a longer one is quoted short
SEEN_MAX = 10_000  # commands the replay guard remembers at most


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


def topic_problem(topic: str) -> str | None:
    """Why ``topic`` cannot be published on (None: it can). An empty one makes a broker drop the client."""
    if not topic:
        return "it is empty"
    if "+" in topic or "#" in topic:
        return "it holds a wildcard"
    if "\x00" in topic:
        return "it holds a NUL character"
    if topic.startswith("$"):
        return "$-topics are the broker's"
    if len(topic.encode("utf-8", errors="replace")) > 65535:
        return "it is longer than 65535 bytes"
    return None


def _short(correlation: Any) -> Any:
    """A correlation id as given, or quoted short when it is large (it is echoed and logged)."""
    if correlation is None or len(json.dumps(correlation, default=str)) <= 256:
        return correlation
    return shown(correlation)


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of a JSON value, counted no further than ``limit + 1``."""
    if limit < 0 or not isinstance(value, list | dict):
        return 0
    items = value.values() if isinstance(value, dict) else value
    return 1 + max((_depth(v, limit - 1) for v in items), default=0)


def _pattern(template: str, fields: dict[str, str]) -> re.Pattern[str]:
    """A topic template (site fields filled, ``{source}``/``{device}``/``{tag}`` any one level) as a regex."""
    marker = "\x00"
    text = template.format(**fields, source=marker, device=marker, tag=marker, gateway=marker)
    return re.compile("(?:" + re.escape(text).replace(re.escape(marker), "[^/]*") + ")(?:/.*)?")


class RateLimit:
    """Token bucket: at most ``rate`` commands a second once a burst of ``burst`` is spent."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._refill = time.monotonic()

    def take(self) -> None:
        """Spend one token, or raise ``Refused``."""
        now = time.monotonic()
        self._tokens = min(float(self.burst), self._tokens + (now - self._refill) * self.rate)
        self._refill = now
        if self._tokens < 1.0:
            raise Refused(f"rate limit: at most {self.rate:g} commands/s")
        self._tokens -= 1.0


class ReplayGuard:
    """The answers of executed commands by key for ``ttl`` seconds, so one redelivered is not executed again."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._seen: dict[Any, tuple[float, dict[str, Any]]] = {}

    def get(self, key: Any) -> dict[str, Any] | None:
        seen = self._seen.get(key)
        return seen[1] if seen is not None and seen[0] > time.monotonic() else None

    def remember(self, key: Any, response: dict[str, Any]) -> None:
        now = time.monotonic()
        if len(self._seen) >= SEEN_MAX:
            self._seen = {k: v for k, v in self._seen.items() if v[0] > now}
            while len(self._seen) >= SEEN_MAX:  # all still fresh: forget the oldest
                del self._seen[next(iter(self._seen))]
        self._seen[key] = (now + self.ttl, response)


async def execute(writer: TagWriter, source: str, device: str, tag: str, value: Value, rate: RateLimit,
                  audit: Any) -> str | None:
    """The write of one command that passed its own checks: the rate limit, then the runtime's writer (the
    tag's allow-list, the one strict coercion rule of ``gateway.writes``, its limits), within
    ``WRITE_TIMEOUT``. None when written, else why not (for the requester; the caller audits it)."""
    try:
        rate.take()
        await asyncio.wait_for(writer(source, device, tag, value), WRITE_TIMEOUT)
    except (Refused, WriteError) as exc:
        return str(exc)
    except TimeoutError:
        return f"the device did not answer within {WRITE_TIMEOUT:g}s"
    except Exception as exc:  # a fault of ours still gets an answer: the sender must not wait forever
        audit.exception("command failed", target=f"{source}.{device}.{tag}")
        return f"write failed: {type(exc).__name__}: {shown(str(exc))}"
    return None


class CommandQueue:
    """Inbound commands handled one at a time, in arrival order, off the network callback: a bounded queue
    and one worker task. A full queue refuses (``on_full``); a command whose handling raises is audited and
    the path carries on. Shared by the JSON command topic and Sparkplug DCMD."""

    def __init__(self, handle: Callable[[InboundMessage], Awaitable[None]],
                 on_full: Callable[[InboundMessage], None], audit: Any, name: str) -> None:
        self._handle = handle
        self._on_full = on_full
        self._audit = audit
        self._name = name
        self._queue: asyncio.Queue[InboundMessage] = asyncio.Queue(QUEUE_MAX)
        self._worker: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    def put(self, msg: InboundMessage) -> None:
        """On the event loop, for each command; never blocks."""
        try:
            self._queue.put_nowait(msg)
        except asyncio.QueueFull:
            self._on_full(msg)

    async def _run(self) -> None:
        while True:
            msg = await self._queue.get()
            try:
                await self._handle(msg)
            except Exception as exc:  # one malformed command must not end the command path
                self._audit.exception("command handling failed", topic=msg.topic, error=str(exc))


class CommandHandler:
    def __init__(self, config: CommandConfig, site: SiteConfig, writer: TagWriter, *, sink: str,
                 forbidden: Sequence[str] = ()) -> None:
        self.config = config
        fields = {"enterprise": site.enterprise, "site": site.site, "area": site.area, "line": site.line}
        self.prefix = config.topic_prefix.format(**fields).rstrip("/")
        self.response_prefix = config.response_prefix.format(**fields).rstrip("/")
        # topics a response must never land on: this sink's telemetry and status, and the commands themselves
        self._forbidden = [_pattern(t, fields) for t in forbidden] + [re.compile(re.escape(self.prefix) + "(?:/.*)?")]
        self._replays = ReplayGuard(2 * config.max_age)
        self.duplicates = 0
        self.writer = writer
        self.audit = get_logger("gateway.audit", sink=sink)
        self.link: MqttLink | None = None
        self._commands = CommandQueue(self._handle, lambda m: self._answer_refusal(m, "too many commands queued"),
                                      self.audit, "mqtt-commands")
        self._rate = RateLimit(config.rate, config.burst)
        self._fmt = TimestampFormatter()
        self.executed = 0
        self.refused = 0

    def attach(self, link: MqttLink) -> None:
        self.link = link
        link.subscribe(f"{self.prefix}/+/+/+/set", self.config.qos)
        self._commands.start()

    async def stop(self) -> None:
        await self._commands.stop()

    def on_message(self, msg: InboundMessage) -> None:
        """Called on the event loop for each request; never blocks."""
        self._commands.put(msg)

    async def _handle(self, msg: InboundMessage) -> None:
        try:
            cmd = self._parse(msg)
        except _ParsedRefusal as exc:
            self._respond(exc.command, ok=False, error=str(exc))
            return
        except Refused as exc:
            self._answer_refusal(msg, str(exc))
            return
        key = self._replay_key(cmd)
        seen = self._replays.get(key)
        if seen is not None:
            self.duplicates += 1
            self.audit.warning("command duplicate; not executed again", target=f"{cmd.source}.{cmd.device}.{cmd.tag}",
                               value=shown(cmd.value), correlation=_short(cmd.correlation))
            self._publish(cmd.response_topic, {**seen, "duplicate": True}, cmd.request)
            return
        error = await execute(self.writer, cmd.source, cmd.device, cmd.tag, cmd.value, self._rate, self.audit)
        if error is not None:
            self._respond(cmd, ok=False, error=error)
            return
        self._replays.remember(key, self._respond(cmd, ok=True))

    def _replay_key(self, cmd: Command) -> tuple[str, str]:
        """The same command id for the same tag, or (without an id) the same topic and payload."""
        request = cmd.request
        if cmd.correlation is not None:
            return request.topic, "id:" + json.dumps(cmd.correlation, sort_keys=True, default=str)
        if request.correlation_data is not None:
            return request.topic, "v5:" + request.correlation_data.hex()
        return request.topic, "body:" + request.payload.decode("utf-8", errors="replace")

    def _reply_topic(self, requested: str | None, *, v5: bool) -> str | None:
        """``requested`` if a response may go there; raises Refused with the reason otherwise."""
        if requested is None:
            return None
        problem = topic_problem(requested)
        if problem is None and not requested.startswith(self.response_prefix + "/"):
            if not v5:
                problem = f"a response_topic field must be under {self.response_prefix}/"
            elif any(p.fullmatch(requested) for p in self._forbidden):
                problem = "it is one of this gateway's telemetry, status or command topics"
        if problem is not None:
            raise Refused(f"response topic {shown(requested)} refused: {problem}")
        return requested

    def _parse(self, msg: InboundMessage) -> Command:
        parts = msg.topic[len(self.prefix) + 1:].split("/")
        if len(parts) != 4 or parts[3] != "set":
            raise Refused("topic must be <prefix>/<source>/<device>/<tag>/set")
        source, device, tag = parts[:3]
        default_reply = f"{self.response_prefix}/{source}/{device}/{tag}"
        try:
            v5_reply = self._reply_topic(msg.response_topic, v5=True)
            topic_refused = None
        except Refused as exc:
            v5_reply, topic_refused = None, str(exc)
        placeholder = Command(source, device, tag, None, None, v5_reply or default_reply, msg)
        if len(msg.payload) > MAX_PAYLOAD:
            raise _refuse(placeholder, f"payload of {len(msg.payload)} bytes; at most {MAX_PAYLOAD} are accepted")
        try:
            body = json.loads(msg.payload)
        except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
            raise _refuse(placeholder, "payload is not JSON (or is nested too deeply)") from None
        if _depth(body, MAX_DEPTH) > MAX_DEPTH:
            raise _refuse(placeholder, f"payload nests more than {MAX_DEPTH} levels")
        correlation = None
        ts: float | None = None
        try:
            if topic_refused is not None:
                raise Refused(topic_refused)
            reply_to = v5_reply
            if isinstance(body, dict):
                if "value" not in body:
                    raise Refused("payload object needs a `value`")
                value = body["value"]
                correlation = body.get("correlation")
                if reply_to is None and body.get("response_topic") is not None:
                    field = body["response_topic"]
                    reply_to = self._reply_topic(field if isinstance(field, str) else "", v5=False)
                if body.get("ts") is not None:
                    ts = parse_ts(body["ts"])
            else:
                value = body
        except Refused as exc:  # answered on the default topic; nothing runs
            raise _refuse(Command(source, device, tag, None, _short(correlation), default_reply, msg), str(exc)) \
                from None
        cmd = Command(source, device, tag, value, _short(correlation), reply_to or default_reply, msg)
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

    def _answer_refusal(self, msg: InboundMessage, error: str) -> None:
        try:
            reply_to = self._reply_topic(msg.response_topic, v5=True) or f"{self.response_prefix}/invalid"
        except Refused:
            reply_to = f"{self.response_prefix}/invalid"
        self.refused += 1
        self.audit.warning("command refused", topic=msg.topic, error=error)
        self._publish(reply_to, {"ok": False, "error": error}, msg)

    def _respond(self, cmd: Command, *, ok: bool, error: str | None = None) -> dict[str, Any]:
        target = f"{cmd.source}.{cmd.device}.{cmd.tag}"
        if ok:
            self.executed += 1
            self.audit.info("command executed", target=target, value=shown(cmd.value), correlation=cmd.correlation)
            echo = json.dumps(cmd.value)
            body: dict[str, Any] = {"ok": True, "value": cmd.value if len(echo) <= ECHO_MAX else shown(cmd.value)}
        else:
            self.refused += 1
            self.audit.warning("command refused", target=target, value=shown(cmd.value), error=error,
                               correlation=cmd.correlation)
            body = {"ok": False, "error": error}
        if cmd.correlation is not None:
            body["correlation"] = cmd.correlation
        self._publish(cmd.response_topic, body, cmd.request)
        return body

    def _publish(self, topic: str, body: dict[str, Any], request: InboundMessage) -> None:
        body["ts"] = self._fmt(time.time_ns())
        if self.link is not None:
            self.link.publish_nowait(topic, json.dumps(body).encode(), self.config.qos, response_to=request)

