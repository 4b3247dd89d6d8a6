"""The spool's one dead-letter store: what sinks refuse inside a write lands there per batch, and
``edge-gateway deadletters list|replay|purge`` read, resend and delete it."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml

from gateway.cli.main import main
from gateway.config.loader import load_config
from gateway.config.site import SpoolConfig
from gateway.deadletters import DeadLetter, connect, read, spool_path
from gateway.delivery import DeliveryLoop, WriteRejections
from gateway.errors import RetryableSinkError
from gateway.instance_lock import InstanceLock
from gateway.logs import configure_logging
from gateway.metrics import Metrics
from gateway.model import Batch, Quality, Sample, SpooledBatch
from gateway.spool import Spool
from tests.fakes import RecordingSink
from tests.gateways import StartGateway
from tests.waiting import until

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
ISO0 = "2026-01-01T00:00:00.000Z"


def sample(value: Any, tag: str = "t", device: str = "m1", ts: int = T0, quality: Quality = Quality.GOOD,
           status: int = 0) -> Sample:
    return Sample(device, tag, value, quality, status, ts, ts + 1_000_000, None)


def write_config(tmp_path: Path, sinks: dict[str, Any], **extra: Any) -> Path:
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data"), "http": {"enabled": False},
                                    "sinks": sinks, **extra}))
    return path


def seed(config: Path, letters: Sequence[tuple[str, int, str, str, list[Sample]]],
         times: Sequence[int] | None = None) -> Path:
    """Dead letters in the config's spool, as the gateway stores them; ``times`` replace the commit times."""
    path = spool_path(load_config(config))

    async def store() -> None:
        spool = Spool(path, SpoolConfig(), Metrics())
        await spool.open()
        try:
            for sink, seq, source, error, samples in letters:
                await spool.dead_letter_each(sink, [(SpooledBatch(seq, source, samples), error)])
        finally:
            await spool.close()

    asyncio.run(store())
    if times is not None:
        with sqlite3.connect(path) as db:
            db.executemany("UPDATE dead_letters SET created_ns = ? WHERE id = ?",
                           [(t, i) for i, t in enumerate(times, 1)])
        db.close()
    return path


def stored(path: Path) -> list[DeadLetter]:
    conn = connect(path)
    try:
        return read(conn)
    finally:
        conn.close()


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """``replay`` configures logging onto the captured stderr: later tests must not write to it."""
    root = logging.getLogger()
    handlers, level, config = root.handlers[:], root.level, structlog.get_config()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.configure(**config)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()  # what setting up logged is not the command's output
    code = main(["deadletters", *argv])
    out, err = capsys.readouterr()
    return code, out, err


# -- the store: filled by the delivery loop ---------------------------------------------------------------


class PartialSink:
    """Takes every sample but those of ``refused`` values, which it hands to its dead letters; fails the
    first ``fail_after_reject`` writes after rejecting (as a write that breaks half-way)."""

    name = "tsdb"

    def __init__(self, dead_letters: WriteRejections, refused: set[int], fail_after_reject: int = 0) -> None:
        self.dead_letters = dead_letters
        self.refused = refused
        self.fail_after_reject = fail_after_reject
        self.taken: list[Sample] = []

    async def open(self) -> None:
        return None

    async def write(self, batches: Sequence[Batch]) -> None:
        taken: list[Sample] = []
        for i, b in enumerate(batches):
            bad = [s for s in b.samples if s.value in self.refused]
            if bad:
                self.dead_letters.reject(i, bad, f"HTTP 400: value {bad[0].value} refused")
            taken.extend(s for s in b.samples if s.value not in self.refused)
        if self.fail_after_reject:
            self.fail_after_reject -= 1
            raise RetryableSinkError("HTTP 503: busy")
        self.taken.extend(taken)

    async def close(self) -> None:
        return None

    def health_problems(self) -> list[str]:
        return []


