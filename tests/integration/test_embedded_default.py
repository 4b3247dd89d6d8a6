"""`edge-gateway run` with no arguments: the bottling line in-process, over real sockets, into the store."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.servers import free_port

pytestmark = pytest.mark.integration


def _store_rows(db: Path) -> dict[str, int]:
    """Samples per device in the embedded store (both of its tables), {} while it does not exist yet."""
    if not db.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            rows = conn.execute(
                "SELECT s.device, COUNT(*) FROM (SELECT series_id FROM recent UNION ALL SELECT series_id FROM history)"
                " AS p JOIN series AS s ON s.id = p.series_id GROUP BY s.device"
            ).fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return {}
    return {device: n for device, n in rows}


@pytest.mark.timeout(60)
def test_run_without_arguments_from_an_empty_directory(tmp_path: Path) -> None:
    home, work = tmp_path / "home", tmp_path / "empty"
    home.mkdir()
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGEGW_", "XDG_"))}
    env["HOME"] = str(home)
    # the demo's ports, moved to free ones through the documented environment overrides
    mb, ua, http = free_port(), free_port(), free_port()
    env |= {"EDGEGW_SIMULATORS__LINE__MODBUS_PORT": str(mb), "EDGEGW_SIMULATORS__LINE__OPCUA_PORT": str(ua),
            "EDGEGW_SOURCES__LINE_MODBUS__PORT": str(mb), "EDGEGW_HTTP__PORT": str(http)}
    for device in ("FILLER", "CAPPER", "LABELLER"):
        env[f"EDGEGW_SOURCES__LINE_OPCUA__DEVICES__{device}__ENDPOINT"] = f"opc.tcp://127.0.0.1:{ua}/line"
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli.main", "run"], cwd=work, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    db = home / ".local" / "share" / "edge-gateway" / "store.db"
    lines: list[str] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    machines = {"conveyor", "filler", "capper", "labeller", "power_meter"}
    try:
        deadline = time.monotonic() + 10
        rows: dict[str, int] = {}
        while time.monotonic() < deadline and proc.poll() is None:
            rows = _store_rows(db)
            # both protocols: Modbus (conveyor, power_meter) and OPC-UA (filler, capper, labeller)
            if machines <= set(rows):
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert machines <= set(rows), rows
        for port in (mb, ua):  # the simulated line really serves on the ports the environment gave it
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=5) as r:
            assert r.status == 200
        # the live summary: one line per period when stdout is not a terminal
        while time.monotonic() < deadline + 5 and not any(line.startswith("summary:") for line in lines):
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    summary = next(line for line in lines if line.startswith("summary:"))
    assert "devices 5 (" in summary and "values/s in" in summary and "spool" in summary, summary
    assert not list(work.iterdir())  # nothing written to the working directory
