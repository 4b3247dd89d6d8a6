"""``edge-gateway record`` as a user runs it: a subprocess recording a synthetic line to CSV or Parquet."""

from __future__ import annotations

import itertools
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from connectors.recording.files import RecordedSample, read_recording

CMD = [sys.executable, "-m", "gateway.cli.main", "record"]
SUMMARY = re.compile(r"^recorded (\d+) samples of (\d+) tags from (\d+) devices to (.+)$", re.MULTILINE)
INTERVAL_NS = 200_000_000


def write_config(tmp_path: Path, **source: object) -> Path:
    cfg = {
        "data_dir": str(tmp_path / "data"),
        "log": {"level": "warning"},
        "sources": {
            "line": {"type": "synthetic", "interval": "200ms", "devices": {
                "press": {"tags": [
                    {"name": "count", "signal": "counter"},
                    {"name": "setpoint", "signal": "constant", "value": 42.5, "unit": "bar"},
                ]},
                "filler": {"tags": [{"name": "bottles", "signal": "counter", "start": 10, "step": 2}]},
            }, **source},
            "other": {"type": "synthetic", "interval": "1s", "devices": {
                "mixer": {"tags": [{"name": "speed", "signal": "constant", "value": 3}]},
            }},
        },
        # replaced by the recording: the command must not write the store
        "sinks": {"store": {"type": "sqlite"}},
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def record(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CMD, *args], capture_output=True, text=True, timeout=50, cwd=cwd,
                          env={**os.environ, **(env or {})})


def by_series(rows: list[RecordedSample]) -> dict[tuple[str, str], list[RecordedSample]]:
    out: dict[tuple[str, str], list[RecordedSample]] = defaultdict(list)
    for r in rows:
        out[(r.device, r.tag)].append(r)
    return out


def check_synthetic(rows: list[RecordedSample], min_ticks: int) -> int:
    """The rows are what the configured generators give, one batch every ~200 ms; returns the ticks."""
    series = by_series(rows)
    assert set(series) == {("press", "count"), ("press", "setpoint"), ("filler", "bottles")}
    ticks = len(series[("press", "count")])
    assert ticks >= min_ticks
    assert all(len(s) == ticks for s in series.values())
    assert [r.value for r in series[("press", "count")]] == list(range(ticks))
    assert [r.value for r in series[("filler", "bottles")]] == list(range(10, 10 + 2 * ticks, 2))
    assert {(r.value, type(r.value), r.unit) for r in series[("press", "setpoint")]} == {(42.5, float, "bar")}
    assert {(r.source, r.quality.label, r.status) for r in rows} == {("line", "good", 0)}
    times = [r.time_ns for r in series[("press", "count")]]
    # one timestamp per tick, shared by the tick's tags
    assert [r.time_ns for r in series[("filler", "bottles")]] == times
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(0.5 * INTERVAL_NS < g < 2.5 * INTERVAL_NS for g in gaps), gaps
    assert abs(statistics.mean(gaps) - INTERVAL_NS) < 0.1 * INTERVAL_NS
    return ticks


@pytest.mark.parametrize("name", ["out.csv", "out.csv.gz", "out.parquet"])
def test_records_the_sources_for_a_duration(tmp_path: Path, name: str) -> None:
    config = write_config(tmp_path)
    out = tmp_path / name
    out.write_text("an old recording that -o overwrites")
    started = time.monotonic()
    res = record("-c", str(config), "-o", name, "--duration", "3s", "--sources", "line", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert time.monotonic() - started < 20
    rows = list(read_recording(out))
    ticks = check_synthetic(rows, min_ticks=12)
    assert ticks <= 18  # stopped after ~3 s (15 intervals), not later
    summary = SUMMARY.search(res.stderr)
    assert summary is not None, res.stderr
    assert summary.groups() == (str(len(rows)), "3", "2", name)
    # the recording used its own spool and left the config's data_dir alone (no spool, no store)
    assert not (tmp_path / "data" / "spool.db").exists()
    assert not (tmp_path / "data" / "store.db").exists()


def test_sigint_stops_cleanly_with_everything_written(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    out = tmp_path / "out.parquet"
    proc = subprocess.Popen([*CMD, "-c", str(config), "-o", str(out), "--duration", "1h"],
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        # The sink creates the file once the runtime runs; then let a few ticks happen.
        deadline = time.monotonic() + 20
        while not out.exists():
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the recording never started"
            time.sleep(0.05)
        recording_since = time.monotonic()
        while time.monotonic() - recording_since < 1.5:
            assert proc.poll() is None, proc.communicate()[1]
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    rows = list(read_recording(out))  # the Parquet footer was written
    ticks = check_synthetic([r for r in rows if r.source == "line"], min_ticks=5)
    assert {r.source for r in rows} == {"line", "other"}
    summary = SUMMARY.search(stderr)
    assert summary is not None, stderr
    # every sample the sources read before the stop is in the file, none lost in the spool
    assert summary.groups()[:3] == (str(len(rows)), "4", "3")
    assert len(rows) == 3 * ticks + len([r for r in rows if r.source == "other"])


def test_bad_config_exits_2_with_file_and_path(tmp_path: Path) -> None:
    config = write_config(tmp_path, interval="soon")
    res = record("-c", str(config), "-o", "out.csv", "--duration", "1s", cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.startswith(f"{config}: sources.line.interval: "), res.stderr
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "out.xlsx"], "out.xlsx: unknown recording format"),
        (["-o", "missing/out.csv"], "missing/out.csv: cannot write"),
        (["-o", "out.csv", "--sources", "line,nope"], "--sources: no source nope"),
        (["-o", "out.csv", "--duration", "soon"], "--duration: expected a duration"),
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    res = record("-c", str(write_config(tmp_path)), *args, cwd=tmp_path)
    assert res.returncode == 2
    assert f"edge-gateway record: {message}" in res.stderr, res.stderr


def test_parquet_without_pyarrow_exits_2_saying_how_to_install(tmp_path: Path) -> None:
    blocked = tmp_path / "blocked"
    (blocked / "pyarrow").mkdir(parents=True)
    (blocked / "pyarrow" / "__init__.py").write_text('raise ImportError("pyarrow is blocked for this test")\n')
    res = record("-c", str(write_config(tmp_path)), "-o", "out.parquet", cwd=tmp_path,
                 env={"PYTHONPATH": str(blocked)})
    assert res.returncode == 2
    assert "out.parquet: Parquet needs pyarrow: pip install 'shopfloor-edge-gateway[parquet]'" in res.stderr, res.stderr
