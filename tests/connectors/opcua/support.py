"""Helpers of the OPC-UA tests: the simulator in-process or as a real process, and a source runner."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import yaml

from connectors.opcua.config import OpcUaSourceConfig
from connectors.opcua.source import OpcUaSource
from gateway.metrics import Metrics
from gateway.model import Batch, Sample
from simulators.opcua.config import OpcUaSimConfig
from simulators.opcua.server import OpcUaSimulator
from tests.servers import free_port


@contextlib.asynccontextmanager
async def simulator(cfg: dict[str, Any], port: int | None = None) -> AsyncIterator[OpcUaSimulator]:
    sim = OpcUaSimulator(OpcUaSimConfig.model_validate(cfg), port=port or free_port())
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


class Running:
    """A source running in a task, collecting every sample it emits."""

    def __init__(self, source: OpcUaSource) -> None:
        self.source = source
        self.samples: list[Sample] = []
        self.task: asyncio.Task[None] | None = None

    async def emit(self, batch: Batch) -> None:
        self.samples.extend(batch.samples)

    def of(self, tag: str) -> list[Sample]:
        return [s for s in self.samples if s.tag == tag]

    def last(self, tag: str) -> Sample | None:
        got = self.of(tag)
        return got[-1] if got else None


@contextlib.asynccontextmanager
async def running(cfg: dict[str, Any], data_dir: Path, metrics: Metrics | None = None) -> AsyncIterator[Running]:
    source = OpcUaSource("plant", OpcUaSourceConfig.model_validate(cfg), data_dir=str(data_dir), metrics=metrics)
    r = Running(source)
    r.task = asyncio.create_task(source.run(r.emit))
    try:
        yield r
    finally:
        r.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await r.task


class SimProcess:
    """``edge-gateway simulate opcua FILE`` as a real child process, driven through its stdin."""

    def __init__(self, cfg: dict[str, Any], workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.path = workdir / f"sim-{self.port}.yaml"
        self.workdir = workdir
        self.write(cfg)
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def write(self, cfg: dict[str, Any]) -> None:
        self.path.write_text(yaml.safe_dump(cfg))

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli.main", "simulate", "opcua", str(self.path), "--port", str(self.port)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=self.workdir,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # "ready URL ..." or EOF when it failed
        if not line.startswith("ready "):
            self.proc.kill()
            raise RuntimeError(f"simulator did not start: {line!r} (exit {self.proc.wait(5)})")
        self.url = line.split()[1]

    def command(self, text: str) -> str:
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def send(self, text: str) -> None:
        """A command whose answer is not awaited (``stall`` answers only when the stall is over)."""
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def reply(self) -> str:
        """The next answer line (e.g. of an earlier ``send``)."""
        assert self.proc is not None and self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def stats(self) -> dict[str, str]:
        answer = self.command("stats")
        assert answer.startswith("stats "), answer
        return dict(part.split("=", 1) for part in answer.split()[1:])

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None


@contextlib.contextmanager
def sim_process(cfg: dict[str, Any], workdir: Path) -> Iterator[SimProcess]:
    p = SimProcess(cfg, workdir)
    p.start()
    try:
        yield p
    finally:
        p.stop()
