"""This gateway as its fleet sees it: id, instance, and the status message built from the runtime's own
account (devices, sinks, config). Sinks that publish the status (MQTT) get it as ``BuildContext.fleet``
and tell it when another box has taken the id (``stand_down``)."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from gateway import __version__
from gateway.fleet.message import GatewayStatus, State
from gateway.status import PROBLEM_STATES, SinkState

OK_STATES = frozenset({"ok", "slow", "partial"})
"""Device states counted as ok in the status message (answering); ``PROBLEM_STATES`` count as bad, and a
device still ``starting`` as neither."""
BAD_NAMES = 10
"""Bad devices named in the message, at most (the counts are always complete)."""


class FleetMember:
    def __init__(
        self,
        gateway_id: Callable[[], str],
        config_hash: Callable[[], str],
        devices: Callable[[], list[dict[str, Any]]],
        sinks: Callable[[], Iterable[SinkState]],
        *,
        status_interval: float = 10.0,
        on_replaced: Callable[[GatewayStatus], None] = lambda _: None,
    ) -> None:
        self._gateway_id = gateway_id
        self._config_hash = config_hash
        self._devices = devices
        self._sinks = sinks
        self._on_replaced = on_replaced
        self.status_interval = status_interval
        self.instance = uuid.uuid4().hex[:12]
        self.host = socket.gethostname()
        self.started_ns = time.time_ns()
        self.replaced_by: GatewayStatus | None = None
        """The status of the instance that took this gateway's id, once one did (this one then stands down)."""

    @property
    def id(self) -> str:
        return self._gateway_id()

    def status(self, state: State = "online") -> GatewayStatus:
        devices = self._devices()
        ok = sum(1 for d in devices if d["state"] in OK_STATES)
        bad = [f"{d['source']}.{d['device']}" for d in devices if d["state"] in PROBLEM_STATES]
        sinks = list(self._sinks())
        deliveries = [s.last_delivery for s in sinks if s.last_delivery]
        return GatewayStatus(
            id=self.id, state=state, instance=self.instance, host=self.host, version=__version__,
            started_ns=self.started_ns, ts_ns=time.time_ns(), config_hash=self._config_hash(),
            status_interval=self.status_interval, devices_total=len(devices), devices_ok=ok, devices_bad=len(bad),
            bad_names=tuple(bad[:BAD_NAMES]), backlog=sum(s.pending for s in sinks),
            backlog_age_s=max((s.oldest_pending_age for s in sinks), default=0.0),
            # the sink that delivered longest ago is the one that matters
            last_delivery_ns=round(min(deliveries) * 1e9) if deliveries else None,
        )

    def stand_down(self, by: GatewayStatus) -> None:
        """Another instance runs this gateway's id now: stop collecting and publishing (once)."""
        if self.replaced_by is not None:
            return
        self.replaced_by = by
        self._on_replaced(by)
