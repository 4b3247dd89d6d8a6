"""The one module that imports paho-mqtt: a paho client whose network I/O runs on the asyncio event loop.

Threading: paho's socket is non-blocking and registered with the event loop (paho's external-loop API:
``loop_read`` when it is readable, ``loop_write`` when paho has queued packets, ``loop_misc`` every second
for the keep-alive), so publishing, reading PUBACKs and every callback after the CONNECT happen on the
event loop, with no thread to wake per message. Only the blocking part of a connection attempt (DNS, the
TCP connect, the TLS handshake and queueing the CONNECT: paho's ``reconnect()``) runs on a ``WorkerThread``;
the callbacks paho makes in there (``on_pre_connect``, ``on_socket_open``) touch only plain fields. paho's
own network thread (``loop_start``) woke up several times per write (a socket-pair byte per publish, the
PUBACKs) and handed acks over with ``call_soon_threadsafe``: on a VM each of those wake-ups costs tens of
µs of CPU (``edge-gateway bench modbus -p sink=mqtt`` prints the wake-ups per thread).

Delivery tracking: every publish's ``mid`` maps to the write it belongs to; a write is done when the
broker acked each of its messages (PUBACK for QoS 1, PUBCOMP for QoS 2, the socket write for QoS 0).
paho's ``wait_for_publish`` is not used: it raises for messages queued while offline even after they
were delivered. Messages of QoS 1/2 published while the link is down stay in paho's in-memory queue
and go out on reconnect, so a write in progress keeps waiting for them instead of failing.

Reconnecting: ``_run`` connects, waits until the socket closes, waits paho's reconnect delay (doubling
from ``reconnect_min`` to ``reconnect_max``, reset by an accepted CONNACK, as ``loop_forever`` would) and
connects again, until ``stop``.

Failover (``hosts``): one paho client walks the brokers of a cluster. A failed connect, a refused or
unanswered CONNECT and a lost link each move to the next broker at once; only when every broker failed in
a row does the reconnect backoff apply. ``on_pre_connect`` points paho at the chosen broker just before
each attempt. The unacknowledged QoS 1 messages stay in paho's queue across the switch and are re-sent to
the new broker (with DUP), so the write waiting for them completes there: a sample counts as delivered once
the cluster acknowledged it, whichever node did.

With ``fresh_sessions`` (Sparkplug B) every connection is a session of its own instead: what was not
acknowledged when a connection ended is dropped from paho's queue before it could be re-sent on the next
one, the writes it belonged to fail (their data stays spooled), and ``publish_all(..., connection=n)``
publishes only while connection ``n`` is the current one. The session's own first messages (its births)
then always precede any data on the new connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import ssl
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from connectors.mqtt.batched_socket import BatchedSocket
from connectors.mqtt.config import MqttSinkConfig
from connectors.mqtt.presence import RETAINED_WAIT, Presence
from gateway.errors import GatewayError, PermanentSinkError, RetryableSinkError
from gateway.fleet.message import GatewayStatus, StatusQuery
from gateway.threads import WorkerThread

# v5 PUBACK reason codes that mean "later" rather than "never": not authorized (a broker ACL being
# fixed must not cost data) and quota exceeded.
_RETRYABLE_REASONS = frozenset({0x87, 0x97})
_AUTH_FAILURES = frozenset({"Not authorized", "Bad user name or password"})
_VERSION_REFUSALS = frozenset({"Unsupported protocol version"})
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


def endpoint_text(host: str, port: int) -> str:
    """``host:port`` as configured (IPv6 in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# Every PUBACK reason code of MQTT 5 (0 is 3.1.1's only answer), made once: paho's objects are only read
_PUBACK_REASONS = {code: ReasonCode(PacketTypes.PUBACK, identifier=code)
                   for code in (0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99)}
_NO_PROPERTIES = Properties(PacketTypes.PUBACK)  # type: ignore[no-untyped-call]


class _Client(mqtt.Client):
    """paho's client with a short way for a PUBACK without properties (3.1.1's always; 5's nearly always: a
    packet id and maybe a reason code). paho decodes every PUBACK into a new ``ReasonCode`` and a new
    ``Properties``, which builds two tables of ~40 entries each time: ~40 % of the CPU a QoS 1 message costs
    the gateway in all (``bench/RESULTS.md``). A PUBACK with properties takes paho's own way.
    Overrides a private method of the pinned paho (``requirements.lock``); ``tests/connectors/mqtt/unit/
    test_acks.py`` fails if paho stops calling it."""

    def _handle_pubackcomp(self, cmd: Any) -> MQTTErrorCode:
        packet = self._in_packet["packet"]
        size = len(packet)
        # 2 bytes: the packet id; 3: and a reason code (MQTT 5 only); 4: and an empty property length
        short = size == 2 or (self._protocol == mqtt.MQTTv5 and (size == 3 or (size == 4 and packet[3] == 0)))
        reason = _PUBACK_REASONS.get(packet[2] if size > 2 else 0)
        if cmd != "PUBACK" or not short or reason is None:
            return super()._handle_pubackcomp(cmd)
        mid = packet[0] << 8 | packet[1]
        with self._out_message_mutex:
            if mid in self._out_messages:  # acked once only, as paho does
                return self._do_on_publish(mid, reason, _NO_PROPERTIES)
        return MQTTErrorCode.MQTT_ERR_SUCCESS


class _Write:
    __slots__ = ("done", "error", "lost", "mids", "remaining")

    def __init__(self) -> None:
        self.remaining = 0
        self.mids: list[int] = []
        self.done = asyncio.Event()
        self.error: tuple[int, str] | None = None
        self.lost = False  # fresh_sessions: its connection ended before every ack was in


class MqttLink:
    """One MQTT connection: connect forever with backoff, the gateway's status and last will (with a
    ``Presence``), acked publishing, subscribe.

    With a presence, the link counts as connected (``publish_all`` works) only once it went *online*: at
    once on the process's first connect, after reading the retained status on every later one (see
    ``connectors.mqtt.presence``). A link that finds itself replaced disconnects cleanly and stays down.
    """

    def __init__(
        self,
        config: MqttSinkConfig,
        *,
        client_id: str,
        log: structlog.stdlib.BoundLogger,
        presence: Presence | None = None,
        on_message: Callable[[InboundMessage], None] | None = None,
        on_replaced: Callable[[GatewayStatus], None] | None = None,
        on_connect: Callable[[int], None] | None = None,
        will: Callable[[], tuple[str, bytes, int, bool]] | None = None,
        fresh_sessions: bool = False,
    ) -> None:
        """``presence`` None: no gateway status messages (nor their will). ``on_connect(n)`` runs on the event loop
        after the broker accepted connection number ``n``. ``will()`` gives the last will (topic, payload,
        qos, retain) of each CONNECT packet, called just before the packet is sent (a Sparkplug NDEATH
        carries a number that changes with every CONNECT). ``fresh_sessions``: see the module's doc."""
        self.config = config
        self.presence = presence
        self.status_topic = presence.topic if presence is not None else ""
        self.log = log
        self._on_message_cb = on_message
        self._on_replaced_cb = on_replaced
        self._on_connect_cb = on_connect
        self._will = will
        self._fresh = fresh_sessions
        self._gate = threading.Lock()  # fresh_sessions: a publish and a new connection never interleave
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0  # the event loop's thread: paho's socket callbacks from another are ignored
        self._connector: WorkerThread | None = None  # paho's blocking reconnect() (TCP connect, TLS handshake)
        self._runner: asyncio.Task[None] | None = None
        self._fd: int | None = None  # paho's socket, while registered with the event loop
        self._sock: BatchedSocket | None = None  # around paho's socket, while registered
        self._writing = False  # a writer callback is registered (the socket's send buffer was full)
        self._flush_pending = False
        self._misc: asyncio.TimerHandle | None = None  # the next loop_misc (keep-alive)
        self._ended = asyncio.Event()  # paho closed the socket of the current connection
        self._v5 = config.protocol == "5"
        if self._v5:
            client = _Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        else:
            client = _Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
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
        if presence is not None:
            client.will_set(self.status_topic, presence.status("offline").to_json(), qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        client.on_pre_connect = self._on_pre_connect
        self._endpoints = config.endpoints()
        self._at = 0  # index of the broker being tried or connected to (changed on paho's thread only)
        self._tried = 0  # brokers failed in a row since the last connection that stayed up
        self._round_delay = 0.0  # backoff once every broker failed in a row (several hosts)
        self._attempt_open = False  # a CONNECT went out and no CONNACK answered it yet
        self._last_connected: int | None = None
        self.failovers = 0
        """Connections made to another broker than the one connected to before (``hosts``)."""
        self.attempts = 0
        """Connection attempts made (each CONNECT, or TCP connect that failed)."""
        self._client = client
        self._pending: dict[int, _Write] = {}
        self._outstanding = 0
        self._space = asyncio.Event()
        self._space.set()
        self._connected = threading.Event()
        self._connected_async = asyncio.Event()
        self._subscriptions: list[tuple[str, int]] = []
        self._stopping = False
        self._seq = 0  # connections accepted so far; a callback for an older one is stale
        self._checking: asyncio.TimerHandle | None = None  # waiting for the retained status (rule 2)
        self.replaced_by: GatewayStatus | None = None
        """Another instance of this gateway that took its id; the link then stays down for good."""
        self.last_status: GatewayStatus | None = None
        """The status this link published last (birth or heartbeat)."""
        self._problem: str | None = None  # the last reason we are not connected
        self._reported: dict[str, str] = {}  # broker -> the problem last logged for it (once per change)
        self.connects = 0
        self.refusals = 0
        """CONNACKs that refused us (wrong credentials, ...); paho's backoff keeps doubling across them."""
        self.login_refused = False
        """The broker's last answer refused our credentials (cleared by the next accepted connect)."""
        self.protocol_refused = False
        """The broker's last answer refused the MQTT version (an MQTT 5 CONNECT to a 3.1.1-only broker)."""
        self._losses: deque[float] = deque(maxlen=64)  # monotonic times of lost connections
        self._up_since: float | None = None
        self._accepted = False  # the broker accepted the current connection (CONNACK), until it ends
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
        self._loop_thread = threading.get_ident()
        host, port = self._endpoints[0]
        props = None
        if self._v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = int(self.config.session_expiry)
            # clean_start False resumes the broker session (and its queued messages) on every connect
            self._client.connect_async(host, port, keepalive=int(self.config.keepalive),
                                       clean_start=self.config.clean_start, properties=props)
        else:
            self._client.connect_async(host, port, keepalive=int(self.config.keepalive))
        self._connector = WorkerThread("mqtt-connect")
        self._runner = asyncio.create_task(self._run(), name="mqtt-link")

    async def _run(self) -> None:
        """Connect, serve the connection on the event loop until paho closes its socket, wait the reconnect
        delay, again; until ``stop`` or a stand-down."""
        client = self._client
        assert self._connector is not None
        first = True
        while not self._stopping:
            if not first:
                delay = self._reconnect_delay()
                if delay > 0:
                    await asyncio.sleep(delay)
                if self._stopping:
                    return
            first = False
            try:
                await self._connector.run(client.reconnect)
            except Exception as exc:  # OSError, ssl.SSLError, a host paho refuses: retry them all
                self._connect_failed(exc)
                continue
            self._ended.clear()
            self._attach()
            await self._ended.wait()

    def _reconnect_delay(self) -> float:
        """paho's own reconnect wait (``loop_forever``'s): ``reconnect_min``, doubling up to ``reconnect_max``,
        reset by an accepted CONNACK; ``_next_broker`` and ``_keep_backoff`` steer it."""
        c = self._client
        with c._reconnect_delay_mutex:
            if c._reconnect_delay is None:
                c._reconnect_delay = c._reconnect_min_delay
            else:
                c._reconnect_delay = min(c._reconnect_delay * 2, c._reconnect_max_delay)
            return float(c._reconnect_delay)

    # --- paho's socket on the event loop -------------------------------------------------------------

    def _attach(self) -> None:
        """Register the socket paho just connected (its CONNECT queued) with the event loop, send the CONNECT."""
        client = self._client
        sock = client.socket()
        if sock is None or self._loop is None:
            self._ended.set()
            return
        # One recv per burst of PUBACKs, one send per write (paho's private socket field: paho is pinned)
        client._sock = self._sock = BatchedSocket(sock)
        self._fd = fd = sock.fileno()
        self._loop.add_reader(fd, self._readable)
        self._misc = self._loop.call_later(1.0, self._tick)
        self._flush()

    def _detach(self) -> None:
        fd, self._fd = self._fd, None
        self._sock = None
        if self._misc is not None:
            self._misc.cancel()
            self._misc = None
        if fd is not None and self._loop is not None:
            self._loop.remove_reader(fd)
            if self._writing:
                self._loop.remove_writer(fd)
        self._writing = False

    def _readable(self) -> None:
        client = self._client
        client.loop_read()  # every complete packet there is (PUBACKs, CONNACK, messages); callbacks run here
        sock: Any = client.socket()
        if _QUICKACK is not None and sock is not None:
            # Acknowledge what was just read at once: a broker that keeps Nagle on (mosquitto's default)
            # holds its next PUBACKs until then, and a delayed ACK takes 40 ms.
            with contextlib.suppress(OSError, AttributeError):  # a websocket wrapper has no socket options
                sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        pending = getattr(sock, "pending", None) if sock is not None and self._fd is not None else None
        if pending is not None and pending() and self._loop is not None:
            # bytes read ahead (BatchedSocket) or decrypted in the SSL object, where epoll cannot see them
            self._loop.call_soon(self._readable)

    def _flush(self) -> None:
        """Send what paho queued (as much as the socket takes); wait for writability for the rest."""
        self._flush_pending = False
        if self._fd is None or self._loop is None:
            return  # not connected yet: _attach flushes
        client = self._client
        client.loop_write()  # paho's packets into the BatchedSocket
        fd, sock = self._fd, self._sock
        if fd is None or sock is None:
            return  # the write failed: paho closed the socket
        sock.flush()  # all of them in one send
        if sock.failed:
            self._loop.call_soon(self._readable)  # paho's next recv raises the error: it closes the connection
        if client.want_write() or sock.unsent:
            if not self._writing:
                self._writing = True
                self._loop.add_writer(fd, self._flush)
        elif self._writing:
            self._writing = False
            self._loop.remove_writer(fd)

    def _tick(self) -> None:
        """Keep-alive once a second: PINGREQ when due; a broker silent for too long (or a CONNECT unanswered
        within the keep-alive) closes the connection (paho's loop_misc)."""
        self._misc = None
        if self._fd is None:
            return
        self._client.loop_misc()
        if self._fd is not None and self._loop is not None:
            self._misc = self._loop.call_later(1.0, self._tick)

    def _on_register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        """paho queued a packet: send it from the event loop soon (once per burst of publishes). In the
        connector thread (the CONNECT of reconnect()) there is nothing to do: _attach sends it."""
        if threading.get_ident() == self._loop_thread and not self._flush_pending and self._loop is not None:
            self._flush_pending = True
            self._loop.call_soon(self._flush)

    def _on_unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        if self._writing and self._fd is not None and self._loop is not None \
                and threading.get_ident() == self._loop_thread and not (self._sock is not None and self._sock.unsent):
            self._writing = False
            self._loop.remove_writer(self._fd)

    def _on_socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        """paho closes the socket (lost, refused, keep-alive, our DISCONNECT): off the event loop, and let _run
        go on. A close in the connector thread is reconnect() dropping a socket already detached."""
        if threading.get_ident() != self._loop_thread:
            return
        self._detach()
        self._ended.set()

    def _close_leftover(self) -> None:
        """Connector thread, after stop: a connect that was still under way when stop came leaves its socket."""
        sock = self._client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    async def stop(self, timeout: float = 2.0) -> None:
        """Publish the status as ``offline`` (a clean stop does not fire the will), disconnect, close."""
        if self._checking is not None:
            self._checking.cancel()
        if self._connected.is_set() and self.presence is not None:
            offline = self.presence.status("offline").to_json()
            info = self._client.publish(self.status_topic, offline, qos=1, retain=True)
            w = self._track([info.mid]) if info.rc in (MQTTErrorCode.MQTT_ERR_SUCCESS,) else None
            if w is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(w.done.wait(), timeout)
        self._stopping = True
        self._client.disconnect()  # queues DISCONNECT; once it is sent paho closes the socket
        if self._fd is not None:
            try:
                await asyncio.wait_for(self._ended.wait(), timeout)
            except TimeoutError:
                self.log.warning("mqtt: the broker connection did not close in time")
        self._detach()
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        connector, self._connector = self._connector, None
        if connector is not None:
            with contextlib.suppress(RuntimeError):
                connector.submit(self._close_leftover)
            connector.close()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def publish_status(self) -> None:
        """The gateway's status now, retained, and the same as ``offline`` for the last will (the will goes
        with the next connect, so it says when the gateway was last seen). Only while online."""
        if self.presence is None or not self._connected.is_set() or self._silent() is not None:
            return
        status = self.presence.status()
        self._client.publish(self.status_topic, status.to_json(), 1, True)
        self.last_status = status
        offline = dataclasses.replace(status, state="offline")
        self._client.will_set(self.status_topic, offline.to_json(), qos=1, retain=True)

    @property
    def endpoint(self) -> str:
        """The broker connected to, or being tried (``host:port``)."""
        return endpoint_text(*self._endpoints[self._at])

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
            if self.replaced_by is not None:
                raise RetryableSinkError(f"stopped: gateway id {self.replaced_by.id!r} is run by another instance "
                                         f"(host {self.replaced_by.host})")
            raise RetryableSinkError(f"not connected to the broker: {self._problem or 'connecting'}")
        if (silent := self._silent()) is not None:
            raise RetryableSinkError(f"nothing heard from the broker for {silent:.0f} s; waiting for the link")
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

    def _silent(self) -> float | None:
        """Seconds since the broker was last heard from, when that is longer than it would wait for us (1.5
        keep-alives): a process that was frozen (a box cut off and back) still counts as connected until paho
        reads the closed socket, and what it published meanwhile would be queued and re-sent on reconnect,
        before anything else: from a box that may have been replaced in between. None when all is well."""
        with self._client._msgtime_mutex:
            heard = self._client._last_bytes_received
        silent = time.monotonic() - heard
        return silent if silent > 1.5 * self.config.keepalive else None

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
        for w in {id(w): w for w in self._pending.values()}.values():
            w.lost = True
            self._abandon(w)
            w.done.set()

    # --- paho callbacks (event loop; on_pre_connect and on_socket_open in the connector thread) -------

    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        """No Nagle on our publishes: a write's messages go out as they are published, not held until the
        broker acknowledges the previous segment. paho sends the CONNECT packet right after this: its will."""
        with contextlib.suppress(OSError, AttributeError):  # a websocket wrapper has no socket options
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._will is not None:
            topic, payload, qos, retain = self._will()
            client.will_set(topic, payload, qos=qos, retain=retain)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        w = self._pending.pop(mid, None)
        if w is None:
            return  # a status or command response (publish_nowait), or a write given up
        self._outstanding -= 1
        if reason.is_failure and w.error is None:
            w.error = (reason.value, reason.getName())
        w.remaining -= 1
        if w.remaining == 0:
            w.done.set()
        if self._outstanding <= self.config.max_pending // 2:
            self._space.set()

    def _on_pre_connect(self, client: mqtt.Client, userdata: Any) -> None:
        """Point paho at the broker to try next. reconnect() has already left the closed state here, so
        paho's host/port setters would refuse: write the fields they guard."""
        self._attempt_open = True
        self.attempts += 1
        client._host, client._port = self._endpoints[self._at]

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._attempt_open = False
        if reason.is_failure:
            self.refusals += 1
            name = reason.getName()
            self.login_refused = name in _AUTH_FAILURES
            self.protocol_refused = name in _VERSION_REFUSALS
            hint = ("check username/password" if self.login_refused
                    else 'set protocol: "3.1.1": this broker does not speak MQTT 5' if self.protocol_refused else None)
            self._report(f"broker refused the connection: {name}", hint=hint)
            self._next_broker()
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
        self.protocol_refused = False
        self._accepted = True
        self._up_since = time.monotonic()
        if self._last_connected is not None and self._last_connected != self._at:
            self.failovers += 1
        self._last_connected = self._at
        # A v5 broker states how many QoS 1/2 messages it takes in flight; mosquitto silently drops
        # QoS 2 messages beyond it while paho ignores the PUBREC reason code, so stay within it.
        receive_max = getattr(props, "ReceiveMaximum", None) if props is not None else None
        inflight = self.config.max_inflight if receive_max is None else min(self.config.max_inflight, receive_max)
        # paho's setter refuses while connected; the private field is what its send window reads.
        client._max_inflight_messages = inflight
        if self.presence is not None:
            client.subscribe(self.status_topic, 1)  # how a replaced gateway learns it (presence rules 2, 3)
        for topic, qos in self._subscriptions:
            client.subscribe(topic, qos)
        self._seq += 1
        # resent: messages published before and not acknowledged, which paho now sends again (read racily
        # from the loop's counter: for the log only)
        self.log.info("mqtt connected", broker=self.endpoint, session_present=bool(flags.session_present),
                      reconnected=self._problem is not None, failovers=self.failovers, resent=self._outstanding)
        self._problem = None
        self._reported.clear()
        if self.presence is None:
            self._connected.set()
            self._set_async_connected(True)
            if self._on_connect_cb is not None and self._loop is not None:
                with contextlib.suppress(RuntimeError):  # loop closed during shutdown
                    self._loop.call_soon_threadsafe(self._on_connect_cb, self.connects)
        elif self._loop is not None:
            with contextlib.suppress(RuntimeError):  # loop closed during shutdown
                self._loop.call_soon_threadsafe(self._arrived, self._seq, self.connects == 1)

    def _connect_failed(self, exc: BaseException) -> None:
        """reconnect() raised: no TCP connection, or TLS refused it."""
        if isinstance(exc, ssl.SSLCertVerificationError):
            msg = f"TLS: broker certificate not trusted ({exc.verify_message}); check tls.ca_file"
        elif isinstance(exc, ssl.SSLError):
            msg = f"TLS handshake failed: {exc}"
        else:
            msg = f"cannot connect: {exc}"
        self._attempt_open = False
        self._report(msg)
        self._next_broker()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        # a connection the broker accepted, online yet or still reading the retained status (presence rule 2)
        was, self._accepted = self._accepted, False
        unanswered, self._attempt_open = self._attempt_open, False
        self._connected.clear()
        self._set_async_connected(False)
        if self._fresh and self._loop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._lose_pending)
        if self._stopping:
            return
        if was:
            now = time.monotonic()
            self._losses.append(now)
            lasted = now - (self._up_since or now)
            if len(self._endpoints) == 1:
                self._keep_backoff(lasted)
            elif lasted >= STABLE_AFTER:  # a connection that stayed up starts a fresh round of brokers
                self._tried = 0
                self._round_delay = 0.0
            self._report(f"connection lost: {reason.getName()}")
            self._next_broker()
        elif unanswered:  # the broker closed the connection before answering the CONNECT
            self._report(f"connection closed before the broker answered: {reason.getName()}")
            self._next_broker()

    def _next_broker(self) -> None:
        """After a failure on the current broker: with several brokers, the next one is tried
        at once; once every one failed in a row, the next round waits the reconnect backoff (doubling from
        ``reconnect_min`` to ``reconnect_max``). A single broker keeps paho's own backoff."""
        n = len(self._endpoints)
        if n == 1:
            return
        self._at = (self._at + 1) % n
        self._tried += 1
        if self._tried < n:
            delay = 0.0
        else:
            self._tried = 0
            low, high = max(1, round(self.config.reconnect_min)), max(1, round(self.config.reconnect_max))
            self._round_delay = delay = min(high, max(low, self._round_delay * 2))
        with self._client._reconnect_delay_mutex:  # paho doubles this before its next wait (any float will do)
            self._client._reconnect_delay = delay / 2  # type: ignore[assignment]

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: Any) -> None:
        if self._loop is None:
            return
        if self.presence is not None and msg.topic == self.status_topic:
            self._loop.call_soon_threadsafe(self._status_seen, bool(msg.retain), bytes(msg.payload))
            return
        if self._on_message_cb is None:
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

    # --- presence (event loop) -------------------------------------------------------------------

    def _arrived(self, seq: int, first: bool) -> None:
        """A connect was accepted: go online at once the first time (rule 1), else read the retained status
        first (rule 2), publishing anyway after ``RETAINED_WAIT`` if the broker has none."""
        if seq != self._seq or self.replaced_by is not None:
            return
        if first:
            self._online(seq)
        else:
            if self._checking is not None:
                self._checking.cancel()
            assert self._loop is not None
            self._checking = self._loop.call_later(RETAINED_WAIT, self._online, seq)

    def _online(self, seq: int) -> None:
        self._checking = None
        if seq != self._seq or self.replaced_by is not None or not self._client.is_connected():
            return
        self._connected.set()
        self._connected_async.set()
        self.publish_status()

    def _status_seen(self, retained: bool, payload: bytes) -> None:
        presence = self.presence
        if presence is None or self.replaced_by is not None:
            return
        checking = self._checking is not None
        other = presence.replaced_by(payload)
        if other is not None:
            self._stand_down(other)
        elif checking and retained:  # the retained status is ours, or nobody's claim: carry on at once
            assert self._checking is not None
            self._checking.cancel()
            self._online(self._seq)
        elif not checking and presence.overwritten(payload):
            self.publish_status()  # the replaced box's last words landed after our birth: ours is retained again

    def _stand_down(self, other: GatewayStatus) -> None:
        if self._checking is not None:
            self._checking.cancel()
            self._checking = None
        self.replaced_by = other
        self._stopping = True  # a deliberate disconnect: not a lost connection
        self._connected.clear()
        self._connected_async.clear()
        self._client.disconnect()  # clean, so no last will overwrites the other instance's status; no reconnect
        self.log.error("mqtt: another instance of this gateway is online on the broker; stopped publishing "
                       "and disconnected for good", gateway=other.id, other_host=other.host,
                       other_instance=other.instance)
        if self._on_replaced_cb is not None:
            self._on_replaced_cb(other)

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
        """Log a connection problem once per change and broker, not on every retry."""
        self._problem = problem
        broker = self.endpoint
        if self._reported.get(broker) != problem:
            self._reported[broker] = problem
            more = len(self._endpoints) > 1
            self.log.error("mqtt broker unavailable; " + ("trying the next" if more else "retrying with backoff"),
                           broker=broker, error=problem, **({"hint": hint} if hint else {}))

    def _set_async_connected(self, up: bool) -> None:
        if self._loop is None:
            return
        ev = self._connected_async
        with contextlib.suppress(RuntimeError):  # loop closed during shutdown
            self._loop.call_soon_threadsafe(ev.set if up else ev.clear)


