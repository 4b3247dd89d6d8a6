"""The one module that imports paho-mqtt: a client on paho's own network thread, bridged to asyncio.

Threading: ``loop_start()`` runs paho's network loop (and so every callback) in its daemon thread.
Callbacks never touch asyncio objects directly: acks are appended to a list under a lock and one
``loop.call_soon_threadsafe`` per burst hands them to the event loop, so a batch of 10,000 PUBACKs
costs one wake-up, not 10,000. ``publish`` is thread-safe in paho and is called from the event loop.

Delivery tracking: every publish's ``mid`` maps to the write it belongs to; a write is done when the
broker acked each of its messages (PUBACK for QoS 1, PUBCOMP for QoS 2, the socket write for QoS 0).
paho's ``wait_for_publish`` is not used: it raises for messages queued while offline even after they
were delivered. Messages of QoS 1/2 published while the link is down stay in paho's in-memory queue
and go out on reconnect, so a write in progress keeps waiting for them instead of failing.

With ``fresh_sessions`` (Sparkplug B) every connection is a session of its own instead: what was not
acknowledged when a connection ended is dropped from paho's queue before it could be re-sent on the next
one, the writes it belonged to fail (their data stays spooled), and ``publish_all(..., connection=n)``
publishes only while connection ``n`` is the current one. The session's own first messages (its births)
then always precede any data on the new connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from connectors.mqtt.config import MqttSinkConfig
from gateway.errors import PermanentSinkError, RetryableSinkError
from gateway.threads import WorkerThread

# v5 PUBACK reason codes that mean "later" rather than "never": not authorized (a broker ACL being
# fixed must not cost data) and quota exceeded.
_RETRYABLE_REASONS = frozenset({0x87, 0x97})
_AUTH_FAILURES = frozenset({"Not authorized", "Bad user name or password"})
STABLE_AFTER = 30.0
"""Seconds a connection must stay up before the reconnect backoff starts again from ``reconnect_min``."""
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A message from a subscription, with the v5 request/response properties when present."""

    topic: str
    payload: bytes
    response_topic: str | None
    correlation_data: bytes | None
    expiry: int | None
    """v5 message expiry interval left when the broker forwarded it (seconds), if the sender set one."""


class _Write:
    __slots__ = ("done", "error", "lost", "mids", "remaining")

    def __init__(self) -> None:
        self.remaining = 0
        self.mids: list[int] = []
        self.done = asyncio.Event()
        self.error: tuple[int, str] | None = None
        self.lost = False  # fresh_sessions: its connection ended before every ack was in


