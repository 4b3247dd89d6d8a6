"""Record a simulated line, replay the recording, record the replay: the same series comes back."""

from __future__ import annotations

import asyncio
import csv
import itertools
import select
import signal
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from connectors.modbus.adapter import ModbusClient
from connectors.modbus.codec import decode
from connectors.recording.files import RecordedSample, read_recording
from tests import REPO
from tests.servers import free_port

pytestmark = pytest.mark.integration

SCENARIO = """
name: rr-line
seed: 5
tick: 100ms
opcua: {namespace: "urn:test:rr", path: /line, folder: RR}
machines:
  mixer:
    unit: 1
    rate: 5
    signals:
      - {name: speed, running: {signal: sine, center: 100, amplitude: 10, period: 2s}, stopped: 0}
      - {name: temp, running: {signal: random_walk, low: 50, high: 60, step: 0.5}, stopped: 20}
      - {name: count, kind: good_count}
      - {name: state, kind: state}
      - {name: label, kind: text, text: batch-7}
"""


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "gateway.cli.main", *args]


def _start(args: list[str], ready: str, timeout: float = 20.0) -> subprocess.Popen[str]:
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        r, _, _ = select.select([proc.stdout], [], [], 0.2)
        if r:
            line = proc.stdout.readline()
            seen.append(line)
            if line.startswith(ready):
                return proc
            if not line and proc.poll() is not None:
                break
    proc.kill()
    raise AssertionError(f"{args} did not print {ready!r}: {''.join(seen)} {proc.stderr.read() if proc.stderr else ''}")


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _run(*args: str, timeout: float = 40) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(_cli(*args), capture_output=True, text=True, timeout=timeout, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


async def _read_float64(port: int, unit: int, address: int) -> float:
    client = ModbusClient("tcp", host="127.0.0.1", port=port, timeout=2.0)
    assert await client.connect()
    try:
        value = decode(list(await client.read("input", address, 4, unit)), "float64", "ABCD", 0)  # type: ignore[arg-type]
    finally:
        client.close()
    assert isinstance(value, float)
    return value


def _series(samples: list[RecordedSample]) -> dict[tuple[str, str], list[RecordedSample]]:
    out: dict[tuple[str, str], list[RecordedSample]] = defaultdict(list)
    for s in sorted(samples, key=lambda s: s.time_ns):
        out[s.device, s.tag].append(s)
    return out


@pytest.mark.timeout(120)
def test_record_replay_collect_gives_the_recorded_series(tmp_path: Path) -> None:
    scenario = tmp_path / "line.yaml"
    scenario.write_text(SCENARIO)
    sim_ua, sim_mb = free_port(), free_port()
    gw1, rec1 = tmp_path / "gw1.yaml", tmp_path / "first.csv"
    _run("simulate", str(scenario), "--opcua-port", str(sim_ua), "--emit-config", str(gw1),
         "--emit-interval", "100ms")
    sim = _start(_cli("simulate", str(scenario), "--opcua-port", str(sim_ua), "--modbus-port", str(sim_mb)), "ready")
    try:
        _run("record", "-c", str(gw1), "-o", str(rec1), "--duration", "4s")
    finally:
        _stop(sim)
    first = _series(list(read_recording(rec1)))
    moving = [k for k, v in first.items() if len(v) >= 10]
    counts = {k: len(v) for k, v in first.items()}
    assert {("mixer", "speed"), ("mixer", "temp"), ("mixer", "count")} <= set(moving), counts
    assert first["mixer", "label"][0].value == "batch-7"

    rp_ua, rp_mb = free_port(), free_port()
    gw2, rec2 = tmp_path / "gw2.yaml", tmp_path / "second.parquet"
    _run("simulate", "--replay", str(rec1), "--opcua-port", str(rp_ua), "--emit-config", str(gw2),
         "--emit-interval", "100ms")
    # the recorder starts first (it retries until the replay listens), so it misses little of the replay
    recorder = subprocess.Popen(_cli("record", "-c", str(gw2), "-o", str(rec2), "--duration", "12s"),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    replay = _start(_cli("simulate", "--replay", str(rec1), "--loop", "--opcua-port", str(rp_ua),
                         "--modbus-port", str(rp_mb)), "ready")
    try:
        _, err = recorder.communicate(timeout=40)
        assert recorder.returncode == 0, err[-3000:]
        # Modbus serves the same replayed values, where the replay's register map says
        _run("simulate", "--replay", str(rec1), "--export", str(tmp_path / "maps"))
        with open(tmp_path / "maps" / "replay-registers.csv", newline="") as f:
            row = next(r for r in csv.DictReader(f) if (r["machine"], r["tag"]) == ("mixer", "speed"))
        assert (row["table"], row["type"]) == ("input", "float64")
        served = asyncio.run(_read_float64(rp_mb, int(row["unit_id"]), int(row["address"])))
        assert served in {s.value for s in first["mixer", "speed"]}
    finally:
        _stop(replay)
    second = _series(list(read_recording(rec2)))
    every = sorted({s.time_ns / 1e9 for series in first.values() for s in series})
    period = every[-1] - every[0] + statistics.median(b - a for a, b in itertools.pairwise(every))
    for key in moving:
        want = [s.value for s in first[key]]
        got = [s.value for s in second[key] if s.quality.label == "good"]
        n = len(want)
        # the replay loops and the recorder joins it somewhere: what it got is the recorded series,
        # cyclically, from some sample on (its first value is the one current at subscription time),
        # and at least one whole pass of it
        assert len(got) >= n, (key, n, len(got))
        starts = [i for i in range(n) if all(got[j] == want[(i + j) % n] for j in range(len(got)))]
        assert starts, (key, want, got)
        # original timing: a pass lasts the whole recording's span plus its median gap, so the gap over
        # the loop is what is left of that. Judged on the median gap error (one late sample on a loaded
        # 2-core machine is scheduling, not replay timing) and on the total span (replay speed)
        t1 = [s.time_ns for s in first[key]]
        gaps1 = [(b - a) / 1e9 for a, b in itertools.pairwise(t1)]
        wrap = period - (t1[-1] - t1[0]) / 1e9
        t2 = [s.time_ns for s in second[key] if s.quality.label == "good"]
        gaps2 = [(b - a) / 1e9 for a, b in itertools.pairwise(t2)][1:]  # the first sample: subscription time
        # (a periodic signal can match at several starts: the timing must fit one of them)
        best = min(
            ((statistics.median(abs(a - b) for a, b in zip(gaps2, want_gaps, strict=True)),
              abs(sum(gaps2) - sum(want_gaps)) / sum(want_gaps))
             for want_gaps in ([[*gaps1, wrap][(i + 1 + j) % n] for j in range(len(gaps2))] for i in starts)),
        )
        median_error, span_error = best
        assert median_error < 0.02 and span_error < 0.1, (key, best)


@pytest.mark.timeout(90)
def test_record_a_config_that_serves_its_own_line(tmp_path: Path) -> None:
    """`simulators:` in the config: record starts the line in its own process and records it."""
    repo = REPO
    mb, ua = free_port(), free_port()
    text = (repo / "configs" / "cnc-gateway.yaml").read_text()
    text = text.replace("port: 5021", f"port: {mb}").replace(":4841/", f":{ua}/")
    text = text.replace("./data/cnc-cell", str(tmp_path / "data"))
    text += f"\nsimulators:\n  cell: {{scenario: cnc-cell, modbus_port: {mb}, opcua_port: {ua}}}\n"
    cfg = tmp_path / "cell.yaml"
    cfg.write_text(text)
    out = tmp_path / "cell.csv"
    res = _run("record", "-c", str(cfg), "-o", str(out), "--duration", "4s")
    series = _series(list(read_recording(out)))
    assert {d for d, _ in series} == {"loader", "cnc_1", "cnc_2", "power_meter"}, res.stderr
    assert all(s.quality.label == "good" for v in series.values() for s in v)
    assert series["cnc_1", "program"][-1].value  # a running CNC's program name, over OPC-UA
    assert "recorded" in res.stderr
