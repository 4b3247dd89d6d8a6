"""Sink problems reach /health: a jammed sink (a batch it can neither deliver nor dead-letter), repeated
open failures, and whatever the sink itself reports; the public answer carries only the short reasons."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from gateway.config.site import SpoolConfig
from gateway.delivery import DeliveryLoop
from gateway.errors import PermanentSinkError
from gateway.live import LiveTags
from gateway.metrics import Metrics
from gateway.model import Batch, Quality, Sample
from gateway.spool import Spool
from gateway.status import SinkState, StatusBoard


class RejectingSink:
    name = "plant"

    def __init__(self, open_fails: int = 0) -> None:
        self.open_fails = open_fails

    async def open(self) -> None:
        if self.open_fails:
            self.open_fails -= 1
            raise ConnectionError("uplink refuses (test)")

    async def write(self, batches: Sequence[Batch]) -> None:
        raise PermanentSinkError("bad point (test)")

    async def close(self) -> None:
        return None

    def health_problems(self) -> list[str]:
        return ["the broker refuses the login"]


async def test_a_batch_that_cannot_be_dead_lettered_is_a_health_problem(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    metrics = Metrics()
    spool = Spool(tmp_path / "s.db", SpoolConfig(), metrics)
    await spool.open()
    try:
        async def broken(*_: object) -> None:
            raise OSError("disk gone (test)")

        monkeypatch.setattr(spool, "dead_letter", broken)
        loop = DeliveryLoop(RejectingSink(), spool, ["*"], metrics, max_samples=100, retry_initial=0.1,
                            retry_max=0.1)
        task = asyncio.create_task(loop.run())
        await spool.append(Batch("src", [Sample("m1", "t", 1.0, Quality.GOOD, 0, 1, 1)]))
        with pytest.raises(OSError):
            await asyncio.wait_for(task, 5)
        assert loop.health_problems() == ["the broker refuses the login",
                                          "a batch it can neither deliver nor dead-letter"]
    finally:
        await spool.close()


async def test_repeated_open_failures_are_a_health_problem(tmp_path: Path) -> None:
    metrics = Metrics()
    spool = Spool(tmp_path / "s.db", SpoolConfig(), metrics)
    await spool.open()
    try:
        loop = DeliveryLoop(RejectingSink(open_fails=5), spool, ["*"], metrics, max_samples=100,
                            retry_initial=0.1, retry_max=0.1)
        for _ in range(3):  # the supervisor's restarts
            with pytest.raises(ConnectionError):
                await loop.run()
        assert "cannot open its uplink (3 attempts)" in loop.health_problems()
    finally:
        await spool.close()


def test_sink_problems_and_drops_make_public_health_503_with_short_reasons() -> None:
    state = SinkState(name="plant", type="mqtt", delivered=10, pending=0, oldest_pending_age=0.0,
                      max_pending_age=300.0, last_delivery=None, failing=True,
                      last_error="cannot reach mqtt://user:pw@10.0.0.7:1883", dropped=0,
                      problems=("reconnect loop: 4 connections lost in 5 min",))
    board = StatusBoard(dict, lambda: [state], LiveTags(0), Metrics(), device_grace=0.0)
    ok, body = board.public_health()
    assert not ok
    assert body == {"status": "unhealthy", "problems": ["sink plant: reconnect loop: 4 connections lost in 5 min"]}
    dropped_at = [time.monotonic() - 30]
    healthy = SinkState(name="plant", type="mqtt", delivered=10, pending=0, oldest_pending_age=0.0,
                        max_pending_age=300.0, last_delivery=None, failing=False, last_error=None, dropped=7)
    board = StatusBoard(dict, lambda: [healthy], LiveTags(0), Metrics(), device_grace=0.0,
                        last_drop=lambda: dropped_at[0], health_window=60.0)
    ok, body = board.public_health()
    assert not ok and body["problems"] == ["data dropped 30 s ago (sinks: plant)"]
    dropped_at[0] = time.monotonic() - 61  # outside the window: healthy again
    assert board.public_health() == (True, {"status": "ok", "problems": []})
