"""`edge-gateway run` with no arguments: the bottling line (a child process), over real sockets, into the store."""

from __future__ import annotations

import os
import re
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
from tests.waiting import poll

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


def _user_dirs(tmp_path: Path) -> tuple[Path, Path]:
    """A home directory without any gateway data, and an empty working directory."""
    home, work = tmp_path / "home", tmp_path / "empty"
    home.mkdir()
    work.mkdir()
    return home, work


def _demo_env(home: Path) -> tuple[dict[str, str], int, int, int]:
    """The environment of a user without a config, the demo's ports moved to free ones through the
    documented environment overrides; and those ports (Modbus, OPC-UA, HTTP)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGEGW_", "XDG_"))}
    env["HOME"] = str(home)
    mb, ua, http = free_port(), free_port(), free_port()
    env |= {"EDGEGW_SIMULATORS__LINE__MODBUS_PORT": str(mb), "EDGEGW_SIMULATORS__LINE__OPCUA_PORT": str(ua),
            "EDGEGW_SOURCES__LINE_MODBUS__PORT": str(mb), "EDGEGW_HTTP__PORT": str(http)}
    for device in ("FILLER", "CAPPER", "LABELLER"):
        env[f"EDGEGW_SOURCES__LINE_OPCUA__DEVICES__{device}__ENDPOINT"] = f"opc.tcp://127.0.0.1:{ua}/line"
    return env, mb, ua, http


def _start(work: Path, env: dict[str, str], stream: str = "stdout") -> tuple[subprocess.Popen[str], list[str]]:
    """The demo running; the lines of its ``stream`` as they come (the summary on stdout, logs on stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli.main", "run"], cwd=work, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    pipe = getattr(proc, stream)
    threading.Thread(target=lambda: lines.extend(iter(pipe.readline, "")), daemon=True).start()
    return proc, lines


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status  # a zombie has exited


@pytest.mark.timeout(60)
def test_run_without_arguments_from_an_empty_directory(tmp_path: Path) -> None:
    home, work = _user_dirs(tmp_path)
    env, mb, ua, http = _demo_env(home)
    proc, lines = _start(work, env)
    db = home / ".local" / "share" / "edge-gateway" / "store.db"
    machines = {"conveyor", "filler", "capper", "labeller", "power_meter"}
    try:
        deadline = time.monotonic() + 20
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


@pytest.mark.timeout(60)
def test_the_simulated_line_is_a_child_process_that_dies_with_the_gateway(tmp_path: Path) -> None:
    home, work = _user_dirs(tmp_path)
    env, mb, _, _ = _demo_env(home)
    proc, lines = _start(work, env, "stderr")
    try:
        serving = poll(lambda: next((line for line in lines if "simulated lines serving" in line), None), 30,
                       "the line serving")
        match = re.search(r"\(pid (\d+), log ([^)]+)\)", serving)
        assert match is not None, serving
        child = int(match.group(1))
        assert child != proc.pid and _alive(child)
        assert Path(match.group(2)).parent == home / ".local" / "share" / "edge-gateway" / "simulators"
        socket.create_connection(("127.0.0.1", mb), timeout=2).close()
    finally:
        proc.kill()  # no clean stop: SIGKILL
        proc.communicate(timeout=15)
    poll(lambda: not _alive(child), 15, "the line's process ends with the gateway")
