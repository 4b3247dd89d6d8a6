"""Health is part of the Source contract: what a source reports is what metrics, /health and the page show,
a plug-in without a health account is refused, and a stopped source is closed."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml

from gateway import health as health_module
from gateway import plugins
from gateway.config.base import SinkConfigBase, SourceConfigBase
from gateway.config.loader import load_config
from gateway.contracts import UplinkReport
from gateway.health import DeviceHealth, HealthRegistry, SourceHealth, UplinkState
from gateway.live import LiveTags
from gateway.metrics import Metrics
from gateway.model import Quality, Sample
from gateway.plugins import PluginError, SinkPlugin, SourcePlugin
from gateway.runtime import Runtime
from gateway.status import StatusBoard
from gateway.status_codes import BAD_TIMEOUT
from tests.fakes import CrashingSource, ToggleSource
from tests.gateways import StartGateway, gateways
from tests.waiting import until


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_metrics_are_a_view_of_the_reported_state() -> None:
    metrics = Metrics()
    health = SourceHealth("line", ["m1", "m2"])
    metrics.health.add_source(health)
    m1, m2 = health.devices["m1"], health.devices["m2"]
    # nothing reported yet: no link state, no errors, no last good read
    assert sample(metrics, "edgegw_device_connected", source="line", device="m1") is None
    m1.up()
    m1.good(1_700_000_000_000_000_000)
    m2.down("not connected")
    m2.failed("BadTimeout", 3)
    m2.failed("IllegalDataAddress")
    assert sample(metrics, "edgegw_device_connected", source="line", device="m1") == 1.0
    assert sample(metrics, "edgegw_device_connected", source="line", device="m2") == 0.0
    assert sample(metrics, "edgegw_device_last_good_read_timestamp_seconds", source="line", device="m1") == 1.7e9
    assert sample(metrics, "edgegw_device_errors_total", source="line", device="m2", code="BadTimeout") == 3.0
    assert sample(metrics, "edgegw_device_errors_total", source="line", device="m2",
                  code="IllegalDataAddress") == 1.0
    assert (m2.last_error, m2.reason) == ("IllegalDataAddress", "not connected")
    m2.good(1)
    assert m2.last_error == ""  # a good read clears the last error, the counts stay
    metrics.health.forget_source("line")
    assert sample(metrics, "edgegw_device_errors_total", source="line", device="m2", code="BadTimeout") is None


def test_components_are_exported_from_the_supervisors_state() -> None:
    registry = HealthRegistry()
    state = registry.component("source:line")
    state.running, state.restarts = True, 2
    families = {f.name: f for f in registry.collect()}
    assert [(s.labels, s.value) for s in families["edgegw_component_up"].samples] == [
        ({"component": "source:line"}, 1.0)]
    assert [s.value for s in families["edgegw_component_restarts"].samples if s.name.endswith("_total")] == [2.0]
    assert registry.source_running() == {"line": True}


class _Uplink:
    def __init__(self) -> None:
        self.state = UplinkState("mq-b:1883", True, 3, 1)

    def uplink(self) -> UplinkState:
        return self.state


def test_a_sinks_uplink_endpoint_is_exported_as_it_reports_it() -> None:
    metrics = Metrics()
    report = _Uplink()
    assert isinstance(report, UplinkReport)
    metrics.health.set_uplink("plant", report)
    assert sample(metrics, "edgegw_sink_uplink", sink="plant", endpoint="mq-b:1883") == 1.0
    assert sample(metrics, "edgegw_sink_failovers_total", sink="plant") == 1.0
    report.state = UplinkState("mq-c:1883", False, 3, 2)  # read when scraped: the next scrape shows the move
    assert sample(metrics, "edgegw_sink_uplink", sink="plant", endpoint="mq-b:1883") is None
    assert sample(metrics, "edgegw_sink_uplink", sink="plant", endpoint="mq-c:1883") == 0.0
    assert sample(metrics, "edgegw_sink_failovers_total", sink="plant") == 2.0
    metrics.health.set_uplink("plant", None)  # the sink removed
    assert sample(metrics, "edgegw_sink_failovers_total", sink="plant") is None


def config(tmp_path: Path, sources: dict[str, Any]) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({
        "data_dir": str(tmp_path / "data"), "http": {"enabled": False}, "sources": sources,
        "sinks": {"out": {"type": "recording"}},
    }))
    return path


async def test_the_status_board_shows_what_the_source_reports(
        tmp_path: Path, fake_plugins: None, gateway: StartGateway) -> None:
    runtime = await gateway(config(tmp_path, {"line": {"type": "toggle", "devices": ["m1", "m2"]}}))
    source = runtime.sources["line"]
    assert isinstance(source, ToggleSource)

    def states() -> dict[str, tuple[str, str]] | None:
        got = {d["device"]: (d["state"], d["reason"]) for d in runtime.board.devices()}
        return got if all(s != "starting" for s, _ in got.values()) else None

    assert await until(states) == {"m1": ("ok", ""), "m2": ("ok", "")}
    source.health.devices["m2"].failed("BadUserAccessDenied")
    ToggleSource.down = {"m2"}
    await until(lambda: runtime.board.devices()[1]["state"] == "link_down")
    m2 = runtime.board.devices()[1]
    assert (m2["reason"], m2["errors"], m2["errors_recent"], m2["last_error"]) == (
        "not connected", {"BadUserAccessDenied": 1}, {"BadUserAccessDenied": 1}, "BadUserAccessDenied")
    ok, body = runtime.board.health()
    assert not ok and body["problems"] == ["device line.m2: not connected"]
    source.health.problems.append("certificate expires in 3 days")
    assert runtime.board.health()[1]["problems"][-1] == "source line: certificate expires in 3 days"


async def test_a_source_without_a_health_account_is_refused(tmp_path: Path, fake_plugins: None) -> None:
    class NoHealth:
        def __init__(self, name: str) -> None:
            self.name = name

        async def run(self, emit: Any) -> None:
            await asyncio.Event().wait()

    class Config(SourceConfigBase):
        type: Literal["nohealth"]

    with plugins.registered(SourcePlugin("nohealth", Config, lambda name, cfg, ctx: NoHealth(name))):
        runtime = Runtime(load_config(config(tmp_path, {"bare": {"type": "nohealth"}})))
        refused = r"'nohealth' does not implement the Source contract .*: no health, close"
        with pytest.raises(PluginError, match=refused):
            await runtime.run(asyncio.Event())


async def test_a_sink_without_a_health_account_is_refused(tmp_path: Path, fake_plugins: None) -> None:
    class Mute:
        def __init__(self, name: str) -> None:
            self.name = name

        async def open(self) -> None: ...

        async def write(self, batches: Any) -> None: ...

        async def close(self) -> None: ...

    class Config(SinkConfigBase):
        type: Literal["mute"]

    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data"), "http": {"enabled": False},
                                    "sources": {"line": {"type": "toggle"}}, "sinks": {"out": {"type": "mute"}}}))
    with plugins.registered(SinkPlugin("mute", Config, lambda name, cfg, ctx: Mute(name))):
        runtime = Runtime(load_config(path))
        with pytest.raises(PluginError, match=r"sink type 'mute' does not implement the Sink contract .*: no "
                                              r"health_problems"):
            await runtime.run(asyncio.Event())


async def test_sources_are_closed_when_stopped_replaced_or_removed(tmp_path: Path, fake_plugins: None) -> None:
    path = config(tmp_path, {"a": {"type": "crashing", "crashes": 0}, "b": {"type": "crashing", "crashes": 0}})
    async with gateways(tmp_path) as gateway:
        runtime = await gateway(path)
        a, b = runtime.sources["a"], runtime.sources["b"]
        assert isinstance(a, CrashingSource) and isinstance(b, CrashingSource)
        await until(lambda: a.counter > 2 and b.counter > 2)
        # a hot reload drops b and changes a: both old instances are closed once, b's health leaves the views
        changed_a = runtime.config.sources["a"].model_copy(update={"per_run": 4})
        await runtime.apply(runtime.config.model_copy(update={"sources": {"a": changed_a}}))
        assert (a.closed, b.closed) == (1, 1)
        assert set(runtime.metrics.health.sources) == {"a"}
        assert "source:b" not in runtime.metrics.health.components
        a2 = runtime.sources["a"]
        assert isinstance(a2, CrashingSource) and a2 is not a
    assert a2.closed == 1  # and the one running at shutdown


def board_of(samples: list[Sample], health: DeviceHealth) -> dict[str, Any]:
    """The one device's row on a board fed ``samples`` and ``health``."""
    metrics = Metrics()
    source = SourceHealth("plc", ["m1"])
    source.devices["m1"] = health
    metrics.health.add_source(source)
    live = LiveTags(0)
    live.record("plc", samples)
    board = StatusBoard(lambda: {"plc": ["m1"]}, list, live, metrics, device_grace=0.0)
    (row,) = board.devices()
    return row


