"""The Sparkplug B sink: a Sparkplug edge node whose data is delivered from the spool like the MQTT sink's.

The MQTT connection is ``connectors.mqtt.adapter.MqttLink`` with a fresh session per connection: its will
is the NDEATH with the bdSeq of that CONNECT (``connectors.sparkplug.bdseq``), and whatever was not
acknowledged when a connection ended is not re-sent on the next one. Each connection (and each rebirth
request) starts a Sparkplug session: NBIRTH, then a DBIRTH per known device, then data, all from one
task at a time (``_lock``), so births always come first and ``seq`` runs in publishing order.

``write`` encodes its batches (``connectors.sparkplug.session``) and returns once the broker acknowledged
every message (QoS 1): only then does the delivery loop move the sink's cursor. A write that fails (the
connection dropped, acks did not come) ends the session; the spool offers the same batches again and they
go out after the next births. With a primary host application configured, nothing is born and nothing
delivered until its STATE says it is online; when it goes offline the node publishes its NDEATH,
reconnects and waits, the data staying in the spool.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Sequence
from pathlib import Path

import structlog
from google.protobuf.message import DecodeError

from connectors.mqtt.adapter import InboundMessage, MqttLink
from connectors.sparkplug import codec
from connectors.sparkplug.bdseq import BdSeq
from connectors.sparkplug.commands import DeviceCommands
from connectors.sparkplug.config import SparkplugSinkConfig
from connectors.sparkplug.session import EdgeNode
from gateway.config.site import SiteConfig
from gateway.contracts import DeadLetters
from gateway.errors import RetryableSinkError, SinkError
from gateway.model import Batch, Sample
from gateway.plugins import TagWriter

LOOP_WINDOW = 300.0
LOOP_LOSSES = 3
"""This many lost connections within ``LOOP_WINDOW`` seconds is a reconnect loop (unhealthy)."""
NDEATH_TIMEOUT = 2.0


def _level(text: str) -> str:
    """One topic level: the characters MQTT reserves become ``_`` (site names may hold them)."""
    return text.replace("/", "_").replace("+", "_").replace("#", "_")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class SparkplugSink:
    def __init__(
        self,
        name: str,
        config: SparkplugSinkConfig,
        site: SiteConfig,
        *,
        log: structlog.stdlib.BoundLogger,
        data_dir: str,
        writer: TagWriter | None = None,
        dead_letters: DeadLetters | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.log = log
        fields = {"enterprise": site.enterprise, "site": site.site, "area": site.area, "line": site.line}
        group = _level(config.group_id.format(**fields))
        edge_node = _level(config.edge_node_id.format(**fields))
        template = config.device_id

        def device_id(source: str, device: str) -> str:
            return _level(template.format(**fields, source=source, device=device))

        self.node = EdgeNode(group, edge_node, device_id, report_by_exception=config.report_by_exception, log=log,
                             datatypes={pattern: codec.NAMES[dt] for pattern, dt in config.datatypes.items()})
        self.client_id = config.client_id or _level(f"edge-gateway-{group}-{edge_node}")
        self.bdseq = BdSeq(Path(data_dir) / "sparkplug" / f"{name}.bdseq", log)
        self.state_topic = f"spBv1.0/STATE/{config.primary_host_id}" if config.primary_host_id else None
        self.commands = (DeviceCommands(config.commands, self.node, writer, sink=name)
                         if config.commands.enabled and writer is not None else None)
        self.dead_letters = dead_letters
        self.link: MqttLink | None = None
        self._lock = asyncio.Lock()  # births, data and deaths are published by one task at a time
        self._session = 0  # the connection whose births are out; 0: none
        self._ready = asyncio.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._rebirth = False
        self._host_online = self.state_topic is None
        self._host_ts: float | None = None
        self._collisions: set[str] = set()
        self._chores: set[asyncio.Task[None]] = set()  # tasks started from callbacks, kept until done
        self.sessions = 0
        """Birth sequences published (new connections and rebirths)."""
        self.rebirth_requests = 0

    # --- lifecycle ------------------------------------------------------------------------------------

    async def open(self) -> None:
        await self._stop_link()
        self._invalidate()
        link = self.link = MqttLink(
            self.config.mqtt(self.client_id), client_id=self.client_id, log=self.log,
            on_message=self._on_message, on_connect=self._on_connect, will=self._will, fresh_sessions=True)
        # subscribed on every connect, before the births (NCMD at least: a node must take rebirth requests)
        link.subscribe(self.node.ncmd_topic, 1)
        if self.state_topic is not None:
            link.subscribe(self.state_topic, 1)
        if self.commands is not None:
            link.subscribe(self.commands.topic, 1)
            self.commands.start()
        self._task = asyncio.get_running_loop().create_task(self._births(), name=f"sparkplug:{self.name}")
        await link.start()

    async def close(self) -> None:
        """NDEATH (an intentional disconnect fires no will), then DISCONNECT."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.commands is not None:
            await self.commands.stop()
        link = self.link
        if link is None:
            return
        try:
            await asyncio.wait_for(self._lock.acquire(), NDEATH_TIMEOUT)
            locked = True
        except TimeoutError:
            locked = False
        try:
            await self._death(link)
        finally:
            if locked:
                self._lock.release()
        await self._stop_link()

    async def _stop_link(self) -> None:
        link, self.link = self.link, None
        if link is not None:
            await link.stop()

    async def _death(self, link: MqttLink) -> None:
        """Publish this session's NDEATH (if it has one) and end it."""
        session = self._session
        self._invalidate()
        if session and link.connected:
            with contextlib.suppress(SinkError, TimeoutError):
                await asyncio.wait_for(
                    link.publish_all([self.node.ndeath(self.bdseq.current, now_ms())], 1, False, connection=session),
                    NDEATH_TIMEOUT)

    def _invalidate(self) -> None:
        self._session = 0
        self._ready.clear()
        self.node.reset()

    # --- the session -----------------------------------------------------------------------------------

    def _will(self) -> tuple[str, bytes, int, bool]:
        """The NDEATH of the CONNECT paho is about to send (on its network thread): QoS 1, not retained."""
        bdseq = self.bdseq.next()
        return self.node.ndeath_topic, codec.ndeath(bdseq, now_ms()), 1, False

    def _on_connect(self, connection: int) -> None:
        if self.state_topic is not None:
            self._host_online = False  # until this connection delivers the host's STATE (retained)
        self._wake.set()

    async def _births(self) -> None:
        """Publish the births as soon as a connection (and the primary host) allow, and on rebirth requests."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                async with self._lock:
                    await self._ensure_session()
            except RetryableSinkError as exc:
                self.log.debug("sparkplug births deferred", reason=str(exc))
            except Exception:
                self.log.exception("sparkplug births failed")

    async def _ensure_session(self) -> None:
        """Births on the current connection unless they are out already. Call with ``_lock`` held."""
        link = self.link
        if link is None or not link.connected:
            raise RetryableSinkError("not connected to the broker")
        if not self._host_online:
            raise RetryableSinkError(f"waiting for primary host application {self.config.primary_host_id!r} "
                                     "to be online")
        connection = link.connects
        if self._session == connection and not self._rebirth:
            return
        rebirth, self._rebirth = self._rebirth, False
        self._invalidate()
        bdseq = self.bdseq.current
        messages = self.node.births(bdseq, now_ms())
        try:
            await link.publish_all(messages, self.config.qos, False, connection=connection)
        except BaseException:
            self.node.reset()
            raise
        self._session = connection
        self._ready.set()
        self.sessions += 1
        self.log.info("sparkplug births published", group=self.node.group_id, edge_node=self.node.edge_node_id,
                      bdseq=bdseq, devices=len(messages) - 1, rebirth=rebirth)

    # --- delivery -------------------------------------------------------------------------------------

    async def write(self, batches: Sequence[Batch]) -> None:
        link = self.link
        assert link is not None, "write before open"
        async with self._lock:
            await self._ensure_session()
            encoded = self.node.encode(batches, now_ms())
            for position, samples, reason in encoded.rejected:
                self._reject(position, samples, reason)
            if encoded.messages:
                try:
                    await link.publish_all(encoded.messages, self.config.qos, False, connection=self._session)
                except BaseException:
                    self._invalidate()  # what went out is unknown: new births before the same batches again
                    self._wake.set()
                    raise
            encoded.commit()

    def _reject(self, position: int, samples: list[Sample], reason: str) -> None:
        if reason not in self._collisions:
            self._collisions.add(reason)
            self.log.error("sparkplug device not published; its samples go to the dead letters", error=reason)
        if self.dead_letters is None:
            raise SinkError(reason)
        self.dead_letters.reject(position, samples, reason)

    @property
    def published_mono(self) -> float:
        """When the last write handed its last message to the MQTT client (``gateway.contracts.PublishClock``)."""
        return self.link.published_mono if self.link is not None else 0.0

    async def wait_uplink(self, timeout: float) -> bool:
        """True as soon as a session is born again after the uplink (or the primary host) was away."""
        if self._ready.is_set():  # born, yet the write failed: let the backoff run
            await asyncio.sleep(timeout)
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout)
            return True
        return False

    def health_problems(self) -> list[str]:
        link = self.link
        if link is None:
            return []
        out = []
        if link.login_refused:
            out.append("the broker refuses the login")
        losses = link.losses_within(LOOP_WINDOW)
        if losses >= LOOP_LOSSES:
            out.append(f"reconnect loop: {losses} connections lost in {LOOP_WINDOW / 60:.0f} min")
        if link.connected and not self._host_online:
            out.append("waiting for the primary host application")
        return out

    # --- inbound: NCMD, STATE, DCMD ---------------------------------------------------------------------

    def _on_message(self, msg: InboundMessage) -> None:
        if msg.topic == self.node.ncmd_topic:
            self._on_ncmd(msg.payload)
        elif msg.topic == self.state_topic:
            self._on_state(msg.payload)
        elif self.commands is not None and msg.topic.startswith(self.node.dcmd_prefix):
            self.commands.on_message(msg)

    def _on_ncmd(self, raw: bytes) -> None:
        try:
            payload = codec.decode(raw)
        except DecodeError:
            self.log.warning("sparkplug NCMD is not a Sparkplug B payload; ignored")
            return
        for m in payload.metrics:
            if m.name == codec.NODE_REBIRTH:
                if m.WhichOneof("value") == "boolean_value" and m.boolean_value:
                    self.rebirth_requests += 1
                    self.log.info("sparkplug rebirth requested")
                    self._rebirth = True  # no data goes out before the new births
                    self._wake.set()
            else:
                self.log.info("sparkplug NCMD metric not supported; ignored", metric=m.name or m.alias)

    def _on_state(self, raw: bytes) -> None:
        """The primary host's STATE: ``{"online": bool, "timestamp": ms}``; an older one than the last is stale."""
        try:
            doc = json.loads(raw)
            online, ts = doc["online"], doc["timestamp"]
            if not isinstance(online, bool) or isinstance(ts, bool) or not isinstance(ts, int | float):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            self.log.warning("sparkplug STATE message not understood; ignored", topic=self.state_topic)
            return
        if self._host_ts is not None and ts < self._host_ts:
            return  # a death certificate of an earlier host session, delivered late
        self._host_ts = ts
        was, self._host_online = self._host_online, online
        if online:
            if not was:
                self.log.info("sparkplug primary host online", host=self.config.primary_host_id)
            self._wake.set()
        elif was or self._session:
            self.log.warning("sparkplug primary host offline; NDEATH, reconnecting, holding data in the spool",
                             host=self.config.primary_host_id)
            if self._session:
                task = asyncio.get_running_loop().create_task(self._host_offline(),
                                                              name=f"sparkplug-offline:{self.name}")
                self._chores.add(task)
                task.add_done_callback(self._chores.discard)

    async def _host_offline(self) -> None:
        """NDEATH and disconnect (the connection starts over, and births wait for the host)."""
        async with self._lock:
            link = self.link
            if link is None or not self._session:
                return
            await self._death(link)
            link.kill()  # no DISCONNECT: paho reconnects by itself; the will repeats this NDEATH's bdSeq
