"""A sink resumes the moment its uplink is back, not when its retry backoff expires; a flapping or
refusing uplink shows in the sink's health problems. Real mosquitto and VictoriaMetrics."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.runtime import Runtime
from tests.gateways import StartGateway
from tests.servers import free_port, mosquitto, victoria_metrics
from tests.waiting import until

RETRY = {"retry_initial": "40s", "retry_max": "60s"}  # a retry timer alone would wait 20-40 s


def config(tmp_path: Path, sink: dict[str, Any]) -> Path:
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump({
        "data_dir": str(tmp_path / "data"), "http": {"enabled": False},
        "sources": {"line": {"type": "synthetic", "interval": "50ms", "devices": {"m1": {"tags": [
            {"name": "t", "signal": "sine"}]}}}},
        "sinks": {"up": {**sink, **RETRY}},
    }))
    return path


def failing(runtime: Runtime) -> bool:
    return runtime.deliveries["up"].failing


@pytest.mark.timeout(60)
async def test_mqtt_sink_resumes_when_the_broker_accepts_it_not_when_its_timer_ends(
        tmp_path: Path, gateway: StartGateway) -> None:
    port = free_port()
    runtime: Runtime = await gateway(config(tmp_path, {
        "type": "mqtt", "port": port, "reconnect_min": "1s", "reconnect_max": "1s"}))
    d = runtime.deliveries["up"]
    await until(lambda: failing(runtime), 10, "first write fails (broker down)")
    with mosquitto(tmp_path / "broker", port=port):
        t0 = time.monotonic()
        await until(lambda: d.delivered > 0, 15, "delivery after the broker is back")
        took = time.monotonic() - t0
        assert took < 8, took  # the 40 s retry timer did not decide it
        assert d.resumed_on_uplink >= 1
        assert d.health_problems() == []


@pytest.mark.timeout(60)
async def test_influx_sink_resumes_when_the_store_answers_its_probe(
        tmp_path: Path, gateway: StartGateway) -> None:
    port = free_port()
    runtime: Runtime = await gateway(config(tmp_path, {
        "type": "influxdb", "url": f"http://127.0.0.1:{port}", "token": "t", "org": "o", "bucket": "b"}))
    d = runtime.deliveries["up"]
    await until(lambda: failing(runtime), 10, "first write fails (store down)")
    with victoria_metrics(tmp_path / "vm", port=port):
        t0 = time.monotonic()
        await until(lambda: d.delivered > 0, 20, "delivery after the store is back")
        took = time.monotonic() - t0
        assert took < 8, took
        assert d.resumed_on_uplink >= 1


@pytest.mark.timeout(90)
async def test_broker_flaps_are_caught_and_show_as_a_reconnect_loop(
        tmp_path: Path, gateway: StartGateway) -> None:
    port = free_port()
    runtime: Runtime = await gateway(config(tmp_path, {
        "type": "mqtt", "port": port, "reconnect_min": "1s", "reconnect_max": "2s"}))
    d = runtime.deliveries["up"]
    link = runtime.sinks["up"].link  # type: ignore[attr-defined]
    for i in range(4):  # the broker is up for a few seconds at a time; each window is caught
        with mosquitto(tmp_path / f"b{i}", port=port):
            await until(lambda n=i: link.connects > n, 10, f"connect in up window {i}")  # type: ignore[misc]
            before = d.delivered
            await until(lambda b=before: d.delivered > b, 10, f"delivery in up window {i}")  # type: ignore[misc]
        await until(lambda: not link.connected, 10, "link down")
    assert link.connects == 4
    problems = d.health_problems()
    assert any(p.startswith("reconnect loop: 4 connections lost") for p in problems), problems
    assert not any("127.0.0.1" in p or str(port) in p for p in problems)


@pytest.mark.timeout(60)
async def test_refused_login_is_a_health_problem(tmp_path: Path, gateway: StartGateway) -> None:
    pw = tmp_path / "passwd"
    pw.write_text("")
    with mosquitto(tmp_path / "broker", listener_config=f"password_file {pw}\n", allow_anonymous=False) as broker:
        runtime: Runtime = await gateway(config(tmp_path, {
            "type": "mqtt", "port": broker.port, "username": "gw", "password": "wrong",
            "reconnect_min": "1s", "reconnect_max": "1s"}))
        d = runtime.deliveries["up"]
        await until(lambda: "the broker refuses the login" in d.health_problems(), 15, "login refusal reported")
        assert all("wrong" not in p for p in d.health_problems())
