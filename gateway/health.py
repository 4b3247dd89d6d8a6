"""What sources report about their devices, and what the engine knows about its supervised components.

A source owns one ``SourceHealth`` (``Source.health`` in the contract) and updates the ``DeviceHealth`` of
each device as its reads succeed or fail: plain attribute writes, cheap enough for the hot path. The
Prometheus families ``edgegw_device_connected``, ``edgegw_device_errors_total``,
``edgegw_device_last_good_read_timestamp_seconds``, ``edgegw_component_up`` and
``edgegw_component_restarts_total``, the status page and ``/health`` are all views of these objects, read
when asked; a plug-in cannot "forget a gauge" and show as healthy. A sink with several uplink endpoints (a
broker cluster, several write endpoints) answers ``UplinkState`` (``gateway.contracts.UplinkReport``): the
endpoint it is on and how often it moved, exported as ``edgegw_sink_uplink`` and
``edgegw_sink_failovers_total``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from gateway.contracts import UplinkReport

NS = "edgegw"


RECENT_WINDOW = 300.0
"""Seconds of the "recent errors" count the status page shows beside the count since start."""


class DeviceHealth:
    """One device as its source sees it."""

    __slots__ = ("_recent", "connected", "errors", "last_error", "last_good_ns", "link", "reason", "reply_s",
                 "slow_after")

    def __init__(self) -> None:
        self.connected: bool | None = None
        """The link to the device is up and it answers (None: the source has no link, e.g. synthetic)."""
        self.link: bool | None = None
        """The transport (TCP connection, serial port, session) is up, answering or not (None: not reported:
        then ``connected`` says both)."""
        self.last_good_ns = 0
        """Wall time of the last good read, ns (0: none yet)."""
        self.last_error = ""
        """Code of the last failed read (a Modbus exception or OPC-UA status name); '' after a good one."""
        self.reason = ""
        """Why the device is down or failing, in a few words an operator can act on ('' while fine)."""
        self.errors: dict[str, int] = {}
        """Failed reads since start, by code."""
        self.reply_s: float | None = None
        """How long the last answered request took, s (None: not measured by this source)."""
        self.slow_after: float | None = None
        """Replies slower than this make the device "slow" on the status page (None: never)."""
        self._recent: deque[tuple[int, str, int]] = deque(maxlen=1024)
        """(monotonic second, code, count) of the failures, merged per second, for the recent window."""

    def up(self) -> None:
        self.connected = True
        self.reason = ""

    def down(self, reason: str) -> None:
        self.connected = False
        self.reason = reason

    def good(self, wall_ns: int) -> None:
        self.last_good_ns = wall_ns
        self.last_error = ""

    def failed(self, code: str, n: int = 1, reason: str = "") -> None:
        self.errors[code] = self.errors.get(code, 0) + n
        self.last_error = code
        if reason:
            self.reason = reason
        sec = int(time.monotonic())
        recent = self._recent
        if recent and recent[-1][0] == sec and recent[-1][1] == code:
            recent[-1] = (sec, code, recent[-1][2] + n)
        else:
            recent.append((sec, code, n))

    def recent_errors(self, window: float = RECENT_WINDOW) -> dict[str, int]:
        """Failed reads in the last ``window`` seconds, by code (approximate beyond 1,024 distinct seconds)."""
        since = time.monotonic() - window
        out: dict[str, int] = {}
        for sec, code, n in self._recent:
            if sec >= since:
                out[code] = out.get(code, 0) + n
        return out


class SourceHealth:
    """The devices of one source, and source-wide problems (short public reasons, see ``/health``)."""

    __slots__ = ("devices", "problems", "source")

    def __init__(self, source: str, devices: Iterable[str]) -> None:
        self.source = source
        self.devices: dict[str, DeviceHealth] = {d: DeviceHealth() for d in devices}
        self.problems: list[str] = []

    def device(self, name: str) -> DeviceHealth:
        found = self.devices.get(name)
        if found is None:
            found = self.devices[name] = DeviceHealth()
        return found


@dataclass(frozen=True, slots=True)
class UplinkState:
    """Which of its uplink endpoints a sink is on (``gateway.contracts.UplinkReport``)."""

    endpoint: str
    """The endpoint connected to, or being tried when not connected (``host:port`` or a URL without
    credentials): for the authenticated status and metrics, never ``/health``."""
    connected: bool | None
    """The link to it is up (None: the sink has no standing link, e.g. HTTP)."""
    endpoints: int
    """How many endpoints are configured."""
    failovers: int
    """Times the sink moved to another endpoint since it was built."""


class ComponentState:
    """A supervised component (a source or a sink's delivery loop) as its supervisor sees it."""

    __slots__ = ("restarts", "running")

    def __init__(self) -> None:
        self.running = False
        self.restarts = 0


class HealthRegistry(Collector):
    """Every source's health and every component's state, exported to Prometheus when scraped."""

    def __init__(self) -> None:
        self.sources: dict[str, SourceHealth] = {}
        self.components: dict[str, ComponentState] = {}
        self.uplinks: dict[str, UplinkReport] = {}
        """Sink name -> the sink, for those that report their uplink endpoint."""

    def set_uplink(self, sink: str, report: UplinkReport | None) -> None:
        """Register (or, with None, forget) a sink's uplink report; a rebuilt sink replaces the old one."""
        if report is None:
            self.uplinks.pop(sink, None)
        else:
            self.uplinks[sink] = report

    def add_source(self, health: SourceHealth) -> None:
        """Register (or, on a rebuild of the same source, replace) a source's health."""
        self.sources[health.source] = health

    def forget_source(self, name: str) -> None:
        """A source removed from the config: its devices and its component leave the views."""
        self.sources.pop(name, None)
        self.components.pop(f"source:{name}", None)

    def forget_component(self, name: str) -> None:
        self.components.pop(name, None)

    def component(self, name: str) -> ComponentState:
        found = self.components.get(name)
        if found is None:
            found = self.components[name] = ComponentState()
        return found

    def source_running(self) -> Mapping[str, bool]:
        """``source name -> its component runs`` (a source never started counts as running)."""
        return {name[len("source:"):]: c.running for name, c in self.components.items() if name.startswith("source:")}

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        return self._families(fill=True)

    def _families(self, fill: bool = False) -> Iterator[Metric]:
        connected = GaugeMetricFamily(f"{NS}_device_connected", "1 while the device's connection is up",
                                      labels=["source", "device"])
        errors = CounterMetricFamily(f"{NS}_device_errors", "Failed reads by error code",
                                     labels=["source", "device", "code"])
        last_good = GaugeMetricFamily(f"{NS}_device_last_good_read_timestamp_seconds",
                                      "Wall time of the last good read", labels=["source", "device"])
        up = GaugeMetricFamily(f"{NS}_component_up", "1 while a supervised component runs", labels=["component"])
        restarts = CounterMetricFamily(f"{NS}_component_restarts",
                                       "Restarts of a supervised component after a failure", labels=["component"])
        uplink = GaugeMetricFamily(f"{NS}_sink_uplink", "The endpoint a sink is on (1 connected, 0 trying it)",
                                   labels=["sink", "endpoint"])
        failovers = CounterMetricFamily(f"{NS}_sink_failovers", "Moves of a sink to another uplink endpoint",
                                        labels=["sink"])
        if fill:
            for source, health in list(self.sources.items()):
                for device, d in list(health.devices.items()):
                    if d.connected is not None:
                        connected.add_metric([source, device], 1.0 if d.connected else 0.0)
                    if d.last_good_ns:
                        last_good.add_metric([source, device], d.last_good_ns / 1e9)
                    for code, n in list(d.errors.items()):
                        errors.add_metric([source, device, code], n)
            for name, c in list(self.components.items()):
                up.add_metric([name], 1.0 if c.running else 0.0)
                restarts.add_metric([name], c.restarts)
            for sink, report in list(self.uplinks.items()):
                st = report.uplink()
                uplink.add_metric([sink, st.endpoint], 0.0 if st.connected is False else 1.0)
                failovers.add_metric([sink], st.failovers)
        yield from (connected, errors, last_good, up, restarts, uplink, failovers)
