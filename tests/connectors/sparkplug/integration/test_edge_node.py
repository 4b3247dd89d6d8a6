"""The Sparkplug B edge node against a real mosquitto, judged by parties we did not write: Eclipse Tahu's
JavaScript payload codec decodes what it published, and a host application (``tests.connectors.sparkplug.host``)
checks the session rules (births, deaths, seq, bdSeq, aliases) across a broker restart, a ``kill -9`` of the
gateway, a device outage, a rebirth request and the primary host going away, while the data stays complete
(nothing the spool held is missing at the host)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from connectors.sparkplug.config import SparkplugSinkConfig
from connectors.sparkplug.sink import SparkplugSink
from gateway.config.site import SiteConfig
from gateway.logs import get_logger
from gateway.model import Batch, Quality, Sample, Value
from tests.connectors.sparkplug.host import Event, Host
from tests.fakes import RecordingSink, ToggleSource
from tests.gateways import StartGateway
from tests.servers import Mosquitto, mosquitto
from tests.waiting import until

INTEROP = Path(__file__).resolve().parents[3] / "interop"
TS = 1_795_460_550_318_000_000
MS = TS // 1_000_000

pytestmark = pytest.mark.timeout(90)


def site(group: str) -> dict[str, str]:
    return {"enterprise": "acme", "site": group, "area": "packaging", "line": "line1"}


def births(events: list[Event]) -> list[Event]:
    return [e for e in events if e.kind == "NBIRTH"]


def decode_with_tahu(messages: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
    """Eclipse Tahu's sparkplug-payload (tests/interop, installed by ``./dev test``) decodes the messages."""
    node = shutil.which("node")
    if node is None or not (INTEROP / "node_modules" / "sparkplug-payload").is_dir():
        raise RuntimeError("node and tests/interop/node_modules are needed: run the tests with ./dev test")
    lines = "".join(json.dumps({"topic": t, "payload": base64.b64encode(p).decode()}) + "\n" for t, p in messages)
    out = subprocess.run([node, str(INTEROP / "sparkplug_decode.js")], input=lines, capture_output=True, text=True,
                         timeout=30, check=True)
    return [json.loads(line) for line in out.stdout.splitlines()]


