"""Real servers for integration tests: mosquitto, VictoriaMetrics and a 3-node nats-server cluster (MQTT
3.1.1 on each node), each started on free ports on 127.0.0.1 with its own data directories, and stopped
afterwards. A missing binary is an error, never a skip: ``./dev test`` installs them."""

from __future__ import annotations

import subprocess
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.servers import NatsCluster, NatsNode, binary, free_port, nats_cluster, stop_processes, wait_port

__all__ = ["Mosquitto", "NatsCluster", "NatsNode", "VictoriaMetrics", "free_port", "mosquitto", "nats_cluster",
           "stop_processes", "victoria_metrics", "wait_port"]


@dataclass(frozen=True)
class Mosquitto:
    port: int
    data_dir: Path


@contextmanager
def mosquitto(workdir: Path, *, port: int | None = None, listener_config: str = "",
              allow_anonymous: bool = True) -> Iterator[Mosquitto]:
    """Start mosquitto; pass the ``port`` and ``workdir`` of a stopped one to restart it with its
    persisted sessions. ``listener_config`` adds lines after the listener (TLS files, password_file)."""
    exe = binary("mosquitto")
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"per_listener_settings false\nlistener {port} 127.0.0.1\n{listener_config}"
        f"allow_anonymous {str(allow_anonymous).lower()}\nuser root\n"
        f"persistence true\npersistence_location {workdir}/\nmax_queued_messages 1000000\n"
    )
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_port(port, proc)
        yield Mosquitto(port, workdir)
    finally:
        stop_processes([proc])


@dataclass(frozen=True)
class VictoriaMetrics:
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def force_flush(self) -> None:
        urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=5).read()


@contextmanager
def victoria_metrics(workdir: Path, *, port: int | None = None, flags: Sequence[str] = ()) -> Iterator[VictoriaMetrics]:
    """Start VictoriaMetrics; pass the ``port`` and ``workdir`` of a stopped one to restart it, and ``flags``
    for more command-line flags (``-influx.maxLineSize=1MiB``)."""
    exe = binary("victoria-metrics")
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [exe, f"-httpListenAddr=127.0.0.1:{port}", f"-storageDataPath={workdir}", "-retentionPeriod=100y",
         "-loggerLevel=ERROR", *flags],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        wait_port(port, proc)
        yield VictoriaMetrics(port)
    finally:
        stop_processes([proc])
