"""Server processes beside the gateway, for the benchmarks and the tests (``tests/servers.py`` builds its
fixtures on these): free ports, waiting for a listener, mosquitto and VictoriaMetrics processes that can be
stopped and started again, another process's CPU time. A missing binary is an error, never a skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 15.0) -> None:
    """Until something accepts connections on ``port``; fails early when ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port}")


def cpu_of(pid: int) -> float:
    """User+sys CPU seconds of another process so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def binary(name: str) -> str:
    found = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)
    if found is None:
        raise RuntimeError(f"{name} is not installed: `./dev test` installs it (apt-get install {name})")
    return found


def stop_processes(procs: Sequence[subprocess.Popen[Any]]) -> None:
    """SIGTERM all, then wait for each (10 s) and kill what does not go."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


class Server:
    """A server process that can be stopped and started again on the same port and data directory."""

    def __init__(self, argv: list[str], port: int) -> None:
        self.argv = argv
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            stop_processes([self.proc])
            self.proc = None


def mosquitto(tmp: Path, extra_conf: str = "") -> Server:
    port = free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nuser root\n{extra_conf}")
    return Server([binary("mosquitto"), "-c", str(conf)], port)


def victoria_metrics(tmp: Path, *extra_args: str) -> Server:
    port = free_port()
    return Server([binary("victoria-metrics"), f"-httpListenAddr=127.0.0.1:{port}",
                   f"-storageDataPath={tmp / 'vm'}", "-retentionPeriod=100y", "-loggerLevel=ERROR", *extra_args],
                  port)


@contextlib.contextmanager
def servers(tmp: Path, *, mosquitto_conf: str = "", vm_args: tuple[str, ...] = ()) -> Iterator[tuple[Server, Server]]:
    """mosquitto and VictoriaMetrics on free ports, started; stopped on exit."""
    broker, vm = mosquitto(tmp, mosquitto_conf), victoria_metrics(tmp, *vm_args)
    try:
        broker.start()
        vm.start()
        yield broker, vm
    finally:
        broker.stop()
        vm.stop()
