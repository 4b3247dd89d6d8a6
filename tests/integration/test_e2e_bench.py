"""The e2e benchmark run small through the harness's own child-process path: simulators, mosquitto,
VictoriaMetrics and the subscriber for real (missing binaries fail the test rather than skip it)."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from bench.result import BenchResult

pytestmark = pytest.mark.integration


@pytest.mark.timeout(120)
def test_e2e_small_run_loses_nothing_and_writes_its_report(tmp_path: Path) -> None:
    tags, duration = 200, 4.0
    proc = subprocess.run(
        [sys.executable, "-m", "bench.worker", "e2e",
         json.dumps({"tags": tags, "duration": duration, "out": str(tmp_path)})],
        capture_output=True, text=True, timeout=110, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = BenchResult.from_json(proc.stdout.strip().splitlines()[-1])
    n = r.notes
    assert (n["modbus"], n["opcua"]) == (100, 100)
    assert n["loss_mqtt"] == 0 and n["loss_influx"] == 0, n
    assert n["tags_missing"] == 0, n
    # every tag once a second; a tick may straddle the window's edges
    assert r.samples_out > 0
    assert abs(r.samples_out - tags * duration) <= 0.1 * tags * duration, n
    for key in ("p50_ms", "p99_ms", "modbus_p99_ms", "opcua_p99_ms", "gateway_p50_ms", "gateway_p99_ms"):
        assert isinstance(n[key], float) and n[key] > 0, (key, n)
    assert float(n["p50_ms"]) <= float(n["p99_ms"])
    # every message paired with its values' receipt; the gateway's part is within the end-to-end figure
    assert n["gateway_unpaired"] == 0, n
    assert float(n["gateway_opcua_p99_ms"]) <= float(n["opcua_p99_ms"]), n
    assert r.cpu_s > 0 and r.peak_rss_mib > 0

    svg = ET.parse(tmp_path / "e2e.svg").getroot()
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    assert svg.findall(".//{http://www.w3.org/2000/svg}circle")  # the plotted point(s)
    report = (tmp_path / "e2e.md").read_text()
    assert "| 200 (100 + 100) |" in report and "edge-gateway bench e2e" in report


@pytest.mark.timeout(120)
def test_startup_scenario_times_a_real_start_in_order() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.worker", "startup", json.dumps({"devices": 5, "tags": 200})],
        capture_output=True, text=True, timeout=110, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = BenchResult.from_json(proc.stdout.strip().splitlines()[-1])
    n = r.notes
    assert n["tags"] == 1000
    assert 0 < float(n["load_s"]) <= float(n["started_s"]) <= float(n["first_scan_s"]) < 60, n
    assert r.wall_s == n["first_scan_s"] and r.peak_rss_mib > 20