class MqttLink:
    """One MQTT connection: connect forever with backoff, birth/last will, acked publishing, subscribe."""

    def __init__(
        self,
        config: MqttSinkConfig,
        *,
        client_id: str,
        status_topic: str | None,
        log: structlog.stdlib.BoundLogger,
        on_message: Callable[[InboundMessage], None] | None = None,
        on_connect: Callable[[int], None] | None = None,
        will: Callable[[], tuple[str, bytes, int, bool]] | None = None,
        fresh_sessions: bool = False,
    ) -> None:
        """``status_topic`` None: no online/offline status messages. ``on_connect(n)`` runs on the event loop
        after the broker accepted connection number ``n``. ``will()`` gives the last will (topic, payload,
        qos, retain) of each CONNECT packet, called just before the packet is sent (a Sparkplug NDEATH
        carries a number that changes with every CONNECT). ``fresh_sessions``: see the module's doc."""
        self.config = config
        self.status_topic = status_topic
        self.log = log
        self._on_message_cb = on_message
        self._on_connect_cb = on_connect
        self._will = will
        self._fresh = fresh_sessions
        self._gate = threading.Lock()  # fresh_sessions: a publish and a new connection never interleave
        self._loop: asyncio.AbstractEventLoop | None = None
        self._v5 = config.protocol == "5"
        if self._v5:
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        else:
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
                                 clean_session=config.clean_start)
        # An exception escaping a callback would kill the network thread while is_connected() stays True.
        client.suppress_exceptions = True
        client.max_inflight_messages_set(config.max_inflight)
        client.max_queued_messages_set(0)  # our own window (max_pending) bounds it
        client.reconnect_delay_set(min_delay=max(1, round(config.reconnect_min)),
                                   max_delay=max(1, round(config.reconnect_max)))
        if config.username is not None:
            pw = config.password.get_secret_value() if config.password is not None else None
            client.username_pw_set(config.username, pw)
        if config.tls is not None and config.tls.enabled:
            client.tls_set_context(self._ssl_context())
        if status_topic is not None:
            client.will_set(status_topic, b"offline", qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_socket_open = self._on_socket_open
        self._sock: Any = None
        self._client = client
        self._lock = threading.Lock()
        self._acks: list[tuple[int, int, str]] = []
        self._wake_pending = False
        self._pending: dict[int, _Write] = {}
        self._outstanding = 0
        self._space = asyncio.Event()
        self._space.set()
        self._connected = threading.Event()
        self._connected_async = asyncio.Event()
        self._subscriptions: list[tuple[str, int]] = []
        self._stopping = False
        self._problem: str | None = None  # the last reason we are not connected, logged once per change
        self.connects = 0
        self.refusals = 0
        """CONNACKs that refused us (wrong credentials, ...); paho's backoff keeps doubling across them."""
        self.login_refused = False
        """The broker's last answer refused our credentials (cleared by the next accepted connect)."""
        self._losses: deque[float] = deque(maxlen=64)  # monotonic times of lost connections
        self._up_since: float | None = None
        self._flap_delay = 0.0  # reconnect delay kept across connections that did not stay up
        self.published_mono = 0.0
        """Monotonic time the last ``publish_all`` handed its last message to paho (``gateway.stages``)."""

    # --- lifecycle ---------------------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        tls = self.config.tls
        assert tls is not None
        try:
            ctx = ssl.create_default_context(cafile=tls.ca_file)
            ctx.check_hostname = tls.check_hostname
            if tls.cert_file is not None and tls.key_file is not None:
                ctx.load_cert_chain(tls.cert_file, tls.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise RetryableSinkError(f"cannot load TLS files: {exc}") from exc
        return ctx

    async def start(self) -> None:
        """Connect in the background (retrying forever) and return at once."""
        self._loop = asyncio.get_running_loop()
        props = None
        if self._v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = int(self.config.session_expiry)
            # clean_start False resumes the broker session (and its queued messages) on every connect
            self._client.connect_async(self.config.host, self.config.port, keepalive=int(self.config.keepalive),
                                       clean_start=self.config.clean_start, properties=props)
        else:
            self._client.connect_async(self.config.host, self.config.port, keepalive=int(self.config.keepalive))
        self._client.loop_start()

    async def stop(self, timeout: float = 2.0) -> None:
        """Publish ``offline`` (a clean stop does not fire the will), disconnect, end the thread."""
        if self._connected.is_set() and self.status_topic is not None:
            info = self._client.publish(self.status_topic, b"offline", qos=1, retain=True)
            w = self._track([info.mid]) if info.rc in (MQTTErrorCode.MQTT_ERR_SUCCESS,) else None
            if w is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(w.done.wait(), timeout)
        self._stopping = True
        self._client.disconnect()
        pool = WorkerThread("mqtt-stop")  # loop_stop joins paho's thread: never on the event loop
        try:
            await asyncio.wait_for(pool.run(self._client.loop_stop), timeout)
        except TimeoutError:
            self.log.warning("mqtt network thread did not stop in time")
        finally:
            pool.close()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected_async.wait(), timeout)
        return self._connected.is_set()

    def kill(self) -> None:
        """Drop the TCP connection without DISCONNECT, as a crash would (tests: last will)."""
        sock: Any = self._client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(2)

    # --- publishing ----------------------------------------------------------------------------------

    async def publish_all(self, messages: Sequence[tuple[str, bytes]], qos: int, retain: bool,
                          connection: int | None = None) -> None:
        """Publish ``messages`` in order and return once the broker acked every one of them. With a
        ``connection`` number, only while that connection is up (``fresh_sessions``)."""
        if not self._connected.is_set():
            raise RetryableSinkError(f"not connected to the broker: {self._problem or 'connecting'}")
        w = _Write()
        publish = self._client.publish
        pending = self._pending
        limit = self.config.max_pending
        try:
            for topic, payload in messages:
                while self._outstanding >= limit:
                    self._space.clear()
                    await self._space.wait()
                if connection is None:
                    info = publish(topic, payload, qos, retain)
                else:
                    with self._gate:
                        if w.lost or connection != self.connects or not self._connected.is_set():
                            raise RetryableSinkError("the connection to the broker changed during the write")
                        info = publish(topic, payload, qos, retain)
                rc = info.rc
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS and not (rc == MQTTErrorCode.MQTT_ERR_NO_CONN and qos > 0):
                    # QoS 1/2 without a connection stays queued in paho; anything else was not taken
                    raise RetryableSinkError(f"publish refused: {mqtt.error_string(rc)}")
                pending[info.mid] = w
                w.mids.append(info.mid)
                w.remaining += 1
                self._outstanding += 1
            self.published_mono = time.monotonic()
            if w.remaining:
                await self._wait(w)
        except BaseException:
            self._abandon(w)
            raise
        if w.lost:
            raise RetryableSinkError("the connection to the broker was lost before it acknowledged the write")
        if w.error is not None:
            code, reason = w.error
            if code in _RETRYABLE_REASONS:
                self.log.error("broker refused a publish; retrying", reason=reason)
                raise RetryableSinkError(f"broker refused a publish: {reason}")
            raise PermanentSinkError(f"broker rejected a publish: {reason}")

    async def _wait(self, w: _Write) -> None:
        timeout = self.config.ack_timeout
        while w.remaining:
            before = w.remaining
            try:
                await asyncio.wait_for(w.done.wait(), timeout)
            except TimeoutError:
                # While the link is down paho holds the messages and re-sends them on reconnect: wait.
                if self._connected.is_set() and w.remaining == before:
                    raise RetryableSinkError(
                        f"broker did not acknowledge {w.remaining} message(s) within {timeout:g}s"
                    ) from None

    def publish_nowait(self, topic: str, payload: bytes, qos: int, retain: bool = False,
                       response_to: InboundMessage | None = None) -> None:
        """Fire-and-forget publish (status, command responses) carrying v5 correlation data if given."""
        props = None
        if self._v5 and response_to is not None and response_to.correlation_data is not None:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.CorrelationData = response_to.correlation_data
        info = self._client.publish(topic, payload, qos, retain, properties=props)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            self.log.warning("publish refused", topic=topic, error=mqtt.error_string(info.rc))

    def subscribe(self, topic: str, qos: int) -> None:
        """Subscribe now (if connected) and again after every reconnect."""
        self._subscriptions.append((topic, qos))
        if self._connected.is_set():
            self._client.subscribe(topic, qos)

    def _track(self, mids: list[int]) -> _Write:
        w = _Write()
        for mid in mids:
            self._pending[mid] = w
            w.mids.append(mid)
            w.remaining += 1
            self._outstanding += 1
        return w

    def _abandon(self, w: _Write) -> None:
        for mid in w.mids:
            if self._pending.get(mid) is w:
                del self._pending[mid]
                self._outstanding -= 1
        w.remaining = 0
        self._space.set()

    def _lose_pending(self) -> None:
        """fresh_sessions, on the event loop after a connection ended: every write still waiting fails now
        (its unacknowledged messages will never be re-sent)."""
        self._drain_acks()  # acks that arrived before the end still count
        for w in {id(w): w for w in self._pending.values()}.values():
            w.lost = True
            self._abandon(w)
            w.done.set()

    def _drain_acks(self) -> None:
        """Event-loop side of the ack bridge: resolve every ack that arrived since the last call."""
        with self._lock:
            acks, self._acks = self._acks, []
            self._wake_pending = False
        pending = self._pending
        for mid, code, reason in acks:
            w = pending.pop(mid, None)
            if w is None:
                continue
            self._outstanding -= 1
            if code >= 0x80 and w.error is None:
                w.error = (code, reason)
            w.remaining -= 1
            if w.remaining == 0:
                w.done.set()
        if self._outstanding < self.config.max_pending // 2 + 1:
            self._space.set()

    def _wake(self) -> None:
        # caller holds self._lock
        if not self._wake_pending and self._loop is not None:
            self._wake_pending = True
            self._loop.call_soon_threadsafe(self._drain_acks)

    # --- paho callbacks (network thread) ------------------------------------------------------------

    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        """No Nagle on our publishes: a write's messages go out as they are published, not held until the
        broker acknowledges the previous segment. paho sends the CONNECT packet right after this: its will."""
        self._sock = sock
        with contextlib.suppress(OSError, AttributeError):  # a websocket wrapper has no socket options
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._will is not None:
            topic, payload, qos, retain = self._will()
            client.will_set(topic, payload, qos=qos, retain=retain)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        if _QUICKACK is not None and self._sock is not None:
            # Acknowledge the PUBACKs just read at once: a broker that keeps Nagle on (mosquitto's default)
            # holds its next PUBACKs until then, and a delayed ACK takes 40 ms.
            with contextlib.suppress(OSError, AttributeError):
                self._sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        code = reason.value if reason.is_failure else 0
        with self._lock:
            self._acks.append((mid, code, reason.getName() if code else ""))
            self._wake()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self.refusals += 1
            self.login_refused = reason.getName() in _AUTH_FAILURES
            self._report(f"broker refused the connection: {reason.getName()}",
                         hint="check username/password" if reason.getName() in _AUTH_FAILURES else None)
            return
        if self._fresh:
            with self._gate, client._out_message_mutex:
                # paho would re-send these right after this callback, before the new session's first message
                client._out_messages.clear()
                client._inflight_messages = 0
                self.connects += 1
        else:
            self.connects += 1
        self.login_refused = False
        self._up_since = time.monotonic()
        # A v5 broker states how many QoS 1/2 messages it takes in flight; mosquitto silently drops
        # QoS 2 messages beyond it while paho ignores the PUBREC reason code, so stay within it.
        receive_max = getattr(props, "ReceiveMaximum", None) if props is not None else None
        inflight = self.config.max_inflight if receive_max is None else min(self.config.max_inflight, receive_max)
        # paho's setter refuses while connected; the private field is what its send window reads.
        client._max_inflight_messages = inflight
        if self.status_topic is not None:
            client.publish(self.status_topic, b"online", qos=1, retain=True)
        for topic, qos in self._subscriptions:
            client.subscribe(topic, qos)
        self._connected.set()
        self._set_async_connected(True)
        if self._on_connect_cb is not None and self._loop is not None:
            with contextlib.suppress(RuntimeError):  # loop closed during shutdown
                self._loop.call_soon_threadsafe(self._on_connect_cb, self.connects)
        self.log.info("mqtt connected", host=self.config.host, port=self.config.port,
                      session_present=bool(flags.session_present), reconnected=self._problem is not None)
        self._problem = None

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        exc = sys.exc_info()[1]  # paho calls this inside its `except OSError:` block
        if isinstance(exc, ssl.SSLCertVerificationError):
            msg = f"TLS: broker certificate not trusted ({exc.verify_message}); check tls.ca_file"
        elif isinstance(exc, ssl.SSLError):
            msg = f"TLS handshake failed: {exc}"
        else:
            msg = f"cannot connect: {exc}" if exc is not None else "cannot connect"
        self._report(msg)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        self._set_async_connected(False)
        if self._fresh and self._loop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._lose_pending)
        if was and not self._stopping:
            now = time.monotonic()
            self._losses.append(now)
            self._keep_backoff(now - (self._up_since or now))
        if was and not self._stopping:
            self._report(f"connection lost: {reason.getName()}")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: Any) -> None:
        if self._on_message_cb is None or self._loop is None:
            return
        props = getattr(msg, "properties", None)
        inbound = InboundMessage(
            topic=msg.topic,
            payload=bytes(msg.payload),
            response_topic=getattr(props, "ResponseTopic", None) if props is not None else None,
            correlation_data=getattr(props, "CorrelationData", None) if props is not None else None,
            expiry=getattr(props, "MessageExpiryInterval", None) if props is not None else None,
        )
        self._loop.call_soon_threadsafe(self._on_message_cb, inbound)

    def _keep_backoff(self, lasted: float) -> None:
        """paho resets its reconnect delay at every accepted CONNACK. A connection that stayed up for
        ``STABLE_AFTER`` earns that reset; one that dropped sooner (a flapping broker, a broker that
        drops us after connect) keeps backing off from where the previous short one left it."""
        if lasted >= STABLE_AFTER:
            self._flap_delay = 0.0
            return
        low, high = max(1, round(self.config.reconnect_min)), max(1, round(self.config.reconnect_max))
        self._flap_delay = min(high, max(low, self._flap_delay * 2 or low))
        with self._client._reconnect_delay_mutex:  # paho doubles this before its next wait
            self._client._reconnect_delay = max(1, round(self._flap_delay / 2))

    def losses_within(self, seconds: float) -> int:
        """Connections lost within the last ``seconds``."""
        cutoff = time.monotonic() - seconds
        return sum(1 for t in self._losses if t >= cutoff)

    def _report(self, problem: str, hint: str | None = None) -> None:
        """Log a connection problem once per change, not on every retry."""
        if problem != self._problem:
            self._problem = problem
            self.log.error("mqtt broker unavailable; retrying with backoff", host=self.config.host,
                           port=self.config.port, error=problem, **({"hint": hint} if hint else {}))

    def _set_async_connected(self, up: bool) -> None:
        if self._loop is None:
            return
        ev = self._connected_async
        with contextlib.suppress(RuntimeError):  # loop closed during shutdown
            self._loop.call_soon_threadsafe(ev.set if up else ev.clear)
