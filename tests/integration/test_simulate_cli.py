"""`edge-gateway simulate SCENARIO` from the command line: exports, emitted configs, errors, serving."""

from __future__ import annotations

import csv
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.servers import free_port

pytestmark = pytest.mark.integration


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli.main", *args], capture_output=True, text=True,
                          timeout=60, check=False, cwd=cwd)


def test_export_writes_the_register_map_and_node_list(tmp_path: Path) -> None:
    res = cli("simulate", "bottling-line", "--export", str(tmp_path))
    assert res.returncode == 0, res.stderr
    with open(tmp_path / "bottling-line-registers.csv", newline="") as f:
        regs = list(csv.DictReader(f))
    with open(tmp_path / "bottling-line-nodes.csv", newline="") as f:
        nodes = list(csv.DictReader(f))
    assert len(regs) == len(nodes) == 61
    energy = next(r for r in regs if (r["machine"], r["tag"]) == ("power_meter", "energy"))
    assert (energy["unit_id"], energy["table"], energy["address"], energy["datasheet_address"], energy["type"],
            energy["order"], energy["unit"]) == ("5", "input", "72", "30073", "float64", "CDAB", "kWh")
    state = next(n for n in nodes if (n["machine"], n["tag"]) == ("filler", "state"))
    assert state["node_id"] == "nsu=urn:edge-gateway:bottling-line;s=filler.state"
    assert "running" in state["description"]


@pytest.mark.parametrize("protocol", ["opcua", "modbus"])
def test_emitted_config_validates(tmp_path: Path, protocol: str) -> None:
    out = tmp_path / "gw.yaml"
    res = cli("simulate", "cnc-cell", "--emit-config", str(out), "--emit-protocol", protocol)
    assert res.returncode == 0, res.stderr
    res = cli("validate", "-c", str(out))
    assert res.returncode == 0 and "ok (1 sources, 1 sinks)" in res.stdout, res.stdout + res.stderr
    assert f"type: {protocol}" in out.read_text()
    emitted = yaml.safe_load(out.read_text())
    tags = {t["name"]: t for dev in next(iter(emitted["sources"].values()))["devices"].values() for t in dev["tags"]}
    assert tags["state"]["states"][4] == "fault" and tags["alarm_code"]["alarm"][0]["not_equals"] == 0


def test_a_bad_scenario_names_the_file_and_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmachines:\n  a: {unit: 1}\n  b: {unit: 1, upstream: nowhere}\n")
    res = cli("simulate", str(bad))
    assert res.returncode == 2
    assert res.stderr.startswith(f"{bad}: ") and "unit ids must be unique" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    res = cli("simulate", str(tmp_path / "missing.yaml"))
    assert res.returncode == 2 and "no such scenario file" in res.stderr
    res = cli("simulate")
    assert res.returncode == 2 and "simulate SCENARIO" in res.stderr
    res = cli("simulate", "--replay", str(tmp_path / "missing.csv"))
    assert res.returncode == 2 and "missing.csv" in res.stderr and "Traceback" not in res.stderr


def test_help_lists_every_form() -> None:
    res = cli("simulate", "-h")
    assert res.returncode == 0
    for form in ("simulate SCENARIO", "--replay FILE", "modbus|opcua FILE", "--export", "--speed"):
        assert form in res.stdout, form


@pytest.mark.timeout(60)
def test_serving_prints_ready_and_state_changes(tmp_path: Path) -> None:
    """At speed 100 the bottling line's scheduled capper fault (90 s) comes after ~1 s."""
    mb, ua = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli.main", "simulate", "bottling-line", "--speed", "100",
                             "--modbus-port", str(mb), "--opcua-port", str(ua)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not any("capper: running -> fault" in ln for ln in lines):
            r, _, _ = select.select([proc.stdout], [], [], 0.5)
            if r:
                line = proc.stdout.readline()
                if not line:
                    break
                lines.append(line)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    assert lines and lines[0].startswith(f"ready bottling-line modbus=127.0.0.1:{mb} opcua=opc.tcp://127.0.0.1:{ua}/line")
    assert "machines=5 points=61" in lines[0]
    assert any("capper: running -> fault" in ln for ln in lines), "".join(lines) + err
    assert proc.returncode == 0, err
