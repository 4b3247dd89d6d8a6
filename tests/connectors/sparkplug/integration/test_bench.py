"""``edge-gateway bench sparkplug`` run small through the harness's child-process path: a broker restart in
the middle, and the host finds every value the line produced."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.result import BenchResult


@pytest.mark.timeout(90)
def test_bench_sparkplug_small_run_loses_nothing_across_a_broker_restart() -> None:
    params = {"tags": 300, "devices": 3, "interval": 0.2, "duration": 2, "outage": 1}
    proc = subprocess.run([sys.executable, "-m", "bench.worker", "sparkplug", json.dumps(params)],
                          capture_output=True, text=True, timeout=80, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = BenchResult.from_json(proc.stdout.strip().splitlines()[-1])
    n = r.notes
    assert (n["lost"], n["unexpected"]) == (0, 0), n
    assert int(n["values in window"]) >= 300 * 20, n  # the steady phase, the outage and the drain
    assert n["births (node/device)"] == "2/6", n  # one session before the restart, one after
    assert abs(float(n["metrics/s at the host"]) - 1500) <= 300, n
    assert isinstance(n["drain/s"], int) and r.cpu_s > 0
