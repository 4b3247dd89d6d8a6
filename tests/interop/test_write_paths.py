"""Every write path against devices we did not write: ``edge-gateway write`` (a real process) on the
pymodbus datastore device, the OPC-UA source's write (what the MQTT command path calls) on node-opcua's
sample arrays, and a CLI write to an OPC-UA device that never answers. Nothing a tag does not accept
exactly reaches a device, and every CLI attempt leaves one audit event."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config.base import TagBase
from gateway.errors import WriteError
from gateway.model import Value
from gateway.writes import write_value
from tests.connectors.opcua.support import running
from tests.interop.modbus_device import CONTROL, SETPOINT, UNIT, datasheet_device
from tests.servers import free_port
from tests.waiting import until as wait_until

FC_READ_COILS, FC_WRITE_COIL, FC_MASK_WRITE = 1, 5, 22
READS = {1, 2, 3, 4}


def modbus_config(port: int, data_dir: Path) -> dict[str, Any]:
    return {"data_dir": str(data_dir), "http": {"enabled": False}, "sources": {"meter": {
        "type": "modbus", "host": "127.0.0.1", "port": port, "timeout": "1s", "devices": {"skid": {
            "unit": UNIT, "tags": [
                {"name": "pump_on", "table": "coil", "type": "bool", "address": 0, "writable": True},
                {"name": "cmd_start", "type": "bit", "bit": 0, "address": CONTROL, "writable": True},
                {"name": "flow_sp", "type": "uint16", "address": SETPOINT, "scale": 0.1, "writable": True},
                {"name": "level", "type": "uint16", "address": 45},
            ]}}}}, "sinks": {"none": {"type": "discard"}}}


def cli(config_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli.main", "write", "-c", str(config_path), *args],
                          capture_output=True, text=True, timeout=60, env={**os.environ})


def audit_events(stderr: str) -> list[dict[str, Any]]:
    """The JSON log lines of logger gateway.audit (stderr is not a terminal: the logs are JSON)."""
    events = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("logger") == "gateway.audit":
                events.append(event)
    return events


@pytest.mark.timeout(120)
async def test_the_cli_writes_a_modbus_device_only_what_each_tag_accepts_and_audits_every_attempt(
        tmp_path: Path) -> None:
    port = free_port()
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(modbus_config(port, tmp_path)))
    async with datasheet_device(port) as device:
        async def coil() -> bool:
            return bool((await device.server.async_getValues(UNIT, FC_READ_COILS, 0, 1))[0])

        async def run(tag: str, text: str) -> tuple[subprocess.CompletedProcess[str], set[int]]:
            """The command's result and the write functions it sent (the source's own polls only read;
            pymodbus's datastore reports each request to its action hook twice, hence a set)."""
            mark = len(device.functions)
            res = await asyncio.to_thread(cli, path, "meter.skid", tag, text)
            assert "Traceback" not in res.stderr, res.stderr
            events = audit_events(res.stderr)
            assert len(events) == 1, res.stderr  # one audit event per attempt, executed or refused
            event = events[0]
            assert event["target"] == f"meter.skid.{tag}" and event["via"] == "cli"
            assert event["event"] == ("write executed" if res.returncode == 0 else "write refused"), event
            assert len(event["value"]) < 120  # a huge value is cut, it cannot flood the log
            return res, set(device.functions[mark:]) - READS

        assert await coil() is True  # the datasheet's coil 0 is on
        for text, reason in (("maybe", "expected true, false, 1 or 0"), ("on", "expected true, false, 1 or 0"),
                             ("x" * 5000, "expected true, false, 1 or 0")):
            res, functions = await run("pump_on", text)
            assert res.returncode == 1 and reason in res.stderr, res.stderr
            assert functions == set()  # refused before anything reached the device
        assert await coil() is True
        res, functions = await run("pump_on", "false")  # bool("false") would switch it ON
        assert res.returncode == 0 and res.stdout.strip() == "meter.skid.pump_on <- false", res.stderr
        assert functions == {FC_WRITE_COIL} and await coil() is False
        res, _ = await run("pump_on", "1")
        assert res.returncode == 0 and await coil() is True

        res, functions = await run("cmd_start", "true")
        assert res.returncode == 0 and functions == {FC_MASK_WRITE}  # an atomic mask write, not read-modify-write
        assert await device.holding(CONTROL) == [0x00F1]

        for text, reason in (("6553.6", "raw 65536, outside"), ("1.05", "not a whole number"),
                             ("true", "expected a number"), ("nan", "not a finite number")):
            res, functions = await run("flow_sp", text)
            assert res.returncode == 1 and reason in res.stderr, (text, res.stderr)
            assert functions == set()
        res, _ = await run("flow_sp", "6553.5")
        assert res.returncode == 0 and await device.holding(SETPOINT) == [65535]

        res, functions = await run("level", "1")
        assert res.returncode == 2 and "not writable" in res.stderr and functions == set()
        res, functions = await run("nosuch", "1")
        assert res.returncode == 2 and "no tag 'nosuch'" in res.stderr and functions == set()


