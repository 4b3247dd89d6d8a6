"""The ``record`` sink inside an ordinary runtime config, beside another sink."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from connectors.recording.files import RecordedSample, read_recording
from connectors.recording.sink import RecordSink
from gateway.config.loader import load_config
from gateway.errors import ConfigError
from gateway.runtime import Runtime
from tests import REPO
from tests.waiting import until as wait_until


def write_config(tmp_path: Path, rec_path: Path, **rec: object) -> Path:
    cfg = {
        "data_dir": str(tmp_path / "data"),
        "http": {"enabled": False},
        "sources": {"line": {"type": "synthetic", "interval": "50ms", "devices": {
            "press": {"tags": [{"name": "count", "signal": "counter"}, {"name": "sp", "signal": "constant",
                                                                        "value": 7, "unit": "bar"}]},
        }}},
        "sinks": {
            "rec": {"type": "record", "path": str(rec_path), "flush_interval": "100ms", **rec},
            "other": {"type": "discard"},
        },
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _rows(path: Path) -> list[RecordedSample]:
    try:
        return list(read_recording(path))
    except Exception:
        return []


async def _run(config: Path, until: Callable[[RecordSink], bool]) -> RecordSink:
    runtime = Runtime(load_config(config))
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    await asyncio.wait_for(runtime.started.wait(), 10)
    sink = runtime.sinks["rec"]
    assert isinstance(sink, RecordSink)
    await wait_until(lambda: until(sink))
    stop.set()
    await asyncio.wait_for(task, 10)
    return sink


def _check_counts(rows: list[RecordedSample]) -> None:
    counts = [r.value for r in rows if r.tag == "count"]
    assert counts == list(range(len(counts)))
    assert {(r.value, r.unit) for r in rows if r.tag == "sp"} == {(7, "bar")}
    assert {r.source for r in rows} == {"line"}


async def test_csv_is_flushed_while_running_and_continued_after_a_restart(tmp_path: Path) -> None:
    rec = tmp_path / "rec.csv"
    config = write_config(tmp_path, rec)
    # Readable while the gateway runs: the periodic flush puts rows in the file.
    sink = await _run(config, lambda s: len(_rows(rec)) >= 10)
    first = _rows(rec)
    assert sink.path == rec and sink.samples == len(first) and sink.tags == 2 and sink.devices == 1
    _check_counts(first)
    # A second run continues the file instead of overwriting it (counters restart with the source).
    await _run(config, lambda s: s.samples >= 6)
    both = _rows(rec)
    assert both[: len(first)] == first and len(both) >= len(first) + 6
    _check_counts(both[len(first):])


async def test_parquet_is_finished_on_stop_and_never_overwritten(tmp_path: Path) -> None:
    rec = tmp_path / "rec.parquet"
    config = write_config(tmp_path, rec)
    sink = await _run(config, lambda s: s.samples >= 10)
    rows = _rows(rec)
    assert len(rows) == sink.samples >= 10  # the footer was written: the file reads
    _check_counts(rows)
    # A finished Parquet file cannot grow: the next run keeps it and writes beside it.
    again = await _run(config, lambda s: s.samples >= 4)
    assert again.path == tmp_path / "rec.1.parquet"
    assert _rows(rec) == rows
    _check_counts(_rows(tmp_path / "rec.1.parquet"))


def test_config_rejects_unknown_extension(tmp_path: Path) -> None:
    config = write_config(tmp_path, tmp_path / "rec.xlsx")
    with pytest.raises(ConfigError) as err:
        load_config(config)
    assert any("sinks.rec.path" in line and ".csv, .csv.gz or .parquet" in line for line in err.value.problems), (
        err.value.problems
    )


async def test_record_drains_everything_the_sources_produced(tmp_path: Path) -> None:
    """``record`` stops the sources first and waits for the sink: a busy source leaves a backlog behind
    the sink at stop, which the runtime's own stop would leave in the (throwaway) spool."""
    from connectors.recording.cli import SINK_NAME, record, recording_config

    tags = [{"name": f"t{i}", "signal": "counter", "start": i} for i in range(200)]
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({
        "data_dir": str(tmp_path / "data"),
        "sources": {"busy": {"type": "synthetic", "interval": "2ms", "devices": {"dev": {"tags": tags}}}},
    }))
    out = tmp_path / "rec.csv"
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    runtime = Runtime(recording_config(load_config(path), out, spool_dir))
    assert await record(runtime, asyncio.Event(), 1.0) == 0
    produced = sum(
        int(s.value) for m in runtime.metrics.samples_in.collect() for s in m.samples if s.name.endswith("_total")
    )
    rows = _rows(out)
    sink = runtime.sinks[SINK_NAME]
    assert isinstance(sink, RecordSink)
    assert produced > 10_000
    assert len(rows) == sink.samples == produced
    assert [r.value for r in rows if r.tag == "t0"] == list(range(produced // 200))
    assert not (tmp_path / "data" / "spool.db").exists()


def test_sample_yaml_is_a_valid_config(tmp_path: Path) -> None:
    sample = yaml.safe_load((REPO / "connectors" / "recording" / "sample.yaml").read_text())
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({"sinks": {"recording": sample}}))
    assert load_config(path, env={}).sinks["recording"].type == "record"
