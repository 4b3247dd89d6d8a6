"""The service files run what they say: the container HEALTHCHECK command and the systemd unit's commands
are executed here against a real gateway and config (no Docker engine or systemd on CI machines)."""

from __future__ import annotations

import asyncio
import configparser
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from gateway.config.loader import load_config
from gateway.runtime import Runtime
from tests.fakes import ToggleSource

ROOT = Path(__file__).resolve().parents[2]


def healthcheck_command(port: int) -> list[str]:
    text = (ROOT / "Dockerfile").read_text()
    match = re.search(r"HEALTHCHECK [^\n]*\\\n\s*CMD (\[.*\])", text)
    assert match, "Dockerfile has no exec-form HEALTHCHECK"
    cmd: list[str] = json.loads(match.group(1))
    assert cmd[:3] == ["python", "-m", "gateway.healthcheck"]
    return [sys.executable, *cmd[1:-1], cmd[-1].replace(":8750/", f":{port}/")]


async def test_container_healthcheck_follows_health(tmp_path: Path, fake_plugins: None) -> None:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(yaml.safe_dump({
        "data_dir": str(tmp_path / "data"), "http": {"port": 0, "device_grace": "0s"},
        "sources": {"line": {"type": "toggle", "devices": ["m1"]}},
        "sinks": {"rec": {"type": "recording"}},
    }))
    runtime = Runtime(load_config(cfg))
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    await asyncio.wait_for(runtime.started.wait(), 10)
    assert runtime.http is not None and runtime.http.port
    cmd = healthcheck_command(runtime.http.port)

    async def run_check() -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True, timeout=30)

    async def until_rc(rc: int) -> subprocess.CompletedProcess[str]:
        for _ in range(100):
            res = await run_check()
            if res.returncode == rc:
                return res
            await asyncio.sleep(0.1)
        raise AssertionError(f"healthcheck never returned {rc}")

    try:
        assert (await until_rc(0)).stdout.strip() == "healthy"
        ToggleSource.down = {"m1"}
        assert (await until_rc(1)).stdout.strip() == "device line.m1: not connected"
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    res = await run_check()  # gateway gone
    assert res.returncode == 1 and "not reachable" in res.stdout


def test_systemd_unit_commands_work_against_the_example_config(tmp_path: Path) -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(ROOT / "edge-gateway.service")
    service = unit["Service"]
    assert service["StateDirectory"] == "edge-gateway" and service["Restart"] == "always"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    exe = str(Path(sys.executable).parent / "edge-gateway")
    for key in ("ExecStartPre", "ExecStart"):
        argv = shlex.split(service[key])
        assert argv[0] == "/opt/edge-gateway/bin/edge-gateway" and argv[-2:] == ["-c", "/etc/edge-gateway/gateway.yaml"]
    validate = shlex.split(service["ExecStartPre"])
    argv = [exe, *validate[1:-1], str(ROOT / "configs" / "example.yaml")]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