async def deliver(tmp_path: Path, batches: list[list[Sample]], refused: set[int],
                  fail_after_reject: int = 0) -> tuple[PartialSink, Metrics, list[DeadLetter]]:
    metrics = Metrics()
    spool = Spool(tmp_path / "spool.db", SpoolConfig(), metrics)
    await spool.open()
    rejections = WriteRejections()
    sink = PartialSink(rejections, refused, fail_after_reject)
    loop = DeliveryLoop(sink, spool, ["*"], metrics, max_samples=1000, retry_initial=0.01, retry_max=0.01,
                        rejections=rejections)
    try:
        for samples in batches:
            await spool.append(Batch("plc", samples))
        await spool.flush()
        task = asyncio.create_task(loop.run())
        total = sum(map(len, batches))
        await until(lambda: loop.reader is not None and loop.reader.pending_samples() == 0 and
                    len(sink.taken) + metrics.sink_dead_lettered.labels("tsdb")._value.get() == total)
        loop.request_stop()  # idle: cancels the loop
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
    finally:
        await spool.close()
    return sink, metrics, stored(tmp_path / "spool.db")


async def test_samples_refused_inside_a_write_are_dead_lettered_per_batch(tmp_path: Path) -> None:
    first = [sample(float(i), tag=f"t{i}") for i in range(4)]
    second = [sample(10.0 + i, tag=f"t{i}") for i in range(3)]
    sink, metrics, letters = await deliver(tmp_path, [first, second], refused={1, 2, 11})
    assert [(d.sink, d.seq, d.source, d.error, d.samples) for d in letters] == [
        ("tsdb", 1, "plc", "HTTP 400: value 1.0 refused", [first[1], first[2]]),
        ("tsdb", 2, "plc", "HTTP 400: value 11.0 refused", [second[1]]),
    ]
    assert sink.taken == [first[0], first[3], second[0], second[2]]
    assert metrics.sink_dead_lettered.labels("tsdb")._value.get() == 3
    assert metrics.samples_out.labels("tsdb")._value.get() == 4  # what the uplink took, not what it refused


async def test_a_write_that_fails_after_rejecting_is_dead_lettered_once(tmp_path: Path) -> None:
    samples = [sample(float(i)) for i in range(3)]
    sink, metrics, letters = await deliver(tmp_path, [samples], refused={1}, fail_after_reject=2)
    assert [(d.seq, d.samples) for d in letters] == [(1, [samples[1]])]  # not three times
    assert sink.taken == [samples[0], samples[2]]
    assert metrics.sink_dead_lettered.labels("tsdb")._value.get() == 1


def test_a_rejection_names_a_batch_of_the_write_in_flight() -> None:
    rejections = WriteRejections()
    rejections.begin([SpooledBatch(7, "plc", [sample(1.0)])])
    with pytest.raises(IndexError, match="no batch 1"):
        rejections.reject(1, [sample(1.0)], "bad")
    rejections.reject(0, [sample(1.0)], "bad")
    rejections.reject(0, [], "ignored: nothing rejected")
    assert rejections.take() == [(SpooledBatch(7, "plc", [sample(1.0)]), "bad")]
    assert rejections.take() == []


async def test_the_runtime_gives_sinks_the_spool_and_list_reads_it_while_running(
        tmp_path: Path, fake_plugins: None, gateway: StartGateway, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, {"rec": {"type": "recording", "refuse_value": 3}},
                          sources={"line": {"type": "toggle", "devices": ["m1", "m2"]}})
    configure_logging("info", "json", io.StringIO())  # the gateway's log lines stay out of the command's output
    runtime = await gateway(config)
    path = tmp_path / "data" / "spool.db"
    letters = await until(lambda: stored(path), what="a dead letter")
    (letter,) = letters
    assert (letter.sink, letter.seq, letter.source, letter.error) == ("rec", 4, "line", "value 3 refused (test)")
    assert [(s.device, s.tag, s.value) for s in letter.samples] == [("m1", "v", 3), ("m2", "v", 3)]
    # counted once the commit is confirmed to the delivery loop, a moment after another reader sees it
    await until(lambda: runtime.metrics.sink_dead_lettered.labels("rec")._value.get() == 2, what="the count")
    assert 3 not in {s.value for s in RecordingSink.instances["rec"].received}
    code, out, _ = await asyncio.to_thread(run_cli, capsys, "list", "-c", str(config))  # the gateway holds the spool
    assert code == 0
    assert out.splitlines()[0].split() == ["ID", "TIME", "SINK", "SOURCE", "SAMPLES", "ERROR"]
    assert out.splitlines()[1].split()[2:] == ["rec", "line", "2", "value", "3", "refused", "(test)"]


