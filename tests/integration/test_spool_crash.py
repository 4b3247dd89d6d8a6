"""Kill -9 in the middle of appending and delivering, restart, drain: nothing committed is lost, no sink
sees a gap, and duplicates come only from batches after the sink's last persisted cursor."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.spool_writer_proc import BATCH, SINKS, source_of

SCRIPT = Path(__file__).with_name("spool_writer_proc.py")


def delivered(path: Path) -> list[tuple[int, list[int]]]:
    """(seq, values) per complete line; a line torn by the kill has no newline and was never acked."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines(keepends=True):
        if line.endswith("\n"):
            seq, *vals = line.split()
            out.append((int(seq), [int(v) for v in vals]))
    return out


def run_until_killed(db: Path, out: Path, kill_after: int) -> int:
    """Start the writer, SIGKILL it once it committed ``kill_after`` batches; return the last seq it reported."""
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(db), str(out), "write"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = 0
    deadline = time.monotonic() + 30
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("committed "):
                last = int(line.split()[1])
            logs = [delivered(out / f"{sink}.write.log") for sink in SINKS]
            if last >= kill_after and all(logs):
                break
            assert time.monotonic() < deadline, "the writer made no progress"
        else:
            raise AssertionError(f"writer exited early: {proc.stderr.read() if proc.stderr else ''}")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    return last


@pytest.mark.parametrize("kill_after", [30, 300, 1200])
def test_kill_9_loses_nothing_committed_and_sinks_see_no_gap(tmp_path: Path, kill_after: int) -> None:
    db = tmp_path / "spool.db"
    reported = run_until_killed(db, tmp_path, kill_after)

    conn = sqlite3.connect(db)  # what survived the kill, as a restarted gateway will find it
    last_seq = int(conn.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()[0])
    cursors = dict(conn.execute("SELECT sink, seq FROM cursors").fetchall())
    conn.close()
    assert last_seq >= reported >= kill_after  # every commit the writer saw complete is still there

    drain = subprocess.run([sys.executable, str(SCRIPT), str(db), str(tmp_path), "drain"],
                           capture_output=True, text=True, timeout=60)
    assert drain.returncode == 0 and "drained" in drain.stdout, drain.stderr

    for sink, sources in SINKS.items():
        expected = [k for k in range(1, last_seq + 1) if "*" in sources or source_of(k) in sources]
        before = delivered(tmp_path / f"{sink}.write.log")
        after = delivered(tmp_path / f"{sink}.drain.log")
        for seq, vals in before + after:
            assert vals == [seq * 1000 + j for j in range(BATCH)], f"{sink}: batch {seq} damaged"
        first_run = [seq for seq, _ in before]
        second_run = [seq for seq, _ in after]
        cursor = cursors[sink]
        # In order and without a gap within each run, and the first run never acked what it had not written.
        assert first_run == expected[: len(first_run)], f"{sink}: gap or reorder before the kill"
        assert cursor <= first_run[-1]
        # The restart resumes right after the persisted cursor and delivers everything committed.
        assert second_run == [k for k in expected if k > cursor], f"{sink}: gap or reorder after the restart"
        assert set(first_run) | set(second_run) == set(expected)
        duplicates = set(first_run) & set(second_run)
        assert all(k > cursor for k in duplicates)
        assert duplicates == {k for k in first_run if k > cursor}
