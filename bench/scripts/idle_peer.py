"""What a request to a process that sleeps between requests costs the sender, on this machine.

A child process answers 12-byte requests (a Modbus read's size) with 262 bytes over loopback TCP; the parent
sends them back to back, then with a pause before each. Printed per round trip: the CPU of the ``send``
alone and of the whole round trip (send, the wait for the answer, recv) in the parent. On a VM, waking a
process whose vCPU went idle costs the waker tens of µs more than reaching one that is running: the price of
spreading polls over the second (each request finds the device simulator asleep) against aligning them.

    python3 bench/scripts/idle_peer.py [--requests 600]
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import time

REQUEST = bytes.fromhex("0001 0000 0006 01 03 0000 007d")  # MBAP header + read 125 holding registers
ANSWER = b"x" * 262


def _answer(srv: socket.socket) -> None:
    conn, _ = srv.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while conn.recv(64):
        conn.send(ANSWER)
    os._exit(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=600)
    n = parser.parse_args().requests
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    child = os.fork()
    if child == 0:
        _answer(srv)
    sock = socket.create_connection(srv.getsockname())
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    print("pause before each request | send: CPU µs | round trip: CPU µs")
    for pause in (0.0, 0.0005, 0.002, 0.005):
        in_send = 0.0
        before = resource.getrusage(resource.RUSAGE_SELF)
        for _ in range(n):
            if pause:
                time.sleep(pause)
            t = time.thread_time()
            sock.send(REQUEST)
            in_send += time.thread_time() - t
            sock.recv(4096)
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        print(f"{pause * 1000:>5.1f} ms | {in_send / n * 1e6:>4.0f} | {cpu / n * 1e6:>4.0f}")
    sock.close()
    os.waitpid(child, 0)


if __name__ == "__main__":
    main()
