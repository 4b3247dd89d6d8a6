"""README "Connect your first PLC", step by step through the real CLI against the simulated bottling line:
scan and browse draft configs that validate, the Modbus draft runs and stores, query reads it back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests import REPO
from tests.servers import free_port, wait_port
from tests.waiting import poll

pytestmark = pytest.mark.integration


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout, check=False, env=env, cwd=REPO)


def draft(stdout: str) -> str:
    """The YAML `--emit-config` prints (after scan's table, or alone for browse)."""
    start = stdout.find("# drafted by")
    return stdout[start:] if start >= 0 else stdout


@pytest.mark.timeout(150)
def test_connect_your_first_plc(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    for step in ("edge-gateway scan 192.168.10.20:502 --unit 1 --table holding --start 0 --count 40 --emit-config",
                 "edge-gateway validate -c plc.yaml", "edge-gateway run -c plc.yaml",
                 "edge-gateway query -c plc.yaml --last 20"):
        assert step in readme, step  # the steps below are the README's
    mb, ua = free_port(), free_port()
    line = subprocess.Popen([sys.executable, "-m", "gateway.cli.main", "simulate", "bottling-line",
                             "--modbus-port", str(mb), "--opcua-port", str(ua)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    try:
        wait_port(mb, line)
        wait_port(ua, line)
        # 1-2: scan the conveyor's input registers (unit 1) and draft a config
        scanned = cli("scan", f"127.0.0.1:{mb}", "--unit", "1", "--table", "input", "--start", "0", "--count", "18",
                      "--emit-config")
        assert scanned.returncode == 0, scanned.stderr
        assert "f32 ABCD" in scanned.stdout.split("# drafted by")[0]  # the table decodes every type and order
        plc = tmp_path / "plc.yaml"
        plc.write_text(draft(scanned.stdout))
        browsed = cli("browse", f"opc.tcp://127.0.0.1:{ua}/line", "--emit-config", "--device", "filler",
                      "--max-nodes", "40")
        assert browsed.returncode == 0, browsed.stderr
        ua_cfg = tmp_path / "ua.yaml"
        ua_cfg.write_text(draft(browsed.stdout))

        # 3: both drafts validate as written
        env = {**os.environ, "EDGEGW_DATA_DIR": str(tmp_path / "data"), "EDGEGW_HTTP__PORT": "0"}
        for cfg in (plc, ua_cfg):
            checked = cli("validate", "-c", str(cfg), env=env)
            assert checked.returncode == 0, (cfg.read_text()[:2000], checked.stdout, checked.stderr)

        # 4: run the Modbus draft until it stored a few scans, then stop it as Ctrl-C would
        gateway = subprocess.Popen([sys.executable, "-m", "gateway.cli.main", "run", "-c", str(plc)], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        try:
            def stored() -> bool:
                got = cli("query", "-c", str(plc), "--last", "20", env=env, timeout=30)
                return got.returncode == 0 and got.stdout.count("unit_1") >= 20  # more than one scan

            poll(stored, timeout=60, what="the draft's registers in the store")
        finally:
            gateway.send_signal(signal.SIGINT)
            _, err = gateway.communicate(timeout=30)
        assert gateway.returncode in (0, 130), err[-2000:]

        # 5: read it back, as the README shows
        rows = cli("query", "-c", str(plc), "--last", "20", env=env)
        assert rows.returncode == 0, rows.stderr
        header, *points = rows.stdout.splitlines()
        assert header.split()[:5] == ["TIME", "SOURCE", "DEVICE", "TAG", "VALUE"]
        assert len(points) == 20 and all(p.split()[1:3] == ["scanned", "unit_1"] for p in points)
        assert all(p.split()[-1] == "good" for p in points)
    finally:
        line.terminate()
        line.wait(timeout=30)