def delivered_changes(samples: list[Sample]) -> dict[tuple[str, str], dict[int, Value]]:
    """What a host must have received of ``samples`` by exception: each metric's values that differ from the one
    before (and the first), by timestamp (ms)."""
    out: dict[tuple[str, str], dict[int, Value]] = {}
    last: dict[tuple[str, str], Value] = {}
    for s in samples:
        key = (s.device, s.tag)
        if key not in last or last[key] != s.value:
            out.setdefault(key, {})[s.source_ts // 1_000_000] = s.value
        last[key] = s.value
    return out


def assert_complete(host: Host, samples: list[Sample], until_ms: int) -> int:
    """Every change ``samples`` hold up to ``until_ms`` is at the host, with its value and timestamp."""
    expected = delivered_changes([s for s in samples if s.source_ts // 1_000_000 <= until_ms])
    got = host.received()
    missing = [(k, ts, v) for k, values in expected.items() for ts, v in values.items()
               if got.get(k, {}).get(ts, "missing") != v]
    assert not missing, f"{len(missing)} values missing or wrong at the host, e.g. {missing[:5]}"
    return sum(len(v) for v in expected.values())


# --- the payloads, decoded by Eclipse Tahu's JavaScript codec ----------------------------------------------


@pytest.mark.parametrize(("protocol", "qos"), [("3.1.1", 1), ("5", 0)])
async def test_tahu_javascript_codec_decodes_births_data_and_deaths(mosquitto_server: Mosquitto, tmp_path: Path,
                                                                    protocol: str, qos: int) -> None:
    group = f"js{qos}"
    config = SparkplugSinkConfig.model_validate({
        "port": mosquitto_server.port, "group_id": "{site}", "edge_node_id": "{line}", "protocol": protocol, "qos": qos,
        "datatypes": {"press/mode": "Int16", "press/limit": "UInt32", "press/started": "DateTime",
                      "press/level": "Float"}})
    sink = SparkplugSink("js", config, SiteConfig(**site(group)), log=get_logger("test"), data_dir=str(tmp_path))
    t1 = TS + 1_000_000

    def s(tag: str, value: Value, ts: int = TS, quality: Quality = Quality.GOOD, status: int = 0,
          unit: str | None = None) -> Sample:
        return Sample("press", tag, value, quality, status, ts, ts, unit)

    first = [s("temp", 21.5, unit="degC"), s("count", -7), s("big", 2**64 - 1), s("run", True), s("state", "RUN"),
             s("mode", -300), s("limit", 4_000_000_000), s("started", "2026-11-23T21:07:51.123Z"), s("level", 2.5),
             s("curve", [1.5, -2.0]), s("ids", [1, -2]), s("flags", [True, False, True]), s("names", ["a", "bc"]),
             s("matrix", [[1, 2], [3, 4]]), s("fault", None, quality=Quality.BAD, status=4),
             s("frozen", 3.0, quality=Quality.UNCERTAIN, status=0x40900000)]
    second = [s("temp", 22.25, t1), s("count", -8, t1), s("run", False, t1), s("fault", 1.5, t1),
              s("ids", [7], t1), s("temp", 22.5, t1 + 1_000_000)]
    with Host(mosquitto_server.port, group) as host:
        await sink.open()
        await host.wait_for(births, what="NBIRTH")
        await sink.write([Batch("plc", first)])
        await sink.write([Batch("plc", second)])
        await sink.close()
        await host.wait_for(lambda ev: ev[-1].kind == "NDEATH", what="NDEATH on close")
        raw = list(host.raw)
    assert host.violations == []
    decoded = decode_with_tahu(raw)
    assert [d["topic"] for d in decoded] == [f"spBv1.0/{group}/{k}/line1{d}" for k, d in (
        ("NBIRTH", ""), ("DBIRTH", "/press"), ("DDATA", "/press"), ("NDEATH", ""))]
    assert all("error" not in d for d in decoded), decoded
    nbirth, dbirth, ddata, ndeath = (d["payload"] for d in decoded)
    assert {m["name"]: (m["type"], m["value"]) for m in nbirth["metrics"]} == {
        "bdSeq": ("Int64", "0"), "Node Control/Rebirth": ("Boolean", False)}
    assert nbirth["seq"] == "0" and dbirth["seq"] == "1" and ddata["seq"] == "2" and "seq" not in ndeath
    assert [m["value"] for m in ndeath["metrics"] if m["name"] == "bdSeq"] == ["0"]
    born = {m["name"]: m for m in dbirth["metrics"]}
    assert {n: (m["type"], m["value"]) for n, m in born.items()} == {
        "temp": ("Double", 21.5), "count": ("Int64", "-7"), "big": ("UInt64", "18446744073709551615"),
        "run": ("Boolean", True), "state": ("String", "RUN"), "mode": ("Int16", -300),
        "limit": ("UInt32", 4_000_000_000), "started": ("DateTime", "1795468071123"), "level": ("Float", 2.5),
        "curve": ("DoubleArray", [1.5, -2.0]), "ids": ("Int64Array", ["1", "-2"]),
        "flags": ("BooleanArray", [True, False, True]), "names": ("StringArray", ["a", "bc"]),
        "matrix": ("String", "[[1,2],[3,4]]"), "fault": ("Double", None), "frozen": ("Double", 3)}
    assert all(m["timestamp"] == str(MS) and "alias" in m for m in born.values())
    assert born["temp"]["properties"] == {"engUnit": {"type": "String", "value": "degC"}}
    assert born["fault"]["properties"] == {"Quality": {"type": "Int32", "value": 0},
                                           "Status": {"type": "String", "value": "ServerDeviceFailure"},
                                           "StatusCode": {"type": "UInt32", "value": 4}}
    assert born["frozen"]["properties"]["Quality"]["value"] == 500
    assert born["frozen"]["properties"]["Status"]["value"] == "UncertainLastUsableValue"
    # DDATA: aliases only (the decoder took names and types from the birth, as a host does), by exception
    assert all("alias" in m for m in ddata["metrics"])
    assert [(m["name"], m["value"], int(m["timestamp"]) - MS) for m in ddata["metrics"]] == [
        ("temp", 22.25, 1), ("count", "-8", 1), ("run", False, 1), ("fault", 1.5, 1), ("ids", ["7"], 1),
        ("temp", 22.5, 2)]
    assert ddata["metrics"][3]["properties"]["Quality"]["value"] == 192  # good again, said so


# --- sessions across a broker restart, with nothing lost ---------------------------------------------------


def gateway_config(tmp_path: Path, group: str, port: int, source: dict[str, Any],
                   **sink: Any) -> dict[str, Any]:
    return {
        "data_dir": str(tmp_path / "data"), "site": site(group), "http": {"enabled": False},
        "log": {"level": "info", "format": "json"},
        "sources": {"line": source},
        "sinks": {
            "scada": {"type": "sparkplug", "port": port, "reconnect_min": "1s", "reconnect_max": "1s",
                      "retry_initial": "100ms", "retry_max": "1s", **sink},
            "record": {"type": "recording"},
        },
    }


LINE = {"type": "synthetic", "interval": "50ms", "seed": 3, "devices": {
    "filler": {"tags": [{"name": "count", "signal": "counter"}, {"name": "temp", "signal": "sine", "period": "3s"},
                        {"name": "open", "signal": "square", "period": "1s"}]},
    "capper": {"tags": [{"name": "count", "signal": "counter", "step": 2},
                        {"name": "torque", "signal": "random_walk"}]}}}


async def test_broker_restart_new_session_and_nothing_lost(fake_plugins: None, gateway: StartGateway,
                                                           tmp_path: Path) -> None:
    workdir = tmp_path / "broker"
    with contextlib.ExitStack() as stack:
        broker = mosquitto(workdir)
        port = broker.__enter__().port
        host = stack.enter_context(Host(port, "restart"))
        runtime = await gateway(gateway_config(tmp_path, "restart", port, LINE))
        await host.wait_for(lambda ev: {e.device for e in ev if e.kind == "DBIRTH"} == {"filler", "capper"},
                            what="both devices born")
        await host.wait_for(lambda ev: sum(e.kind == "DDATA" for e in ev) >= 20, what="data flowing")
        await asyncio.to_thread(broker.__exit__, None, None, None)  # stopped off the loop: the gateway runs on
        # the broker is down: the gateway goes on reading, the spool holds it
        record = RecordingSink.instances["record"]
        before = len(record.received)
        await until(lambda: len(record.received) >= before + 150, what="data read during the outage")
        with mosquitto(workdir, port=port):
            (first, second) = await host.wait_for(lambda ev: births(ev)[:2] if len(births(ev)) >= 2 else None,
                                                  timeout=30, what="a new session after the restart")
            assert second.bdseq == (first.bdseq or 0) + 1  # a new CONNECT, a new bdSeq in its will and NBIRTH
            check_ms = time.time_ns() // 1_000_000
            await host.wait_for(lambda ev: min(host.latest(d, "count") for d in ("filler", "capper")) >= check_ms,
                                timeout=30, what="the backlog delivered")
            events, violations = host.snapshot(), list(host.violations)  # before this broker stops too
            assert assert_complete(host, record.received, check_ms) > 150
    session = events[events.index(second):]
    assert [e.kind for e in session[:3]] == ["NBIRTH", "DBIRTH", "DBIRTH"]  # births before any data
    assert violations == []
    assert runtime.sinks["scada"].health_problems() == []


# --- kill -9: the broker's NDEATH, with the session's bdSeq -------------------------------------------------


@pytest.fixture
def gateway_process(tmp_path: Path) -> Iterator[Any]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(cfg: Path) -> subprocess.Popen[bytes]:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli.main", "run", "-c", str(cfg), "--no-watch"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=tmp_path)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


async def test_kill_9_the_will_is_the_sessions_ndeath_and_bdseq_goes_on_after_restart(
        mosquitto_server: Mosquitto, tmp_path: Path, gateway_process: Any) -> None:
    cfg = gateway_config(tmp_path, "killed", mosquitto_server.port, LINE, keepalive="5s")
    del cfg["sinks"]["record"]
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with Host(mosquitto_server.port, "killed") as host:
        proc = gateway_process(path)
        (born,) = await host.wait_for(births, timeout=30, what="NBIRTH of the first process")
        await host.wait_for(lambda ev: any(e.kind == "DDATA" for e in ev), what="data")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        death = await host.wait_for(lambda ev: next((e for e in ev if e.kind == "NDEATH"), None), timeout=15,
                                    what="the will")
        assert (death.bdseq, death.matched) == (born.bdseq, True)  # it ends exactly the session that died
        again = gateway_process(path)
        second = await host.wait_for(lambda ev: births(ev)[1] if len(births(ev)) > 1 else None, timeout=30,
                                     what="NBIRTH of the restarted process")
        assert second.bdseq == (born.bdseq or 0) + 1  # persisted in the data directory across the kill
        await host.wait_for(lambda ev: ev[-1].kind == "DDATA", what="data again")
        again.send_signal(signal.SIGTERM)
        assert again.wait(15) == 0
        last = await host.wait_for(lambda ev: ev[-1] if ev[-1].kind == "NDEATH" else None, what="NDEATH on stop")
        assert (last.bdseq, last.matched) == (second.bdseq, True)
    assert host.violations == []


# --- a device outage and a rebirth request ----------------------------------------------------------------


async def test_device_outage_ddeath_dbirth_and_rebirth_request(fake_plugins: None, gateway: StartGateway,
                                                                mosquitto_server: Mosquitto, tmp_path: Path) -> None:
    source = {"type": "toggle", "devices": ["m1", "m2"], "tags": 3, "interval": 0.05, "bad_when_down": True}
    with Host(mosquitto_server.port, "outage") as host:
        await gateway(gateway_config(tmp_path, "outage", mosquitto_server.port, source))
        await host.wait_for(lambda ev: {e.device for e in ev if e.kind == "DBIRTH"} == {"m1", "m2"}, what="births")
        ToggleSource.down.add("m1")
        await host.wait_for(lambda ev: any(e.kind == "DDEATH" and e.device == "m1" for e in ev), what="DDEATH m1")
        n = len(host.snapshot())
        await host.wait_for(lambda ev: sum(e.kind == "DDATA" and e.device == "m2" for e in ev[n:]) >= 3,
                            what="m2 goes on")
        assert not [e for e in host.snapshot()[n:] if e.device == "m1"]  # nothing of m1 while it is down
        ToggleSource.down.discard("m1")
        rebirth = await host.wait_for(lambda ev: [e for e in ev[n:] if e.kind == "DBIRTH" and e.device == "m1"],
                                      what="DBIRTH m1")
        assert rebirth[0].metrics == ["v0", "v1", "v2"]
        (nbirth,) = births(host.snapshot())
        n = len(host.snapshot())
        host.rebirth("line1")
        await host.wait_for(lambda ev: len(births(ev)) == 2, what="rebirth")
        session = host.snapshot()[n:]
        start = next(i for i, e in enumerate(session) if e.kind == "NBIRTH")
        assert [e.kind for e in session[start:start + 3]] == ["NBIRTH", "DBIRTH", "DBIRTH"]
        assert (session[start].bdseq, session[start].seq) == (nbirth.bdseq, 0)  # same connection, same bdSeq
        await host.wait_for(lambda ev: ev[-1].kind == "DDATA", what="data after the rebirth")
    assert host.violations == []


# --- the primary host's STATE, and writes by DCMD ----------------------------------------------------------


async def test_primary_host_state_holds_data_then_resumes_and_dcmd_writes(
        fake_plugins: None, gateway: StartGateway, mosquitto_server: Mosquitto, tmp_path: Path) -> None:
    source = {"type": "synthetic", "interval": "50ms", "devices": {"press": {"tags": [
        {"name": "count", "signal": "counter"},
        {"name": "speed_sp", "signal": "constant", "value": 100.0, "writable": True},
        {"name": "mode", "signal": "constant", "value": 1}]}}}
    with Host(mosquitto_server.port, "primary", host_id="scada_primary") as host:
        host.state(False, 1)  # a host that was online once and went away: its retained death certificate
        runtime = await gateway(gateway_config(tmp_path, "primary", mosquitto_server.port, source,
                                               primary_host_id="scada_primary", commands={"enabled": True}))
        sink = runtime.sinks["scada"]
        record = RecordingSink.instances["record"]
        await until(lambda: len(record.received) > 30, what="data read")
        assert births(host.snapshot()) == []  # nothing before the primary host is online
        assert "waiting for the primary host application" in sink.health_problems()
        host.state(True, 2)
        (first,) = await host.wait_for(births, what="births once the host is online")
        await host.wait_for(lambda ev: any(e.kind == "DDATA" for e in ev), what="the held data")
        host.state(False, 3)
        death = await host.wait_for(lambda ev: next((e for e in ev if e.kind == "NDEATH"), None), what="NDEATH")
        assert (death.bdseq, death.matched) == (first.bdseq, True)
        held = len(record.received)
        await until(lambda: len(record.received) > held + 30, what="data read while the host is away")
        assert len(births(host.snapshot())) == 1
        host.state(True, 4)
        second = await host.wait_for(lambda ev: births(ev)[1] if len(births(ev)) > 1 else None, timeout=20,
                                     what="births after the host is back")
        assert second.bdseq == (first.bdseq or 0) + 1  # it disconnected: a new connection, a new bdSeq
        check_ms = time.time_ns() // 1_000_000
        await host.wait_for(lambda ev: host.latest("press", "count") >= check_ms, what="the held data delivered")
        assert_complete(host, record.received, check_ms)
        # a write by DCMD: through the command path, and the new value in the device's next DDATA
        host.dcmd("line1", "press", "speed_sp", 250.5)
        await host.wait_for(lambda ev: 250.5 in host.received().get(("press", "speed_sp"), {}).values(),
                            what="the written value in DDATA")
        host.dcmd("line1", "press", "mode", 5, by_alias=False)  # not writable: refused
        host.dcmd("line1", "press", "speed_sp", 1.0, ts=time.time_ns() // 1_000_000 - 60_000)  # too old: refused
        await until(lambda: sink.commands.refused >= 2, what="two refusals")
        await asyncio.sleep(0.3)  # two more polls: neither value shows up
        got = host.received()
        assert set(got[("press", "mode")].values()) == {1}
        assert 1.0 not in got[("press", "speed_sp")].values()
        assert sink.commands.executed == 1
    assert host.violations == []
