"""`edge-gateway simulate modbus`, `scan` and `write` as a user runs them: separate processes, real sockets."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from connectors.modbus.cli import render
from simulators.modbus.process import start_subprocess
from tests.servers import free_port, wait_port

SIM = {"devices": {"plc": {"unit": 4, "tags": [
    {"name": "f", "address": 0, "type": "float32", "order": "CDAB", "signal": "constant", "value": 3.5},
    {"name": "i", "address": 2, "type": "int16", "signal": "constant", "value": -2},
    {"name": "sp", "address": 3, "type": "int16", "signal": "constant", "value": 0},
]}}}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli.main", *args], capture_output=True, text=True,
                          timeout=30)


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[int]:
    desc = tmp_path / "sim.yaml"
    desc.write_text(yaml.safe_dump(SIM))
    port = free_port()
    proc = start_subprocess(desc, port=port)
    try:
        wait_port(port, proc)
        yield port
    finally:
        proc.terminate()
        assert proc.wait(10) == 0  # SIGTERM stops the simulator cleanly


def test_scan_shows_every_decoding_and_drafts_config(simulator: int) -> None:
    out = cli("scan", f"127.0.0.1:{simulator}", "--unit", "4", "--start", "0", "--count", "4", "--emit-config")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:4] == ["addr", "hex", "int16", "uint16"]
    table = [line.split() for line in lines[1:5]]
    assert table[0][:2] == ["0", "0x0000"] and table[1][:2] == ["1", "0x4060"]
    assert table[2][:3] == ["2", "0xFFFE", "-2"]
    # float32 columns follow addr/hex/int16/uint16/int16 BA/uint16 BA: ABCD, CDAB, BADC, DCBA
    assert table[0][6:10][1] == "3.5"  # CDAB at address 0
    assert "{name: reg_0, table: holding, address: 0, type: float32, order: CDAB}  # 3.5" in out.stdout


def test_scan_reports_an_unreachable_device() -> None:
    out = cli("scan", f"127.0.0.1:{free_port()}", "--timeout", "0.5")
    assert out.returncode == 1 and "cannot connect" in out.stderr


def test_write_command_lands_in_the_simulator(simulator: int, tmp_path: Path) -> None:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data"), "sources": {"m": {
        "type": "modbus", "host": "127.0.0.1", "port": simulator, "devices": {"plc": {"unit": 4, "tags": [
            {"name": "sp", "address": 3, "type": "int16", "writable": True, "scale": 0.1, "max": 100},
            {"name": "i", "address": 2, "type": "int16"}]}}}}, "sinks": {"s": {"type": "discard"}}}))
    out = cli("write", "-c", str(cfg), "m.plc", "sp", "-12.5")
    assert out.returncode == 0, out.stderr
    refused = cli("write", "-c", str(cfg), "m.plc", "i", "1")
    assert refused.returncode == 2 and "not writable" in refused.stderr
    scan = cli("scan", f"127.0.0.1:{simulator}", "--unit", "4", "--start", "3", "--count", "1")
    assert scan.stdout.splitlines()[1].split()[:3] == ["3", "0xFF83", "-125"]


def test_render_lines_up_columns() -> None:
    text = render(10, [0x4060, 0x0000])
    rows = [r.split() for r in text.splitlines()]
    assert rows[1][:4] == ["10", "0x4060", "16480", "16480"]
    assert rows[1][6] == "3.5" and rows[1][-1] == "@`"  # float32 ABCD; the ASCII of 0x4060 last
    assert len(rows[2]) == 7  # the last address has no 32-bit pair: addr, hex, four 16-bit views, ASCII
