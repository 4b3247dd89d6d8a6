"""Server processes beside the gateway, for the benchmarks and the tests (``tests/servers.py`` builds its
fixtures on these): free ports, waiting for a listener, mosquitto and VictoriaMetrics processes that can be
stopped and started again, a 3-node nats-server cluster serving MQTT whose nodes can be killed and restarted,
another process's CPU time. A missing binary is an error, never a skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
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


class NatsNode:
    """One nats-server of a cluster: MQTT, JetStream (its own store dir) and cluster routes, on fixed ports so
    it can be killed and started again as the same member with the same store."""

    def __init__(self, name: str, workdir: Path, *, cluster: str, cluster_port: int,
                 route_ports: Sequence[int]) -> None:
        self.name = name
        self.dir = workdir
        self.client_port, self.mqtt_port, self.http_port = free_port(), free_port(), free_port()
        self.cluster_port = cluster_port
        routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in route_ports)
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "nats.conf"
        self.conf.write_text(
            f"server_name: {name}\nlisten: 127.0.0.1:{self.client_port}\nhttp: 127.0.0.1:{self.http_port}\n"
            f"jetstream {{ store_dir: \"{workdir / 'js'}\" }}\n"
            f"cluster {{ name: {cluster}, listen: 127.0.0.1:{self.cluster_port}, routes: [{routes}] }}\n"
            f"mqtt {{ listen: 127.0.0.1:{self.mqtt_port} }}\n"
        )
        self.log = workdir / "nats.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        """``127.0.0.1:<mqtt port>``, as the MQTT sink's ``hosts`` takes it."""
        return f"127.0.0.1:{self.mqtt_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if self.running:
            return
        with self.log.open("ab") as log:  # appended across restarts: one file tells the node's story
            self.proc = subprocess.Popen([binary("nats-server"), "-c", str(self.conf)], stdout=log,
                                         stderr=subprocess.STDOUT)

    def kill(self) -> None:
        """SIGKILL, as a crashed machine: no goodbye to clients or to the other nodes."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            stop_processes([self.proc])
            self.proc = None

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=1) as r:
            return json.loads(r.read())

    def meta_leader(self) -> str | None:
        """The JetStream meta leader this node knows of (None: none yet, or the node does not answer)."""
        try:
            leader = self._get("/jsz").get("meta_cluster", {}).get("leader")
        except (OSError, ValueError):
            return None
        return leader or None

    def ready(self) -> bool:
        """Sees a JetStream meta leader and accepts an MQTT session (CONNACK 0)."""
        return self.running and self.meta_leader() is not None and self.mqtt_accepts()

    def mqtt_accepts(self, timeout: float = 5.0) -> bool:
        """An MQTT 3.1.1 CONNECT is answered with CONNACK 0. A node creates its MQTT assets in JetStream
        (sessions, retained messages: R3 streams and a consumer of its own) at its first MQTT client, which
        can stall while a peer is down: the cluster is ready once every node has done that."""
        client_id = f"ready-{self.name}".encode()
        # CONNECT: protocol "MQTT" level 4, flags 0x02 (clean session), keep-alive 10 s, the client id
        body = b"\x00\x04MQTT\x04\x02\x00\x0a" + len(client_id).to_bytes(2, "big") + client_id
        try:
            with socket.create_connection(("127.0.0.1", self.mqtt_port), timeout=timeout) as s:
                s.sendall(bytes([0x10, len(body)]) + body)
                ack = b""
                while len(ack) < 4:
                    chunk = s.recv(4 - len(ack))
                    if not chunk:
                        return False
                    ack += chunk
                s.sendall(b"\xe0\x00")  # DISCONNECT
                return ack[0] == 0x20 and ack[3] == 0
        except OSError:
            return False


class NatsCluster:
    """A nats-server cluster on 127.0.0.1 serving MQTT 3.1.1, QoS 1 sessions in replicated JetStream (R3).

    ``start`` returns once every node accepts MQTT connections and the JetStream cluster has a meta leader;
    ``kill`` SIGKILLs one node and ``restart`` brings it back on its ports and store dir, waiting until it is
    ready again. A node's log is ``<workdir>/<name>/nats.log``."""

    def __init__(self, workdir: Path, size: int = 3, name: str = "edgegw") -> None:
        route_ports = [free_port() for _ in range(size)]
        self.nodes = [NatsNode(f"n{i + 1}", workdir / f"n{i + 1}", cluster=name, cluster_port=port,
                               route_ports=route_ports) for i, port in enumerate(route_ports)]

    @property
    def hosts(self) -> list[str]:
        """The nodes' MQTT listeners, ``host:port``, in node order."""
        return [n.host for n in self.nodes]

    def node(self, name: str) -> NatsNode:
        return next(n for n in self.nodes if n.name == name)

    def start(self, timeout: float = 60.0) -> None:
        for n in self.nodes:
            n.start()
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until every running node is ready (MQTT accepts, a meta leader is known); fails early when a node
        that should run exits, and at the deadline with each node's state."""
        deadline = time.monotonic() + timeout
        while True:
            waiting = [n for n in self.nodes if n.proc is not None and not n.ready()]
            dead = [n for n in waiting if not n.running]
            if dead:
                raise RuntimeError(f"nats-server {dead[0].name} exited; its log: {dead[0].log}\n"
                                   + dead[0].log.read_text(errors="replace")[-2000:])
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise TimeoutError("nats cluster not ready within "
                                   f"{timeout:g} s: {', '.join(n.name for n in waiting)} (logs under {waiting[0].dir})")
            time.sleep(0.1)

    def kill(self, name: str) -> NatsNode:
        node = self.node(name)
        node.kill()
        return node

    def restart(self, name: str, timeout: float = 60.0) -> NatsNode:
        node = self.node(name)
        node.start()
        self.wait_ready(timeout)
        return node

    def heal(self, timeout: float = 60.0) -> None:
        """Start every node that is not running (killed by a test) and wait until all are ready."""
        for n in self.nodes:
            if not n.running:
                n.proc = None
                n.start()
        self.wait_ready(timeout)

    def stop(self) -> None:
        stop_processes([n.proc for n in self.nodes if n.proc is not None])
        for n in self.nodes:
            n.proc = None


@contextlib.contextmanager
def nats_cluster(tmp: Path, size: int = 3) -> Iterator[NatsCluster]:
    """A started nats-server cluster (MQTT on every node); stopped on exit."""
    cluster = NatsCluster(tmp, size)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
