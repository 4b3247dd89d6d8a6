"""A point VictoriaMetrics rejects, end to end: the InfluxDB sink isolates it and writes the rest, its
samples land in the spool's dead letters, ``deadletters list`` shows them while the gateway runs, replay
is refused while it runs, refused again by the same server, and delivered (and removed) once the server
takes lines that long."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

import pytest
import structlog
import yaml

from gateway import plugins
from gateway.cli.main import main
from gateway.config.base import SourceConfigBase
from gateway.config.loader import load_config
from gateway.contracts import Emit
from gateway.deadletters import DeadLetter, connect, read
from gateway.health import SourceHealth
from gateway.logs import configure_logging
from gateway.model import Batch, Quality, Sample
from gateway.plugins import BuildContext, SourcePlugin
from gateway.runtime import Runtime
from tests.connectors.influxdb.integration.test_sink import poll_export
from tests.servers import victoria_metrics
from tests.waiting import until

WAVE = [round(i / 7, 6) for i in range(40_000)]  # a vibration waveform: its JSON text is ~360 KB
LONG_LINES = "-influx.maxLineSize=4MiB"  # VictoriaMetrics refuses lines over 256 KiB by default


class WaveConfig(SourceConfigBase):
    type: Literal["wave"]


class WaveSource:
    """One scan: a pump's RMS and waveform (one point too long for the server) and a motor's temperature."""

    def __init__(self, name: str, config: WaveConfig, ctx: BuildContext) -> None:
        self.name = name
        self.health = SourceHealth(name, ["pump", "motor"])
        self.ts = time.time_ns() // 1_000_000 * 1_000_000  # whole milliseconds: compared with VM's export

    async def run(self, emit: Emit) -> None:
        ts = self.ts
        await emit(Batch(self.name, [Sample("motor", "temp", 40.5, Quality.GOOD, 0, ts, ts),
                                     Sample("pump", "rms", 1.25, Quality.GOOD, 0, ts, ts),
                                     Sample("pump", "waveform", WAVE, Quality.GOOD, 0, ts, ts)]))
        await asyncio.Event().wait()  # until stopped

    async def close(self) -> None:
        """Nothing held."""


@pytest.fixture
def wave_plugin() -> Iterator[None]:
    with plugins.registered(SourcePlugin("wave", WaveConfig, WaveSource)):
        yield


@pytest.fixture(autouse=True)
def _quiet_logs() -> Iterator[None]:
    """The gateway's and replay's log lines go to a buffer, not into the commands' captured output."""
    root = logging.getLogger()
    handlers, level, config = root.handlers[:], root.level, structlog.get_config()
    configure_logging("info", "json", io.StringIO())
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.configure(**config)


@asynccontextmanager
async def running(config: Path) -> AsyncIterator[Runtime]:
    runtime = Runtime(load_config(config))
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    await asyncio.wait_for(runtime.started.wait(), 10)
    try:
        yield runtime
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The command in this process (the test's source plug-in is registered here), off the event loop."""
    capsys.readouterr()
    code = await asyncio.to_thread(main, ["deadletters", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def letters(spool: Path) -> list[DeadLetter]:
    conn = connect(spool)
    try:
        return read(conn)
    finally:
        conn.close()


async def test_a_point_victoria_metrics_rejects_is_dead_lettered_listed_and_replayed(
        tmp_path: Path, wave_plugin: None, capsys: pytest.CaptureFixture[str]) -> None:
    vm_dir, spool = tmp_path / "vm", tmp_path / "data" / "spool.db"
    with victoria_metrics(vm_dir) as vm:
        config = tmp_path / "gw.yaml"
        config.write_text(yaml.safe_dump({
            "data_dir": str(tmp_path / "data"), "http": {"enabled": False},
            "sources": {"line": {"type": "wave"}},
            "sinks": {"tsdb": {"type": "influxdb", "url": vm.url, "measurement": "dlwave",
                               "tags": {"device": "{device}"}}},
        }))
        async with running(config) as runtime:
            source = runtime.sources["line"]
            assert isinstance(source, WaveSource)
            ts = source.ts
            (letter,) = await until(lambda: letters(spool), timeout=20, what="the rejected point's dead letter")
            assert (letter.sink, letter.seq, letter.source) == ("tsdb", 1, "line")
            assert [(s.device, s.tag, s.value) for s in letter.samples] == [("pump", "rms", 1.25),
                                                                            ("pump", "waveform", WAVE)]
            assert letter.error.startswith("HTTP 400: ") and "too long line" in letter.error
            await until(lambda: runtime.metrics.sink_dead_lettered.labels("tsdb")._value.get() == 2,
                        what="the dead-lettered samples counted")
            # the good point of the same write went in (VictoriaMetrics may keep it twice: it stores the lines
            # before the one it refuses, and the split sends it again; same series and time, same value)
            rows = await poll_export(vm, '{__name__=~"dlwave_.*"}', lambda rows: len(rows) >= 1)
            assert [(r["metric"]["__name__"], set(zip(r["values"], r["timestamps"], strict=True)))  # type: ignore
                    for r in rows] == [("dlwave_temp", {(40.5, ts // 1_000_000)})]

            code, out, _ = await cli(capsys, "list", "-c", str(config))  # while the gateway runs
            assert code == 0
            header, row = out.splitlines()
            assert header.split() == ["ID", "TIME", "SINK", "SOURCE", "SAMPLES", "ERROR"]
            assert row.split()[:5] == ["1", time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(letter.created_ns // 10**9))
                                       + f".{letter.created_ns // 10**6 % 1000:03d}Z", "tsdb", "line", "2"]
            assert "too long line" in row and len(row) < 250  # the error on one line, cut
            code, out, _ = await cli(capsys, "list", "-c", str(config), "--json")
            (doc,) = json.loads(out)
            assert [(s["device"], s["tag"], s["value"], s["quality"]) for s in doc["samples"]] == [
                ("pump", "rms", 1.25, "good"), ("pump", "waveform", WAVE, "good")]

            code, _, err = await cli(capsys, "replay", "-c", str(config))
            assert code == 2 and "the gateway is running" in err

        # stopped; the same server refuses the point again: kept, with the new refusal
        code, out, _ = await cli(capsys, "replay", "-c", str(config))
        assert code == 1
        assert out.splitlines()[0].startswith("dead letter 1 (2 samples of line) -> tsdb: refused again, kept 2 "
                                              "samples: HTTP 400: ")
        (kept,) = letters(spool)
        assert kept.samples == letter.samples and "too long line" in kept.error

    # the cause fixed: the server takes long lines now
    with victoria_metrics(vm_dir, port=vm.port, flags=[LONG_LINES]) as vm:
        code, out, _ = await cli(capsys, "replay", "-c", str(config))
        assert (code, out.splitlines()) == (0, ["dead letter 1 (2 samples of line) -> tsdb: delivered, removed",
                                                "1 of 1 dead letters delivered and removed"])
        assert letters(spool) == []
        rows = await poll_export(vm, '{__name__="dlwave_rms"}', lambda rows: len(rows) == 1)
        assert (rows[0]["values"], rows[0]["timestamps"]) == ([1.25], [ts // 1_000_000])
        assert await cli(capsys, "list", "-c", str(config)) == (0, "", "edge-gateway deadletters: no dead letters\n")
