"""paho's socket with one system call per burst instead of one per packet part.

paho reads every packet in at least three ``recv`` calls (the command byte, the remaining length byte by byte,
the body) and writes every packet with a ``send`` of its own. At 170 QoS 1 messages a second that is ~500
``recv`` and ~170 ``send`` calls a second, each a system call that costs microseconds on a VM; here a read
takes what the kernel has (up to ``READ_SIZE``) and paho's ``recv`` calls are served from it, and the packets
one ``loop_write`` hands over go out in a single ``send`` by ``flush``.

The link (``connectors.mqtt.adapter``) installs this around paho's socket after each connect and drives it
from the event loop: bytes left in ``unread`` are invisible to epoll, so it reads again while any remain
(``pending``, like a TLS socket's decrypted bytes); bytes left in ``unsent`` wait for writability. A failed
``send`` in ``flush`` is kept and raised to paho's next ``recv``, so paho sees the lost connection as it
would have seen it itself. Works over plain, TLS and websocket sockets alike (all have ``recv``/``send``).
"""

from __future__ import annotations

import ssl
from typing import Any

READ_SIZE = 65536


class BatchedSocket:
    __slots__ = ("_error", "_in", "_out", "_pos", "sock")

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self._in = b""
        self._pos = 0
        self._out = bytearray()
        self._error: OSError | None = None

    # --- paho's side ---------------------------------------------------------------------------------

    def recv(self, size: int) -> bytes:
        if self._pos >= len(self._in):
            if self._error is not None:
                raise self._error
            data: bytes = self.sock.recv(max(size, READ_SIZE))  # BlockingIOError, SSLWantReadError: paho's
            if len(data) <= size:
                return data
            self._in, self._pos = data, 0
        start, self._pos = self._pos, self._pos + size
        return self._in[start:self._pos]

    def send(self, data: bytes | bytearray) -> int:
        """Take everything: it goes out with the next ``flush``."""
        if self._error is not None:
            raise self._error
        self._out += data
        return len(data)

    def pending(self) -> int:
        """Bytes received but not yet read by paho (here, or decrypted inside a TLS socket)."""
        inner = getattr(self.sock, "pending", None)
        return len(self._in) - self._pos + (inner() if inner is not None else 0)

    def close(self) -> None:
        if self._out and self._error is None:  # paho closes right after writing a DISCONNECT: send it first
            self.flush()  # never raises: a failure only leaves it unsent
        self.sock.close()

    def __getattr__(self, name: str) -> Any:  # fileno, setsockopt, shutdown, ...: the socket's own
        return getattr(self.sock, name)

    # --- the event loop's side ------------------------------------------------------------------------

    @property
    def unsent(self) -> int:
        return len(self._out)

    @property
    def failed(self) -> bool:
        return self._error is not None

    def flush(self) -> bool:
        """Send what paho wrote, as much as the socket takes now; True when nothing is left (False: wait until
        it is writable). Any error but "not now" is kept for paho's next ``recv`` (``failed``)."""
        out = self._out
        while out:
            try:
                sent = self.sock.send(out)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return False
            except OSError as exc:
                self._error = exc
                out.clear()
                return True
            del out[:sent]
        return True
