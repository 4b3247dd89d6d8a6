"""A second gateway on the same data directory or the same HTTP port exits 2 with one line saying what
is taken; two processes never share one spool. A killed gateway never blocks its own restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.servers import free_port


def write(path: Path, data_dir: Path, http_port: int) -> Path:
    path.write_text(yaml.safe_dump({
        "data_dir": str(data_dir), "http": {"port": http_port},
        "sources": {"line": {"type": "synthetic", "interval": "100ms", "devices": {"m1": {"tags": [
            {"name": "t", "signal": "sine"}]}}}},
        "sinks": {"store": {"type": "sqlite", "path": str(data_dir / "store.db")}},
    }))
    return path


def start(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "gateway.cli.main", "run", "-c", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))


def wait_up(port: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 20
    while True:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1).read()
            return
        except OSError:
            assert time.monotonic() < deadline, "first gateway did not come up"
            time.sleep(0.1)


def refused(config: Path) -> list[str]:
    second = subprocess.run([sys.executable, "-m", "gateway.cli.main", "run", "-c", str(config)],
                            capture_output=True, text=True, timeout=30)
    assert second.returncode == 2, second.stderr
    lines = [line for line in second.stderr.splitlines() if line.strip()]
    assert "Traceback" not in second.stderr
    return lines


@pytest.mark.timeout(90)
def test_second_gateway_on_the_same_data_dir_or_port_exits_2(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    first = start(write(tmp_path / "a.yaml", data, port))
    try:
        wait_up(port, first)
        # Same data_dir (another port): refused before it touches the spool, the holder named.
        (line,) = refused(write(tmp_path / "b.yaml", data, free_port()))
        assert str(data) in line and f"pid {first.pid}" in line
        # Same port (another data_dir): refused, the port named.
        (line,) = refused(write(tmp_path / "c.yaml", tmp_path / "other", port))
        assert f"http port 127.0.0.1:{port} is taken" in line
        # kill -9: the kernel drops the lock; a restart on the same data_dir comes up.
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        again = start(write(tmp_path / "d.yaml", data, free_port()))
        try:
            wait_up(int(yaml.safe_load((tmp_path / "d.yaml").read_text())["http"]["port"]), again)
        finally:
            again.send_signal(signal.SIGTERM)
            assert again.wait(10) == 0
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)
