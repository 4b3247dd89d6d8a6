"""Plug-in descriptor of the simulated lines a config serves (entry point ``edge_gateway.services:
simulated-lines``; the ``simulators:`` config section, used by the embedded default).

Each line runs as ``edge-gateway simulate`` in a child process of the gateway: the demo still comes up
with one command, but the line's OPC-UA and Modbus servers and its model do not live in the gateway's
memory or take its event loop (the gateway process is measured as it would run against real PLCs), and
the child dies with the gateway (``PR_SET_PDEATHSIG``). Its output goes to ``<data_dir>/simulators/
<line>.log``. Imports no protocol library.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.services import SIMULATED_LINES, ServiceError, ServicePlugin

if TYPE_CHECKING:
    from gateway.config.loader import GatewayConfig
    from gateway.config.site import EmbeddedLineConfig

START_TIMEOUT = 60.0
"""Seconds a line may take to listen on both of its ports (a child's first start imports asyncua)."""
STOP_TIMEOUT = 5.0


class EmbeddedLineError(ServiceError):
    """A simulated line could not be served (its scenario, its ports, its process)."""


class _Line:
    def __init__(self, name: str, proc: subprocess.Popen[bytes], host: str, modbus_port: int, opcua_port: int,
                 opcua_path: str, log: Path) -> None:
        self.name, self.proc, self.host = name, proc, host
        self.modbus_port, self.opcua_port, self.opcua_path = modbus_port, opcua_port, opcua_path
        self.log = log

    def describe(self) -> str:
        return (f"{self.name}: modbus {self.host}:{self.modbus_port}, "
                f"opc.tcp://{self.host}:{self.opcua_port}{self.opcua_path} (pid {self.proc.pid}, log {self.log})")


class _Lines:
    def __init__(self, lines: list[_Line]) -> None:
        self._lines = lines

    def describe(self) -> list[str]:
        return [line.describe() for line in self._lines]

    async def stop(self) -> None:
        await asyncio.to_thread(_stop, [line.proc for line in self._lines])


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(STOP_TIMEOUT)


_prctl: Any
try:  # resolved here: between fork and exec the child does as little as possible
    _prctl = ctypes.CDLL(None).prctl
except (OSError, AttributeError):  # not Linux: the child outlives a killed gateway
    _prctl = None


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if _prctl is not None:
        _prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: SIGTERM when the gateway dies, even by SIGKILL


def _listening(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def _start_line(name: str, cfg: EmbeddedLineConfig, base: Path, logs: Path) -> _Line:
    from pydantic import ValidationError

    from simulators.line.scenario import load_scenario
    from simulators.scenarios import scenario_path

    path = scenario_path(cfg.scenario)
    if not path.is_absolute() and not path.is_file():
        path = base / path
    try:
        scenario = load_scenario(path)
    except (OSError, ValueError, ValidationError) as exc:
        raise EmbeddedLineError(f"simulators.{name}.scenario: {path}: {exc}") from exc
    modbus_port = cfg.modbus_port or scenario.modbus.port
    opcua_port = cfg.opcua_port or scenario.opcua.port
    for port in (modbus_port, opcua_port):
        if _listening(cfg.host, port):  # a second demo, or something else on the scenario's port
            raise EmbeddedLineError(f"simulators.{name}: cannot serve {scenario.name} on {cfg.host}: port {port} "
                                    "is already in use")
    log = logs / f"{name}.log"
    argv = [sys.executable, "-m", "gateway.cli.main", "simulate", str(path), "--host", cfg.host,
            "--modbus-port", str(modbus_port), "--opcua-port", str(opcua_port), "--speed", str(cfg.speed)]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                preexec_fn=_die_with_parent)
    line = _Line(name, proc, cfg.host, modbus_port, opcua_port, scenario.opcua.path, log)
    deadline = time.monotonic() + START_TIMEOUT
    while not (_listening(cfg.host, modbus_port) and _listening(cfg.host, opcua_port)):
        if proc.poll() is not None:
            raise EmbeddedLineError(f"simulators.{name}: the line stopped at start (exit {proc.returncode}): "
                                    f"{_tail(log) or 'no output'}")
        if time.monotonic() > deadline:
            _stop([proc])
            raise EmbeddedLineError(f"simulators.{name}: not listening after {START_TIMEOUT:.0f} s (log {log})")
        time.sleep(0.05)
    return line


def _dirs(cfg: GatewayConfig) -> tuple[Path, Path]:
    """Where relative scenario paths start (the config file's directory; the cwd for the embedded default),
    and the folder of the lines' logs (created)."""
    from gateway.config.loader import EMBEDDED

    base = Path(cfg.path).parent if cfg.path != EMBEDDED else Path.cwd()
    logs = Path(cfg.data_dir).expanduser() / "simulators"
    logs.mkdir(parents=True, exist_ok=True)
    return base, logs


async def _serve(cfg: GatewayConfig) -> _Lines:
    base, logs = await asyncio.to_thread(_dirs, cfg)
    started: list[_Line] = []
    try:
        for name, line_cfg in cfg.simulators.items():
            started.append(await asyncio.to_thread(_start_line, name, line_cfg, base, logs))
    except BaseException:
        await asyncio.to_thread(_stop, [line.proc for line in started])
        raise
    return _Lines(started)


LINES = ServicePlugin(kind=SIMULATED_LINES, serve=_serve, requires=("asyncua", "pymodbus"), extra="modbus,opcua")