# -- list -------------------------------------------------------------------------------------------------


LONG = "HTTP 400: " + "x" * 300


@pytest.fixture
def seeded(tmp_path: Path) -> Path:
    config = write_config(tmp_path, {"tsdb": {"type": "discard"}, "plant": {"type": "discard"}})
    seed(config, [
        ("tsdb", 12, "plc", "HTTP 400: unable to parse\n  'filler temperature=x': bad float", [sample(21.5), sample(
            [1.5, 2.5], tag="wave", ts=T0 + 250_000_000)]),
        ("plant", 13, "opc", "bad value (test)", [sample(None, tag="state", quality=Quality.BAD, status=2)]),
        ("tsdb", 14, "plc", LONG, [sample(True, tag="run"), sample("a\nb", tag="msg")]),
    ], times=[T0, T0 + 61_500_000_000, T0 + 3_600_000_000_000])
    return config


def test_list_prints_one_line_per_letter_oldest_first(seeded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "list", "-c", str(seeded))
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "ID  TIME                      SINK   SOURCE  SAMPLES  ERROR",
        f"1   {ISO0}  tsdb   plc     2        HTTP 400: unable to parse 'filler temperature=x': bad float",
        "2   2026-01-01T00:01:01.500Z  plant  opc     1        bad value (test)",
        f"3   2026-01-01T01:00:00.000Z  tsdb   plc     2        {LONG[:159]}…",
    ]


def test_list_filters_by_sink_and_limit(seeded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "list", "-c", str(seeded), "--sink", "tsdb")
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == ["ID", "1", "3"]
    code, out, _ = run_cli(capsys, "list", "-c", str(seeded), "--limit", "2")
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == ["ID", "2", "3"]  # the newest two
    code, out, err = run_cli(capsys, "list", "-c", str(seeded), "--sink", "nope")
    assert (code, out, err) == (0, "", "edge-gateway deadletters: no dead letters of sink 'nope'\n")
    code, _, err = run_cli(capsys, "list", "-c", str(seeded), "--limit", "0")
    assert (code, err) == (2, "edge-gateway deadletters: --limit must be at least 1, not 0\n")


def test_list_samples_shows_each_sample(seeded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "list", "-c", str(seeded), "--samples", "--sink", "plant")
    assert code == 0
    assert out.splitlines()[1:] == [
        "2   2026-01-01T00:01:01.500Z  plant  opc     1        bad value (test)",
        f"    {ISO0}  m1  state  -  bad (IllegalDataAddress)",
    ]
    code, out, _ = run_cli(capsys, "list", "-c", str(seeded), "--samples", "--limit", "1")
    assert out.splitlines()[2:] == ["    2026-01-01T00:00:00.000Z  m1  run  true  good",
                                    "    2026-01-01T00:00:00.000Z  m1  msg  a b   good"]


def test_list_json_has_every_field_and_the_samples(seeded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "list", "-c", str(seeded), "--json", "--sink", "tsdb", "--limit", "1")
    assert code == 0
    assert json.loads(out) == [{
        "id": 3, "time": "2026-01-01T01:00:00.000Z", "sink": "tsdb", "source": "plc", "seq": 14, "error": LONG,
        "count": 2, "readable": True, "samples": [
            {"device": "m1", "tag": "run", "value": True, "unit": None, "quality": "good", "status": 0,
             "status_name": "Good", "time": ISO0},
            {"device": "m1", "tag": "msg", "value": "a\nb", "unit": None, "quality": "good", "status": 0,
             "status_name": "Good", "time": ISO0},
        ]}]
    code, out, _ = run_cli(capsys, "list", "-c", str(seeded), "--json", "--limit", "3")
    first = json.loads(out)[0]
    assert first["error"] == "HTTP 400: unable to parse\n  'filler temperature=x': bad float"
    assert [s["value"] for s in first["samples"]] == [21.5, [1.5, 2.5]]
    assert first["samples"][1]["time"] == "2026-01-01T00:00:00.250Z"


