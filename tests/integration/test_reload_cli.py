"""Hot reload through `edge-gateway run`: saving the file and SIGHUP both reload; an invalid edit is
rejected with its problems logged, and the gateway keeps running the previous config."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml


def config(tmp_path: Path, devices: list[str]) -> dict[str, Any]:
    return {
        "data_dir": str(tmp_path / "data"), "log": {"format": "json"}, "http": {"enabled": False},
        "sources": {"line": {"type": "synthetic", "interval": "50ms", "devices": {
            d: {"tags": [{"name": "n", "signal": "counter"}]} for d in devices}}},
        "sinks": {"store": {"type": "sqlite"}},
    }


class Gateway:
    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway.cli.main", "run", "-c", str(path)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.events: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                self.events.append(json.loads(line))
            except ValueError:
                self.events.append({"event": line.strip()})

    def wait_event(self, name: str, count: int = 1, timeout: float = 20.0) -> dict[str, Any]:
        return wait(lambda: (hits := [e for e in self.events if e.get("event") == name]) and len(hits) >= count
                    and hits[count - 1], timeout, f"log event {name!r} x{count}")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(10)


def wait(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def devices_in_store(db: Path) -> set[str]:
    try:
        with sqlite3.connect(db) as conn:
            return {d for (d,) in conn.execute("SELECT DISTINCT device FROM series")}
    except sqlite3.OperationalError:
        return set()


@pytest.mark.timeout(90)
def test_file_change_and_sighup_reload(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(config(tmp_path, ["m1"])))
    gw = Gateway(path)
    store = tmp_path / "data" / "store.db"
    try:
        gw.wait_event("gateway starting")
        wait(lambda: devices_in_store(store) == {"m1"}, 20, "m1 in the store")

        path.write_text(yaml.safe_dump(config(tmp_path, ["m1", "m2"])))  # saved: the watcher reloads
        reloaded = gw.wait_event("config reloaded")
        assert reloaded["sources"] == {"changed": ["line"]} and reloaded.get("sinks") == {}
        wait(lambda: devices_in_store(store) == {"m1", "m2"}, 20, "m2 in the store")

        bad = config(tmp_path, ["m1", "m2", "m3"])
        bad["sources"]["line"]["interval"] = "often"
        path.write_text(yaml.safe_dump(bad))
        rejected = gw.wait_event("config reload rejected; still running the previous config")
        assert rejected["problems"] == [
            f"{path}: sources.line.interval: expected a duration such as 250ms, 1s, 5m, 2h (got 'often')"]

        path.write_text(yaml.safe_dump(config(tmp_path, ["m1", "m2", "m3"])))
        gw.proc.send_signal(signal.SIGHUP)  # the watcher may see it too: one or two reloads, same result
        gw.wait_event("config reloaded", count=2)
        wait(lambda: devices_in_store(store) == {"m1", "m2", "m3"}, 20, "m3 in the store")
        assert gw.proc.poll() is None
    finally:
        rc = gw.stop()
    assert rc == 0