def reading(tag: str, status: int = 0) -> Sample:
    return Sample("m1", tag, None if status else 1.0, Quality.BAD if status else Quality.GOOD, status, 1, 1)


def test_device_states_say_what_happened() -> None:
    answering = DeviceHealth()
    answering.up()
    answering.link = True
    row = board_of([reading("a"), reading("b")], answering)
    assert (row["state"], row["reason"], row["reply_ms"]) == ("ok", "", None)
    answering.slow_after, answering.reply_s = 0.5, 1.25
    row = board_of([reading("a"), reading("b")], answering)
    assert (row["state"], row["reason"], row["reply_ms"]) == ("slow", "replies take 1.2 s (slow above 0.5 s)", 1250.0)
    answering.reply_s = 0.2
    row = board_of([reading("a", 2), reading("b", 4)], answering)  # the device answered exceptions only
    assert (row["state"], row["reason"]) == ("exception", "all tags BAD (IllegalDataAddress, ServerDeviceFailure)")
    row = board_of([reading("a", 0x80310000), reading("b", 0x80310000)], answering)  # an OPC-UA server's word
    assert (row["state"], row["reason"]) == ("offline", "all tags BAD (BadNoCommunication)")
    row = board_of([reading("a", 2), reading("b")], answering)
    assert (row["state"], row["reason"]) == ("partial", "1 of 2 tags BAD (IllegalDataAddress)")
    silent = DeviceHealth()
    silent.link = True
    silent.down("not answering (BadTimeout)")
    silent.failed("BadTimeout", 3)
    row = board_of([reading("a", BAD_TIMEOUT)], silent)
    assert (row["state"], row["reason"], row["errors_recent"]) == ("timeout", "not answering (BadTimeout)",
                                                                   {"BadTimeout": 3})
    silent.link = False
    assert board_of([reading("a", BAD_TIMEOUT)], silent)["state"] == "link_down"


def test_recent_errors_forget_what_is_older_than_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(health_module.time, "monotonic", lambda: now[0])
    h = DeviceHealth()
    h.failed("BadTimeout")
    h.failed("BadTimeout", 2)  # the same second: merged
    now[0] = 1200.0
    h.failed("IllegalDataAddress")
    assert h.recent_errors() == {"BadTimeout": 3, "IllegalDataAddress": 1}
    now[0] = 1301.0
    assert h.recent_errors() == {"IllegalDataAddress": 1}
    assert h.errors == {"BadTimeout": 3, "IllegalDataAddress": 1}  # since start: kept
