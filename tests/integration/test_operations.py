"""Operating with real parts: a Modbus simulator in, a real mosquitto out. /health and /metrics follow a
simulator that stops and a broker that goes down; hot reload adds a device and changes a sink's topic."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway.config.loader import load_config
from gateway.runtime import Runtime
from simulators.modbus.config import SimulatorConfig
from simulators.modbus.server import ModbusSimulator
from tests.mqtt_subscriber import Subscriber
from tests.servers import Mosquitto, free_port, mosquitto
from tests.waiting import until

SIM = {"devices": {
    "filler": {"unit": 1, "tags": [
        {"name": "speed", "address": 0, "type": "int16", "signal": "counter"},
        {"name": "temp", "address": 200, "type": "int16", "signal": "constant", "value": 40}],
        "faults": [{"table": "holding", "address": 200, "exception": 2}]},  # illegal address on one block
    "capper": {"unit": 2, "tags": [{"name": "torque", "address": 10, "type": "int16", "signal": "counter"}]},
    "labeller": {"unit": 3, "tags": [{"name": "labels", "address": 20, "type": "int16", "signal": "counter"}]},
}}


def gateway_config(tmp_path: Path, sim_port: int, broker_port: int, devices: tuple[str, ...],
                   topic: str) -> dict[str, Any]:
    tags = {"filler": [{"name": "speed", "address": 0, "type": "int16"},
                       {"name": "temp", "address": 200, "type": "int16"}],
            "capper": [{"name": "torque", "address": 10, "type": "int16"}],
            "labeller": [{"name": "labels", "address": 20, "type": "int16"}]}
    units = {"filler": 1, "capper": 2, "labeller": 3}
    return {
        "data_dir": str(tmp_path / "data"),
        "http": {"port": 0, "device_grace": "0s"},
        "sources": {"line": {
            "type": "modbus", "host": "127.0.0.1", "port": sim_port, "interval": "100ms", "timeout": "300ms",
            "reconnect_initial": "50ms", "reconnect_max": "200ms",
            "devices": {d: {"unit": units[d], "tags": tags[d]} for d in devices}}},
        "sinks": {
            "plant": {"type": "mqtt", "port": broker_port, "layout": "tag", "topic": topic, "qos": 1,
                      "max_pending_age": "1s", "retry_initial": "50ms", "retry_max": "200ms"},
            "local": {"type": "sqlite"},
        },
    }


class Broker:
    """A mosquitto that a test can stop and start again on the same port, keeping its sessions."""

    def __init__(self, workdir: Path) -> None:
        self.workdir, self.port = workdir, free_port()
        self._cm: AbstractContextManager[Mosquitto] | None = None

    def start(self) -> None:
        self._cm = mosquitto(self.workdir, port=self.port)
        self._cm.__enter__()

    def stop(self) -> None:
        if self._cm is not None:
            self._cm.__exit__(None, None, None)
            self._cm = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "broker")
    b.start()
    try:
        yield b
    finally:
        b.stop()


async def http_get(rt: Runtime, path: str) -> tuple[int, Any]:
    assert rt.http is not None and rt.http.port

    def fetch() -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{rt.http.port}{path}", timeout=5) as r:
                body, status = r.read(), r.status
        except urllib.error.HTTPError as err:
            body, status = err.read(), err.code
        return status, (body.decode() if path == "/metrics" else json.loads(body))

    return await asyncio.to_thread(fetch)


def error_count(text: str, device: str, code: str) -> float:
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "edgegw_device_errors_total" and s.labels == {"source": "line", "device": device,
                                                                         "code": code}:
                return s.value
    return 0.0


@pytest.mark.timeout(120)
async def test_health_and_metrics_follow_simulator_and_broker(tmp_path: Path, broker: Broker) -> None:
    sim_port = free_port()
    sim = ModbusSimulator(SimulatorConfig.model_validate(SIM), port=sim_port)
    await sim.start()
    cfg = gateway_config(tmp_path, sim_port, broker.port, ("filler", "capper"), "t/{device}/{tag}")
    rt = Runtime(load_config(_write(tmp_path, cfg)))
    stop = asyncio.Event()
    task = asyncio.create_task(rt.run(stop))
    try:
        await asyncio.wait_for(rt.started.wait(), 10)

        async def health(code: int) -> Any:
            status, body = await http_get(rt, "/health")
            return body if status == code else None

        await until(lambda: health(200))
        _, detail = await http_get(rt, "/api/status")
        states = {d["device"]: d["state"] for d in detail["devices"]}
        assert states == {"filler": "partial", "capper": "ok"}  # temp's block answers exception 2

        # Exception responses are counted by the code's name, and the counter moves.
        _, text = await http_get(rt, "/metrics")
        first = error_count(text, "filler", "IllegalDataAddress")
        assert first >= 1

        async def more_errors() -> bool:
            return error_count((await http_get(rt, "/metrics"))[1], "filler", "IllegalDataAddress") > first

        await until(more_errors)

        # The simulator stops: both devices are unhealthy, by name; it comes back: healthy again.
        await sim.stop()
        body = await until(lambda: health(503))
        assert {p.split(":")[0] for p in body["problems"]} >= {"device line.filler", "device line.capper"}
        sim = ModbusSimulator(SimulatorConfig.model_validate(SIM), port=sim_port)
        await sim.start()
        await until(lambda: health(200))

        # The broker goes down: the MQTT sink's backlog ages past 1 s; the local store is unaffected.
        broker.stop()
        body = await until(lambda: health(503))
        assert [p.split(":")[0] for p in body["problems"]] == ["sink plant"]
        _, detail = await http_get(rt, "/api/status")
        assert {s["name"]: s["healthy"] for s in detail["sinks"]} == {"plant": False, "local": True}
        broker.start()
        await until(lambda: health(200), timeout=30)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        await sim.stop()


@pytest.mark.timeout(120)
async def test_reload_adds_a_device_and_changes_a_topic_without_loss(tmp_path: Path, broker: Broker) -> None:
    sim_port = free_port()
    sim = ModbusSimulator(SimulatorConfig.model_validate(SIM), port=sim_port)
    await sim.start()
    cfg = gateway_config(tmp_path, sim_port, broker.port, ("filler", "capper"), "old/{device}/{tag}")
    path = _write(tmp_path, cfg)
    rt = Runtime(load_config(path))
    stop = asyncio.Event()
    task = asyncio.create_task(rt.run(stop))
    with Subscriber(broker.port, ["old/#", "new/#"]) as sub:
        try:
            await asyncio.wait_for(rt.started.wait(), 10)
            await sub.wait_for(lambda m: any(r.topic == "old/capper/torque" for r in m))
            local_before = rt.deliveries["local"]

            # Add a device and move the MQTT sink to a new topic.
            cfg2 = gateway_config(tmp_path, sim_port, broker.port, ("filler", "capper", "labeller"),
                                  "new/{device}/{tag}")
            _write(tmp_path, cfg2)
            assert await rt.reload_from_file()
            assert rt.deliveries["local"] is local_before  # the unchanged sink was not restarted
            await sub.wait_for(lambda m: any(r.topic == "new/labeller/labels" for r in m))
            await sub.wait_for(lambda m: any(r.topic == "new/capper/torque" for r in m))

            # An invalid edit is rejected; the running config stays.
            bad = dict(cfg2, sinks={**cfg2["sinks"], "plant": {**cfg2["sinks"]["plant"], "qos": 7}})
            _write(tmp_path, bad)
            assert not await rt.reload_from_file()
            assert rt.config.sinks["plant"].qos == 1  # type: ignore[attr-defined]
        finally:
            # Stop collecting, let the unchanged local store drain, then compare with what came in.
            _write(tmp_path, dict(cfg2, sources={}))
            assert await rt.reload_from_file()
            taken = rt.metrics.registry.get_sample_value("edgegw_samples_in_total", {"source": "line"})
            local = rt.deliveries["local"]
            await until(lambda: asyncio.sleep(0, local.reader is not None and local.reader.pending_samples() == 0))
            stop.set()
            await asyncio.wait_for(task, 5)
            await sim.stop()
    from connectors.sqlite.query import query_points

    points = query_points(tmp_path / "data" / "store.db")
    keys = [(p.device, p.tag, p.ts_ns) for p in points]
    assert len(keys) == len(set(keys)) == taken  # every sample exactly once in the unchanged sink
    assert {p.device for p in points} == {"filler", "capper", "labeller"}


def _write(tmp_path: Path, cfg: dict[str, Any]) -> Path:
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path