def read_retained(query: StatusQuery) -> list[tuple[str, bytes]]:
    """The messages on ``query.topics`` within a short window after subscribing: the retained ones first
    (``edge-gateway fleet status``). MQTT 3.1.1, a throw-away clean session, QoS 1 subscriptions; no will,
    nothing published. Blocking. Ends once every ``expect``ed topic answered, else (nothing expected) when no
    message came for ``_QUIET`` seconds after the broker acknowledged the subscriptions, and at ``timeout``."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"edge-gateway-fleet-{uuid.uuid4().hex[:10]}",
                         protocol=mqtt.MQTTv311, clean_session=True)
    if query.username is not None:
        client.username_pw_set(query.username, query.password)
    if query.ca_file is not None:
        try:
            client.tls_set_context(ssl.create_default_context(cafile=query.ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise GatewayError(f"cannot load the CA file {query.ca_file}: {exc}") from None
    lock = threading.Lock()
    got: list[tuple[str, bytes]] = []
    state: dict[str, Any] = {"connected": None, "subacks": 0, "last": 0.0}

    def on_connect(c: mqtt.Client, ud: Any, flags: Any, reason: Any, props: Any) -> None:
        state["connected"] = reason.getName() if reason.is_failure else ""
        if not reason.is_failure:
            c.subscribe([(topic, 1) for topic in query.topics])  # one SUBSCRIBE, one SUBACK

    def on_subscribe(c: mqtt.Client, ud: Any, mid: int, reasons: Any, props: Any) -> None:
        with lock:
            state["subacks"] += 1
            state["last"] = time.monotonic()

    def on_message(c: mqtt.Client, ud: Any, msg: Any) -> None:
        with lock:
            got.append((msg.topic, bytes(msg.payload)))
            state["last"] = time.monotonic()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    deadline = time.monotonic() + query.timeout
    try:
        client.connect(query.host, query.port, keepalive=30)
    except (OSError, ssl.SSLError) as exc:
        raise GatewayError(f"cannot connect to the broker {query.host}:{query.port}: {exc}") from None
    client.loop_start()
    try:
        while time.monotonic() < deadline:
            time.sleep(0.02)
            with lock:
                if state["connected"]:
                    raise GatewayError(f"the broker {query.host}:{query.port} refused the connection: "
                                       f"{state['connected']}")
                seen = {t for t, _ in got}
                if state["subacks"]:
                    if query.expect:  # a cluster may take a while to look a retained message up: wait for it
                        if query.expect <= seen:
                            break
                    elif time.monotonic() - state["last"] > _QUIET:
                        break
        if state["connected"] is None:
            raise GatewayError(f"the broker {query.host}:{query.port} did not answer within {query.timeout:g} s")
    finally:
        client.disconnect()
        client.loop_stop()
    with lock:
        return list(got)


_QUIET = 0.5
"""Retained messages come in one burst after each SUBACK: half a second without one ends the read."""
