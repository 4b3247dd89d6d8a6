"""The synthetic source: every tick, one batch with a value from each tag's generator.

Ticks sit at fixed phase on the loop's monotonic clock (``start + n * interval``), so the rate does
not drift with the time each emit takes. When an emit overruns by more than a whole interval the
missed ticks are skipped, not caught up in a burst, and counted in ``skipped_ticks``. The log gets one
line when skipping starts and one when no tick has been skipped for ``recovery_quiet`` seconds, so
an intermittent overrun does not log on every skip. Generators see
``t = n * interval``: values depend on the tick, not on scheduling jitter, so a seeded config is
reproducible.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from connectors.synthetic.config import SyntheticSourceConfig
from gateway.contracts import Emit
from gateway.errors import WriteError
from gateway.generators import Constant, GenValue, derive_seed
from gateway.health import SourceHealth
from gateway.metrics import Metrics
from gateway.model import Batch, Quality, Value
from gateway.samples import good
from gateway.writes import BOOL, WriteKind, shown

_GOOD = Quality.GOOD

_NUMBER = WriteKind("float", type_name="number")
_Row = tuple[str, str, Callable[[float], GenValue], str | None]


class SyntheticSource:
    def __init__(
        self,
        name: str,
        config: SyntheticSourceConfig,
        *,
        log: structlog.stdlib.BoundLogger | None = None,
        metrics: Metrics | None = None,
        recovery_quiet: float = 10.0,
    ) -> None:
        self.name = name
        self.interval = config.interval
        self.recovery_quiet = recovery_quiet
        self.ticks = 0
        """Batches emitted."""
        self.skipped_ticks = 0
        """Ticks skipped because an emit overran."""
        self._log = log if log is not None else structlog.stdlib.get_logger(__name__).bind(source=name)
        # one row per tag, in config order; a write swaps the row's generator for a constant
        self._rows: list[_Row] = []
        self._index: dict[tuple[str, str], int] = {}
        self._writable: list[bool] = []
        self._kinds: list[WriteKind] = []
        for device, dev in config.devices.items():
            for tag in dev.tags:
                gen = tag.build(derive_seed(config.seed, device, tag.name))
                self._index[(device, tag.name)] = len(self._rows)
                self._rows.append((device, tag.name, gen.value, tag.unit))
                self._writable.append(tag.writable)
                self._kinds.append(BOOL if getattr(tag, "boolean", False) else _NUMBER)
        # Generated devices have no link to lose (connected stays unknown); a tick is a good read of each.
        self.health = SourceHealth(name, config.devices)
        if metrics is not None:
            metrics.health.add_source(self.health)
        self._device_health = list(self.health.devices.values())
        # Every device of this source misses a skipped tick; children cached once, off the hot path.
        self._skip_counters = (
            [metrics.skipped_ticks.labels(name, device) for device in config.devices] if metrics else []
        )

    def batch(self, t: float) -> Batch:
        """One batch: every tag's value at generator time ``t``, stamped with the current wall time."""
        ts = time.time_ns()
        return Batch(self.name, [good(d, n, f(t), ts, u) for d, n, f, u in self._rows])

    async def run(self, emit: Emit) -> None:
        loop = asyncio.get_running_loop()
        interval = self.interval
        start = loop.time()
        tick = 0
        behind = False  # in an overrun episode: between the warning and the all-clear
        episode_skips = 0
        last_skip = 0.0
        while True:
            # sleep(0) when already due still yields, so a slow consumer cannot starve the loop
            await asyncio.sleep(max(start + tick * interval - loop.time(), 0.0))
            await emit(self.batch(tick * interval))
            self.ticks += 1
            now_ns = time.time_ns()
            for device in self._device_health:
                device.good(now_ns)
            now = loop.time()
            latest_due = int((now - start) / interval)  # the last tick whose time has come
            if latest_due > tick + 1:
                skipped = latest_due - tick - 1
                self.skipped_ticks += skipped
                for counter in self._skip_counters:
                    counter.inc(skipped)
                episode_skips += skipped
                last_skip = now
                if not behind:
                    behind = True
                    self._log.warning(
                        "synthetic source overrunning its interval; skipping ticks",
                        interval=interval,
                        skipped=skipped,
                    )
                tick = latest_due
            else:
                if behind and now - last_skip >= self.recovery_quiet:
                    behind = False
                    self._log.info("synthetic source back on time", skipped=episode_skips)
                    episode_skips = 0
                tick += 1

    async def close(self) -> None:
        """Nothing to release: the generators hold no connection."""

    def _position(self, device: str, tag: str) -> int:
        i = self._index.get((device, tag))
        if i is None:
            raise WriteError(f"source {self.name!r} has no tag {tag!r} on device {device!r}")
        return i

    async def write_kind(self, device: str, tag: str) -> WriteKind:
        return self._kinds[self._position(device, tag)]

    async def write(self, device: str, tag: str, value: Value) -> None:
        """Hold ``value`` (raw) on a writable tag from the next tick on, like a setpoint."""
        i = self._position(device, tag)
        if not self._writable[i]:
            raise WriteError(f"tag {device}/{tag} of source {self.name!r} is not writable (set writable: true)")
        wants_bool = self._kinds[i] is BOOL
        if value is None or isinstance(value, str | list) or (type(value) is bool) != wants_bool:
            raise WriteError(f"tag {device}/{tag} takes {self._kinds[i].describe()}, not {shown(value)}")
        d, n, _, u = self._rows[i]
        self._rows[i] = (d, n, Constant(value).value, u)
