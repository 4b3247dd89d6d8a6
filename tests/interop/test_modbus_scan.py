"""`edge-gateway scan` against the datasheet device (pymodbus's own datastore, literal words): every decoding
including 64-bit and ASCII, exceptions marked by name without aborting, long ranges in several requests,
and a drafted config that validates, keeps only defensible types and makes nothing writable."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from tests.interop.modbus_device import datasheet_device
from tests.servers import free_port


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli.main", *args], capture_output=True, text=True,
                          timeout=60)


def rows(text: str) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for line in text.splitlines():
        cells = line.split()
        if cells and cells[0].isdigit():
            out.setdefault(int(cells[0]), cells)  # the first table wins; 64-bit rows go to wide()
    return out


def wide(text: str) -> dict[int, list[str]]:
    part = text.split("64-bit values starting at each address:")[1].split("\n\n")[0]
    return {int(c[0]): c for c in (line.split() for line in part.splitlines()) if c and c[0].isdigit()}


@pytest.mark.timeout(90)
async def test_scan_shows_64_bit_and_ascii_marks_exceptions_and_drafts_a_defensible_config(tmp_path: Path) -> None:
    port = free_port()
    async with datasheet_device(port):
        out = await asyncio.to_thread(cli, "scan", f"127.0.0.1:{port}", "--start", "0", "--count", "52",
                                      "--emit-config")
        assert out.returncode == 0, out.stderr
        table, draft = out.stdout.split("# drafted by edge-gateway scan")
        r, w = rows(table), wide(table)
        assert r[0][:3] == ["0", "0xFB2E", "-1234"]
        assert r[32][-1] == "PU" and r[33][-1] == "MP"  # ASCII beside the numbers
        # 64-bit columns: addr, f64 ABCD CDAB BADC DCBA, i64 x4, u64 x4
        assert w[12][1] == "1234.568" and w[28][2] == "-0.001"
        assert w[16][6] == "-9000000000000" and w[20][12] == "18000000000000000000" and w[24][7] == "1234567890123"
        # exceptions inside the range: narrowed down to their registers, named, and the scan goes on
        assert [r[a][1] for a in (41, 42, 43, 44)] == ["IllegalDataAddress"] * 4
        assert r[46][1] == "ServerDeviceFailure" and r[45][1] == "0x0064" and r[47][1] == "0x00C8"
        assert r[51][1] == "IllegalDataAddress"
        # 300 registers: three requests; everything past the map answers exception 2, by name
        long = await asyncio.to_thread(cli, "scan", f"127.0.0.1:{port}", "--start", "0", "--count", "300")
        assert long.returncode == 0, long.stderr
        lr = rows(long.stdout)
        assert len(lr) == 300 and lr[40][1] == "0x8005" and lr[299][1] == "IllegalDataAddress"
    assert not [line for line in draft.splitlines() if "writable" in line and not line.startswith("#")]
    for line in ("address: 6, type: float32, order: ABCD}  # 25.5",
                 "address: 12, type: float64, order: ABCD}  # 1234.5678",
                 "address: 28, type: float64, order: CDAB}  # -0.001",
                 "address: 32, type: string, length: 4}  # 'PUMP-7'",
                 "# 46: ServerDeviceFailure: left out", "# 41: IllegalDataAddress: left out"):
        assert line in draft, line
    assert "alternatives: float32 BADC -1.5" in draft  # an ambiguous pair lists what else it could be
    cfg = tmp_path / "draft.yaml"
    cfg.write_text("# drafted by edge-gateway scan" + draft)
    valid = await asyncio.to_thread(cli, "validate", "-c", str(cfg))
    assert valid.returncode == 0, valid.stdout + valid.stderr
