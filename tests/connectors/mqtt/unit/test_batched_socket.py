"""BatchedSocket over a real socket pair: one recv per burst, one send per flush, errors handed to paho."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from connectors.mqtt.batched_socket import READ_SIZE, BatchedSocket


class Counting:
    """A socket that counts its recv and send calls."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.recvs = 0
        self.sends = 0

    def recv(self, n: int) -> bytes:
        self.recvs += 1
        return self.sock.recv(n)

    def send(self, data: Any) -> int:
        self.sends += 1
        return self.sock.send(data)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def pair() -> Iterator[tuple[Counting, socket.socket]]:
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    peer.settimeout(5)
    yield Counting(ours), peer
    ours.close()
    peer.close()


def test_paho_reads_of_a_burst_take_one_recv(pair: tuple[Counting, socket.socket]) -> None:
    inner, peer = pair
    b = BatchedSocket(inner)
    peer.sendall(b"\x40\x02\x00\x01" b"\x40\x02\x00\x02" b"\x40\x03\x00\x03\x10")  # three PUBACKs
    # paho's reads of one packet: the command byte, the remaining length, the body
    got = [b.recv(1), b.recv(1), b.recv(2), b.recv(1), b.recv(1), b.recv(2)]
    assert got == [b"\x40", b"\x02", b"\x00\x01", b"\x40", b"\x02", b"\x00\x02"]
    assert b.pending() == 5  # the third PUBACK, invisible to epoll: the link reads again while any remain
    assert [b.recv(1), b.recv(1), b.recv(3)] == [b"\x40", b"\x03", b"\x00\x03\x10"]
    assert inner.recvs == 1 and b.pending() == 0
    with pytest.raises(BlockingIOError):  # drained: paho stops reading until the loop says readable
        b.recv(1)
    assert inner.recvs == 2


def test_a_read_larger_than_the_buffer_is_handed_over_whole(pair: tuple[Counting, socket.socket]) -> None:
    inner, peer = pair
    b = BatchedSocket(inner)
    body = bytes(range(256)) * 8
    peer.sendall(body)
    assert b.recv(READ_SIZE * 2) == body  # what paho asked for covers it all: no copy kept
    assert b.pending() == 0


def test_the_packets_of_a_write_go_out_in_one_send(pair: tuple[Counting, socket.socket]) -> None:
    inner, peer = pair
    b = BatchedSocket(inner)
    packets = [b"\x32\x05\x00\x01t\x00\x01", b"\x32\x05\x00\x01t\x00\x02", b"\x32\x05\x00\x01t\x00\x03"]
    assert [b.send(p) for p in packets] == [len(p) for p in packets]  # paho counts them written
    assert inner.sends == 0 and b.unsent == sum(map(len, packets))
    assert b.flush() is True
    assert inner.sends == 1 and b.unsent == 0
    assert peer.recv(100) == b"".join(packets)


def test_a_full_socket_keeps_the_rest_for_later(pair: tuple[Counting, socket.socket]) -> None:
    inner, peer = pair
    b = BatchedSocket(inner)
    chunk = b"x" * 65536
    for _ in range(64):  # 4 MiB: more than a socket pair's buffers hold
        b.send(chunk)
    assert b.flush() is False
    left = b.unsent
    assert 0 < left < 64 * len(chunk) and not b.failed
    received = 0
    while b.unsent:
        received += len(peer.recv(1 << 20))
        b.flush()
    while received < 64 * len(chunk):
        received += len(peer.recv(1 << 20))
    assert received == 64 * len(chunk)


def test_a_failed_send_reaches_paho_at_its_next_recv_after_what_was_read(
        pair: tuple[Counting, socket.socket]) -> None:
    inner, peer = pair
    b = BatchedSocket(inner)
    peer.sendall(b"\x40\x02\x00\x07\x40\x02\x00\x08")
    assert b.recv(1) == b"\x40"  # one PUBACK and a half read ahead
    peer.close()
    b.send(b"\x32\x05\x00\x01t\x00\x01" * 1000)
    for _ in range(3):  # the peer's reset shows on the first or a later send
        b.flush()
        if b.failed:
            break
        b.send(b"more")
    assert b.failed and b.unsent == 0
    assert [b.recv(1), b.recv(2), b.recv(1), b.recv(1), b.recv(2)] == [
        b"\x02", b"\x00\x07", b"\x40", b"\x02", b"\x00\x08"]  # what arrived before is still paho's
    with pytest.raises(OSError) as err:
        b.recv(1)
    assert not isinstance(err.value, BlockingIOError)
    with pytest.raises(OSError):
        b.send(b"after")


def test_close_sends_what_paho_wrote_last(pair: tuple[Counting, socket.socket]) -> None:
    inner, peer = pair
    b = BatchedSocket(inner)
    b.send(b"\xe0\x00")  # DISCONNECT: paho closes the socket right after writing it
    b.close()
    assert peer.recv(10) == b"\xe0\x00"
    assert peer.recv(10) == b""  # then closed


def test_everything_else_is_the_socket_s_own(pair: tuple[Counting, socket.socket]) -> None:
    inner, _ = pair
    b = BatchedSocket(inner)
    assert b.fileno() == inner.fileno()
    assert b.sock is inner
