"""Retry settings and sizes are checked at load: the file, the field path and what was expected, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli.main import main

SOURCE = "sources:\n  line: {type: synthetic, devices: {m1: {tags: [{name: t, signal: sine}]}}}\n"


@pytest.mark.parametrize(("body", "expected"), [
    ("sinks:\n  up: {type: mqtt, retry_initial: 10s, retry_max: 1s}\n",
     "sinks.up: retry_max (1 s) must be at least retry_initial (10 s)"),
    ("sinks:\n  up: {type: mqtt, reconnect_min: 5s, reconnect_max: 1s}\n",
     "sinks.up: reconnect_max (1 s) must be at least reconnect_min (5 s)"),
    ("sinks:\n  store: {type: sqlite, retry_initial: 0}\n",
     "sinks.store.retry_initial: Input should be greater than 0"),
    ("sinks:\n  store: {type: sqlite, max_pending_age: 0s}\n", "sinks.store.max_pending_age: Input should be greater"),
    ("sinks:\n  store: {type: sqlite, batch_max_samples: 0}\n",
     "sinks.store.batch_max_samples: Input should be greater"),
    ("spool: {commit_interval: 2m}\n", "spool.commit_interval: Input should be less than or equal to 60"),
    ("spool: {max_size: 12 apples}\n", "spool.max_size: could not interpret byte unit: apples"),
    ("spool: {max_age: -5s}\n", "spool.max_age: "),
    ("http: {health_window: 0}\n", "http.health_window: Input should be greater than 0"),
])
def test_bad_retry_and_size_settings_name_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    body: str, expected: str) -> None:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(SOURCE + body)
    assert main(["validate", "-c", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"{cfg}: {expected}" in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize(("source", "expected"), [
    ("{type: modbus, host: plc, reconnect_initial: 10s, reconnect_max: 2s, devices: {m: {unit: 1, tags: "
     "[{name: t, address: 0}]}}}", "sources.plc: reconnect_max (2 s) must be at least reconnect_initial (10 s)"),
    ("{type: opcua, devices: {m: {endpoint: 'opc.tcp://h:4840', reconnect_initial: 1m, reconnect_max: 5s, "
     "tags: [{name: t, node: 'ns=2;i=1'}]}}}",
     "sources.plc.devices.m: reconnect_max (5 s) must be at least reconnect_initial (60 s)"),
])
def test_a_reconnect_ceiling_below_its_first_delay_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                               source: str, expected: str) -> None:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(f"sources:\n  plc: {source}\n")
    assert main(["validate", "-c", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"{cfg}: {expected}" in err, err
