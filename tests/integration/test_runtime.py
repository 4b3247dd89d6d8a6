"""The runtime end to end: real config files, real spool, supervisors, shutdown."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway.config.loader import load_config
from gateway.runtime import Runtime
from tests import fakes
from tests.fakes import RecordingSink
from tests.waiting import until as wait_until


def write_config(tmp_path: Path, cfg: dict[str, object]) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({"http": {"port": 0}, **cfg}))  # port 0: never clash with a real gateway
    return path


async def test_failing_sink_keeps_data_and_does_not_stall_others(tmp_path: Path, fake_plugins: None) -> None:
    path = write_config(tmp_path, {
        "data_dir": str(tmp_path / "data"),
        "sources": {"src": {"type": "crashing", "crashes": 0}},
        "sinks": {
            "good": {"type": "recording"},
            "flaky": {"type": "recording", "fail_first": 5, "retry_initial": "10ms", "retry_max": "50ms"},
        },
    })
    runtime = Runtime(load_config(path))
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    await asyncio.wait_for(runtime.started.wait(), 10)
    good, flaky = RecordingSink.instances["good"], RecordingSink.instances["flaky"]
    # The good sink delivers while the flaky one is still failing.
    await wait_until(lambda: len(good.received) >= 5 and flaky.failures >= 1)
    await wait_until(lambda: flaky.failures == 5 and len(flaky.received) >= 40)
    stop.set()
    await asyncio.wait_for(task, 5)
    for sink in (good, flaky):
        values = [s.value for s in sink.received]
        assert values == list(range(len(values))), f"{sink.name}: gap or reorder"
    assert runtime.metrics.sink_failures.labels("flaky", "retryable")._value.get() == 5


async def test_metrics_endpoint_serves_the_registry(tmp_path: Path, fake_plugins: None) -> None:
    path = write_config(tmp_path, {
        "data_dir": str(tmp_path / "data"),
        "sources": {"src": {"type": "crashing", "crashes": 0}},
        "sinks": {"flaky": {"type": "recording", "fail_first": 2, "retry_initial": "10ms", "retry_max": "20ms"}},
    })
    runtime = Runtime(load_config(path))
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    await asyncio.wait_for(runtime.started.wait(), 10)
    flaky = RecordingSink.instances["flaky"]
    await wait_until(lambda: len(flaky.received) >= 10)
    assert runtime.http is not None and runtime.http.port
    body = await asyncio.to_thread(
        lambda: urllib.request.urlopen(f"http://127.0.0.1:{runtime.http.port}/metrics", timeout=5).read().decode()
    )
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(body) for s in fam.samples
    }
    assert samples[("edgegw_sink_failures_total", (("kind", "retryable"), ("sink", "flaky")))] == 2.0
    assert samples[("edgegw_samples_in_total", (("source", "src"),))] >= 10
    assert samples[("edgegw_samples_out_total", (("sink", "flaky"),))] >= 10
    assert samples[("edgegw_component_up", (("component", "source:src"),))] == 1.0
    assert samples[("process_resident_memory_bytes", ())] > 10_000_000

    async def rate_in() -> float:
        text = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{runtime.http.port}/metrics", timeout=5).read().decode()
        )
        return next(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
                    if s.name == "edgegw_samples_in_per_second")

    deadline = time.monotonic() + 10
    while (rate := await rate_in()) == 0:  # the rate gauges refresh once a second
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    assert 20 < rate < 1000  # the source emits one sample every ~5 ms
    with pytest.raises(urllib.error.HTTPError) as err:
        await asyncio.to_thread(urllib.request.urlopen, f"http://127.0.0.1:{runtime.http.port}/nope", timeout=5)
    assert err.value.code == 404
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_permanent_rejection_dead_letters_one_batch_only(tmp_path: Path, fake_plugins: None) -> None:
    path = write_config(tmp_path, {
        "data_dir": str(tmp_path / "data"),
        "sources": {"src": {"type": "crashing", "crashes": 0}},
        "sinks": {"picky": {"type": "recording", "reject_value": 7}},
    })
    runtime = Runtime(load_config(path))
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    await asyncio.wait_for(runtime.started.wait(), 10)
    picky = RecordingSink.instances["picky"]
    await wait_until(lambda: len(picky.received) >= 20)
    stop.set()
    await asyncio.wait_for(task, 5)
    values = [s.value for s in picky.received]
    assert 7 not in values
    assert values[:7] == list(range(7)) and values[7:12] == list(range(8, 13))
    db = sqlite3.connect(tmp_path / "data" / "spool.db")
    assert db.execute("SELECT count(*) FROM dead_letters WHERE sink = 'picky'").fetchone()[0] >= 1


async def test_crashing_source_restarts_without_touching_others(tmp_path: Path, fake_plugins: None) -> None:
    path = write_config(tmp_path, {
        "data_dir": str(tmp_path / "data"),
        "sources": {
            "bad": {"type": "crashing", "crashes": 2, "per_run": 3},
            "steady": {"type": "synthetic", "interval": "10ms",
                       "devices": {"m1": {"tags": [{"name": "c", "signal": "counter"}]}}},
        },
        "sinks": {"all": {"type": "recording"}},
    })
    runtime = Runtime(load_config(path))
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    await asyncio.wait_for(runtime.started.wait(), 10)
    sink = RecordingSink.instances["all"]
    await wait_until(lambda: fakes.CrashingSource.runs >= 3
                     and sum(1 for s in sink.received if s.device == "dev") >= 10, timeout=20)
    stop.set()
    await asyncio.wait_for(task, 5)
    steady = [s.value for s in sink.received if s.device == "m1"]
    assert len(steady) >= 10 and steady == sorted(steady)
    assert runtime.metrics.health.components["source:bad"].restarts == 2
    exported = runtime.metrics.registry.get_sample_value("edgegw_component_restarts_total", {"component": "source:bad"})
    assert exported == 2
    assert runtime.metrics.health.components["source:steady"].restarts == 0


def test_sigterm_exits_zero_within_5s_and_loses_nothing_committed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    path = write_config(tmp_path, {
        "data_dir": str(data),
        "log": {"format": "json"},
        "sources": {"line": {"type": "synthetic", "interval": "5ms", "devices": {
            "m1": {"tags": [{"name": "a", "signal": "counter"}, {"name": "b", "signal": "counter"}]},
            "m2": {"tags": [{"name": "a", "signal": "counter"}]},
        }}},
        "sinks": {"store": {"type": "sqlite"}},
    })
    cmd = [sys.executable, "-m", "gateway.cli.main", "run", "-c", str(path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    store = data / "store.db"
    deadline = time.monotonic() + 20
    rows = 0
    while rows < 300:
        assert time.monotonic() < deadline, "the store never filled"
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        if store.exists():
            try:
                rows = sqlite3.connect(store).execute("SELECT count(*) FROM points").fetchone()[0]
            except sqlite3.OperationalError:
                rows = 0
        time.sleep(0.05)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert time.monotonic() - t0 < 5.0
    stopped = [json.loads(line) for line in err.splitlines() if '"gateway stopped"' in line]
    assert stopped, err
    samples_in = stopped[0]["samples_in"]
    assert samples_in >= 300
    # Everything the first run took in is in the store or still spooled; a second run drains it.
    proc2 = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            db = sqlite3.connect(store)
            firsts = db.execute(
                "SELECT count(*) FROM points p JOIN series s ON s.id = p.series_id"
            ).fetchone()[0]
            if firsts > samples_in:  # the backlog is in, and the second run is up and storing its own
                break
            assert time.monotonic() < deadline, f"store has {firsts} of {samples_in}"
            time.sleep(0.05)
    finally:
        proc2.send_signal(signal.SIGTERM)
        proc2.communicate(timeout=10)
    assert proc2.returncode == 0
    # Counters restart at 0 in each run, so a tag's first-run values are those stored before the second
    # run's first 0. They must be 0..k-1 with no gap; a clean stop acks its last write, so no duplicates.
    db = sqlite3.connect(store)
    total_first = 0
    for (series_id,) in db.execute("SELECT id FROM series").fetchall():
        values = [int(v) for (v,) in db.execute(
            "SELECT value FROM points WHERE series_id = ? ORDER BY ts_ns", (series_id,))]
        first_run = values[: values.index(0, 1)] if 0 in values[1:] else values
        assert first_run == list(range(len(first_run))), f"series {series_id}: gap or duplicate"
        total_first += len(first_run)
    assert total_first == samples_in


async def test_stop_while_a_sink_is_down_is_quick_and_keeps_the_backlog(tmp_path: Path, fake_plugins: None) -> None:
    cfg = {
        "data_dir": str(tmp_path / "data"),
        "sources": {"src": {"type": "crashing", "crashes": 0}},
        "sinks": {"down": {"type": "recording", "fail_first": 10**9, "retry_initial": "2s", "retry_max": "2s"}},
    }
    runtime = Runtime(load_config(write_config(tmp_path, cfg)))
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    await asyncio.wait_for(runtime.started.wait(), 10)
    down = RecordingSink.instances["down"]
    await wait_until(lambda: down.failures >= 1 and runtime.pipelines["src"].samples_in >= 20)
    t0 = time.monotonic()
    stop.set()
    await asyncio.wait_for(task, 5)
    assert time.monotonic() - t0 < 1.5  # a sink in backoff is not waited for
    taken = runtime.pipelines["src"].samples_in
    # The next start hands the whole backlog, in order, to the recovered sink.
    cfg["sinks"] = {"down": {"type": "recording"}}
    runtime2 = Runtime(load_config(write_config(tmp_path, {**cfg, "sources": {}})))
    stop2 = asyncio.Event()
    task2 = asyncio.create_task(runtime2.run(stop2))
    await asyncio.wait_for(runtime2.started.wait(), 10)
    recovered = RecordingSink.instances["down"]
    await wait_until(lambda: len(recovered.received) >= taken)
    stop2.set()
    await asyncio.wait_for(task2, 5)
    assert [s.value for s in recovered.received] == list(range(taken))


async def test_a_sink_that_keeps_up_writes_every_commit_whatever_its_linger(tmp_path: Path, fake_plugins: None) -> None:
    """``linger`` never holds back a sink that keeps up: each commit wakes it, so a 30 s linger delivers as
    soon as none at all; and a stop delivers everything."""
    path = write_config(tmp_path, {
        "data_dir": str(tmp_path / "data"),
        "sources": {"gen": {"type": "synthetic", "interval": "10ms", "devices": {
            "m": {"tags": [{"name": "c", "signal": "counter"}]}}}},
        "sinks": {"eager": {"type": "recording", "linger": "0s"},
                  "sleepy": {"type": "recording", "linger": "30s"}},
    })
    runtime = Runtime(load_config(path))
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    await asyncio.wait_for(runtime.started.wait(), 10)
    eager, sleepy = RecordingSink.instances["eager"], RecordingSink.instances["sleepy"]
    await wait_until(lambda: len(eager.received) >= 150)  # 1.5 s at 100 samples/s
    await wait_until(lambda: len(sleepy.received) >= 150, timeout=2)  # not a 30 s pause behind
    assert sleepy.writes >= 10, sleepy.writes  # it wrote as the commits came, not once per 30 s
    t0 = time.monotonic()
    stop.set()
    await asyncio.wait_for(task, 10)
    assert time.monotonic() - t0 < 3
    produced = sum(p.samples_in for p in runtime.pipelines.values())
    assert len(sleepy.received) == len(eager.received) == produced
    for sink in (eager, sleepy):
        values = [s.value for s in sink.received]
        assert values == list(range(len(values))), f"{sink.name}: gap or reorder"