def test_list_without_a_spool_says_so_and_creates_nothing(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, {"tsdb": {"type": "discard"}})
    code, out, err = run_cli(capsys, "list", "-c", str(config))
    spool = tmp_path / "data" / "spool.db"
    assert (code, out) == (1, "")
    assert err == f"edge-gateway deadletters: no spool at {spool} (has the gateway run with this config yet?)\n"
    assert not (tmp_path / "data").exists()


def test_list_of_an_empty_store_and_json_of_none(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, {"tsdb": {"type": "discard"}})
    seed(config, [])
    assert run_cli(capsys, "list", "-c", str(config)) == (0, "", "edge-gateway deadletters: no dead letters\n")
    assert run_cli(capsys, "list", "-c", str(config), "--json") == (0, "[]\n", "")


# -- replay -----------------------------------------------------------------------------------------------


def rec_letters(config: Path) -> Path:
    return seed(config, [
        ("rec", 5, "plc", "bad value (test)", [sample(7), sample(8)]),
        ("rec", 6, "plc", "HTTP 400: old", [sample(9)]),
        ("gone", 7, "plc", "old sink", [sample(10)]),
    ])


def test_replay_delivers_and_removes_what_the_sink_takes_now(tmp_path: Path, fake_plugins: None,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, {"rec": {"type": "recording"}})
    path = rec_letters(config)
    code, out, _ = run_cli(capsys, "replay", "-c", str(config), "--sink", "rec")
    assert code == 0
    assert out.splitlines() == [
        "dead letter 1 (2 samples of plc) -> rec: delivered, removed",
        "dead letter 2 (1 samples of plc) -> rec: delivered, removed",
        "2 of 2 dead letters delivered and removed",
    ]
    assert RecordingSink.instances["rec"].received == [sample(7), sample(8), sample(9)]
    assert [d.id for d in stored(path)] == [3]  # another sink's letter is not touched


def test_replay_keeps_what_is_refused_again_with_the_new_error(tmp_path: Path, fake_plugins: None,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, {"rec": {"type": "recording", "refuse_value": 7, "reject_value": 9}})
    path = rec_letters(config)
    code, out, _ = run_cli(capsys, "replay", "-c", str(config))
    assert code == 1
    assert out.splitlines() == [
        "dead letter 1 (2 samples of plc) -> rec: refused again, kept 1 samples: value 7 refused (test)",
        "dead letter 2 (1 samples of plc) -> rec: refused again, kept 1 samples: bad value (test)",
        f"dead letter 3 (1 samples of plc) -> gone: skipped, kept: no sink 'gone' in {config}",
        "0 of 3 dead letters delivered and removed; 3 kept",
    ]
    assert RecordingSink.instances["rec"].received == [sample(8)]  # the part it takes now is delivered
    assert [(d.id, d.seq, d.error, d.samples) for d in stored(path)] == [
        (1, 5, "value 7 refused (test)", [sample(7)]),
        (2, 6, "bad value (test)", [sample(9)]),
        (3, 7, "old sink", [sample(10)]),
    ]


def test_replay_stops_sending_to_a_sink_whose_uplink_fails(tmp_path: Path, fake_plugins: None,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, {"rec": {"type": "recording", "fail_first": 1}})
    path = rec_letters(config)
    code, out, _ = run_cli(capsys, "replay", "-c", str(config), "--sink", "rec")
    assert code == 1
    assert out.splitlines() == [
        "dead letter 1 (2 samples of plc) -> rec: not delivered, kept: uplink down (test)",
        "dead letter 2 (1 samples of plc) -> rec: skipped, kept: not sent: the sink failed on dead letter 1",
        "0 of 2 dead letters delivered and removed; 2 kept",
    ]
    assert [(d.id, d.error) for d in stored(path)] == [(1, "bad value (test)"), (2, "HTTP 400: old"), (3, "old sink")]


