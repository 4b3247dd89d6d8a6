"""The CLI as a user runs it: a real process, exit codes, stderr lines, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli.main", *args], capture_output=True, text=True, timeout=60,
        env={**os.environ, **(env or {})},
    )


BAD = """\
site: {enterprise: acme}
sources:
  line:
    type: synthetic
    interval: fast
    devices:
      m1:
        tags:
          - {name: t, signal: sine, unti: degC}
  plc:
    type: profinet
sinks:
  store: {type: sqlite, retention: 30d, keepalive: 5}
log: {level: loud}
"""


def test_validate_reports_every_problem_with_exact_paths(tmp_path: Path) -> None:
    cfg = tmp_path / "plant.yaml"
    cfg.write_text(BAD)
    res = cli("validate", "-c", str(cfg))
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    expected_starts = [
        f"{cfg}: sources.line.interval: expected a duration such as 250ms, 1s, 5m",
        f"{cfg}: sources.line.devices.m1.tags.0.unti: unknown key; did you mean 'unit'?",
        f"{cfg}: sources.plc.type: unknown source type 'profinet'; installed: ",
        f"{cfg}: sinks.store.keepalive: unknown key",
        f"{cfg}: log.level: ",
    ]
    for start in expected_starts:
        assert any(line.startswith(start) for line in lines), f"missing {start!r} in:\n{res.stderr}"
    assert len(lines) == len(expected_starts), res.stderr


def test_validate_ok_and_env_override_of_one_field(tmp_path: Path) -> None:
    res = cli("validate", "-c", "configs/example.yaml")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "configs/example.yaml: ok (1 sources, 1 sinks)"
    bad = cli("validate", "-c", "configs/example.yaml", env={"EDGEGW_SINKS__LOCAL_STORE__RETENTION": "soon"})
    assert bad.returncode == 2
    assert bad.stderr.startswith("EDGEGW_SINKS__LOCAL_STORE__RETENTION: sinks.local_store.retention: expected a "
                                 "duration")


def test_schema_lists_installed_plugins() -> None:
    res = cli("schema")
    assert res.returncode == 0, res.stderr
    schema = json.loads(res.stdout)
    text = json.dumps(schema)
    for kind in ("synthetic", "sqlite", "discard"):
        assert f'"{kind}"' in text


@pytest.fixture
def writable_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "w.yaml"
    cfg.write_text(
        f"data_dir: {tmp_path / 'data'}\n"
        "sources:\n  line:\n    type: synthetic\n    devices:\n      m1:\n        tags:\n"
        "          - {name: sp, signal: constant, value: 10, writable: true, min: 0, max: 100, scale: 0.1}\n"
        "          - {name: ro, signal: constant, value: 1}\n"
    )
    return cfg


def test_write_checks_writable_and_limits(writable_config: Path) -> None:
    ok = cli("write", "-c", str(writable_config), "line.m1", "sp", "42.5")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "line.m1.sp <- 42.5"
    ro = cli("write", "-c", str(writable_config), "line.m1", "ro", "2")
    assert ro.returncode == 2 and "line.m1.ro is not writable" in ro.stderr
    high = cli("write", "-c", str(writable_config), "line.m1", "sp", "250")
    assert high.returncode == 1 and "above the tag's maximum 100" in high.stderr
    nodev = cli("write", "-c", str(writable_config), "line.m9", "sp", "1")
    assert nodev.returncode == 2 and "no tag 'sp' on line.m9" in nodev.stderr
    for res in (ok, ro, high, nodev):
        assert "Traceback" not in res.stderr


def test_missing_config_file_is_one_line() -> None:
    res = cli("run", "-c", "/nonexistent/gw.yaml")
    assert res.returncode == 2
    assert res.stderr.strip() == "/nonexistent/gw.yaml: no such file"


def test_example_config_commented_connector_blocks_are_valid(tmp_path: Path) -> None:
    """The commented modbus/opcua/mqtt/sparkplug/influxdb blocks in configs/example.yaml are real config: uncommented,
    they validate (so the documentation cannot drift from the plug-ins)."""
    import re

    from gateway.config.loader import load_config

    prose = ("Modbus", "connectors", "OPC-UA", "explore", "MQTT", "Sparkplug", "InfluxDB")
    lines = []
    for line in Path("configs/example.yaml").read_text().splitlines():
        m = re.match(r"^  # ( *)(\S.*)$", line)
        lines.append("  " + m.group(1) + m.group(2) if m and not m.group(2).startswith(prose) else line)
    full = tmp_path / "example_full.yaml"
    full.write_text("\n".join(lines) + "\n")
    cfg = load_config(full, env={})
    assert {n: c.type for n, c in cfg.sources.items()} == {
        "packaging_line": "synthetic", "filler_plc": "modbus", "line_server": "opcua"}
    assert {n: c.type for n, c in cfg.sinks.items()} == {
        "local_store": "sqlite", "plant_broker": "mqtt", "scada": "sparkplug", "historian": "influxdb"}