@pytest.mark.timeout(60)
def test_a_cli_write_to_an_opcua_device_that_never_answers_fails_within_its_timeout(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({"data_dir": str(tmp_path), "sources": {"plc": {"type": "opcua", "devices": {
        "m1": {"endpoint": f"opc.tcp://127.0.0.1:{free_port()}", "timeout": "500ms",
               "tags": [{"name": "sp", "node": "ns=2;s=sp", "writable": True}]}}}},
        "sinks": {"none": {"type": "discard"}}}))
    started = time.monotonic()
    res = cli(path, "--timeout", "1.5", "plc.m1", "sp", "1")
    assert res.returncode == 1, res.stderr
    assert "did not connect within 1.5s (--timeout)" in res.stderr and "Traceback" not in res.stderr
    assert "ConnectionRefused" in res.stderr  # and why, as the source last saw it
    assert time.monotonic() - started < 10
    assert [e["event"] for e in audit_events(res.stderr)] == ["write refused"]


SIM = "urn://node-opcua-simulator"
ARRAYS = {"ints": "Static_Array_Int32", "flags": "Static_Array_Boolean", "floats": "Static_Array_Float",
          "level": "Static_Scalar_Double", "read_only": "AccessLevel_CurrentRead"}


@pytest.mark.timeout(60)
async def test_the_command_path_writes_json_arrays_of_the_nodes_type_and_refuses_the_rest(
        node_opcua_url: str, tmp_path: Path) -> None:
    tags = [{"name": n, "node": f"nsu={SIM};s={node}", "writable": True} for n, node in ARRAYS.items()]
    cfg = {"devices": {"sim": {"endpoint": node_opcua_url, "mode": "poll", "poll_interval": "100ms",
                               "tags": tags}}}
    async with running(cfg, tmp_path) as r:
        await wait_until(lambda: all(r.last(n) is not None for n in ARRAYS), timeout=20, what="every node read")

        async def write(tag: str, value: Value) -> None:
            # exactly what Runtime.write_tag does for an MQTT `{"value": ...}` command
            await write_value(r.source, "sim", TagBase(name=tag, writable=True), value)

        # the server is shared by the session: same lengths as the sample's arrays, restored at the end
        before = {n: r.last(n).value for n in ("ints", "flags", "floats")}  # type: ignore[union-attr]
        size = len(before["ints"])  # type: ignore[arg-type]
        wanted: dict[str, Value] = {"ints": [(-1) ** i * i for i in range(size)],
                                    "flags": [i % 3 == 0 for i in range(len(before["flags"]))],  # type: ignore[arg-type]
                                    "floats": [i - 0.25 for i in range(len(before["floats"]))]}  # type: ignore[arg-type]
        for tag, value in wanted.items():
            await write(tag, value)
        await wait_until(lambda: all(r.last(t).value == v for t, v in wanted.items()),  # type: ignore[union-attr]
                         what="arrays written")
        refusals: list[tuple[str, Value, str]] = [
            ("ints", 5, "accepts a JSON array of a whole number"),  # a scalar into an array node
            ("ints", [1, 2.5], "not a whole number"),
            ("ints", [1, 2**31], "outside"),
            ("ints", ["1"], "accepts a JSON array"),
            ("flags", [1, 0], "accepts a JSON array of true or false"),  # 1/0 are not Booleans
            ("flags", ["false"], "accepts a JSON array of true or false"),
            ("floats", [1e39], "outside"),  # beyond float32
            ("level", [1.0, 2.0], "accepts a number"),  # an array into a scalar node
            ("level", True, "accepts a number"),
        ]
        for tag, value, reason in refusals:
            with pytest.raises(WriteError, match=reason):
                await write(tag, value)
        with pytest.raises(WriteError, match="Bad"):  # the server's own refusal, with its status name
            await write("read_only", 1.0)
        seen = len(r.of("ints"))  # three more polls: nothing refused may have changed the arrays
        await wait_until(lambda: len(r.of("ints")) >= seen + 3, what="three more polls")
        assert {t: r.last(t).value for t in wanted} == wanted  # type: ignore[union-attr]
        for tag, value in before.items():
            await write(tag, value)