def test_replay_by_id_and_dry_run(tmp_path: Path, fake_plugins: None, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, {"rec": {"type": "recording"}})
    path = rec_letters(config)
    code, out, _ = run_cli(capsys, "replay", "-c", str(config), "--dry-run")
    assert code == 0
    assert out.splitlines() == [
        "dead letter 1 (2 samples of plc): would be sent to rec (recording)",
        "dead letter 2 (1 samples of plc): would be sent to rec (recording)",
        f"dead letter 3 (1 samples of plc): would be skipped: no sink 'gone' in {config}",
    ]
    assert len(stored(path)) == 3 and "rec" not in RecordingSink.instances
    code, _, err = run_cli(capsys, "replay", "-c", str(config), "--id", "2", "99")
    assert (code, err) == (2, "edge-gateway deadletters: no dead letter with id 99\n")
    code, out, _ = run_cli(capsys, "replay", "-c", str(config), "--id", "2")
    assert code == 0 and out.splitlines()[-1] == "1 of 1 dead letters delivered and removed"
    assert [d.id for d in stored(path)] == [1, 3]


def test_replay_refuses_while_the_gateway_runs(tmp_path: Path, fake_plugins: None,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, {"rec": {"type": "recording"}})
    path = rec_letters(config)
    lock = InstanceLock(path.with_name("spool.db.lock"))  # what a running gateway holds
    lock.acquire()
    try:
        code, out, err = run_cli(capsys, "replay", "-c", str(config))
    finally:
        lock.release()
    assert (code, out) == (2, "")
    assert err == (f"edge-gateway deadletters replay: the gateway is running (pid {os.getpid()} holds spool.db.lock); "
                   "replay builds its own copy of each sink, which must never run beside the gateway's: stop the "
                   "gateway, replay, start it again\n")
    assert len(stored(path)) == 3 and "rec" not in RecordingSink.instances


# -- purge ------------------------------------------------------------------------------------------------


def test_purge_deletes_one_sinks_letters_optionally_before_a_time(seeded: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = spool_path(load_config(seeded))
    code, out, _ = run_cli(capsys, "purge", "-c", str(seeded), "--sink", "tsdb", "--before", "2026-01-01T00:30:00")
    assert (code, out) == (0, "purged 1 dead letters of sink tsdb dead-lettered before 2026-01-01T00:30:00.000Z\n")
    assert [d.id for d in stored(path)] == [2, 3]
    code, out, _ = run_cli(capsys, "purge", "-c", str(seeded), "--sink", "tsdb")
    assert (code, out) == (0, "purged 1 dead letters of sink tsdb\n")
    assert [d.id for d in stored(path)] == [2]
    code, _, err = run_cli(capsys, "purge", "-c", str(seeded), "--sink", "plant", "--before", "yesterday")
    assert code == 2 and "--before: expected an ISO 8601 time or a duration (7d), not 'yesterday'" in err
    assert [d.id for d in stored(path)] == [2]


def test_an_unstorable_letter_is_listed_and_not_replayed(tmp_path: Path, fake_plugins: None,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, {"rec": {"type": "recording"}})
    path = seed(config, [("rec", 3, "plc", "bad", [sample(object())])], times=[T0])  # type: ignore[arg-type]
    assert stored(path)[0].error.startswith("bad (payload not storable:")
    code, out, _ = run_cli(capsys, "list", "-c", str(config))
    assert out.splitlines()[1].split()[:5] == ["1", ISO0, "rec", "plc", "?"]
    code, out, _ = run_cli(capsys, "replay", "-c", str(config))
    assert code == 1 and "skipped, kept: its samples could not be kept; nothing to send (purge it)" in out
