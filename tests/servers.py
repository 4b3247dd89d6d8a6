"""Real servers for integration tests: mosquitto and VictoriaMetrics, each started on a free port on
127.0.0.1 with its own data directory, and stopped afterwards. A missing binary is an error, never a skip:
``./dev test`` installs them."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, proc: subprocess.Popen[bytes], deadline_s: float = 15.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {deadline_s}s")


def _binary(name: str, *extra_dirs: str) -> str:
    found = shutil.which(name) or next(
        (str(Path(d) / name) for d in extra_dirs if (Path(d) / name).exists()), None
    )
    if not found:
        raise RuntimeError(f"{name} is not installed: run the tests with ./dev test (installs it as root)")
    return found


def stop_process(proc: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@dataclass(frozen=True)
class Mosquitto:
    port: int
    data_dir: Path


@contextmanager
def mosquitto(workdir: Path, *, port: int | None = None, listener_config: str = "",
              allow_anonymous: bool = True) -> Iterator[Mosquitto]:
    """Start mosquitto; pass the ``port`` and ``workdir`` of a stopped one to restart it with its
    persisted sessions. ``listener_config`` adds lines after the listener (TLS files, password_file)."""
    binary = _binary("mosquitto", "/usr/sbin")
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"per_listener_settings false\nlistener {port} 127.0.0.1\n{listener_config}"
        f"allow_anonymous {str(allow_anonymous).lower()}\nuser root\n"
        f"persistence true\npersistence_location {workdir}/\nmax_queued_messages 1000000\n"
    )
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, proc)
        yield Mosquitto(port, workdir)
    finally:
        stop_process(proc)


@dataclass(frozen=True)
class VictoriaMetrics:
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def force_flush(self) -> None:
        urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=5).read()


@contextmanager
def victoria_metrics(workdir: Path, *, port: int | None = None) -> Iterator[VictoriaMetrics]:
    """Start VictoriaMetrics; pass the ``port`` and ``workdir`` of a stopped one to restart it."""
    binary = _binary("victoria-metrics")
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [binary, f"-httpListenAddr=127.0.0.1:{port}", f"-storageDataPath={workdir}", "-retentionPeriod=100y",
         "-loggerLevel=ERROR"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port, proc)
        yield VictoriaMetrics(port)
    finally:
        stop_process(proc)
