"""A Modbus sample's timestamp is the time its own request was answered, not the start of the poll."""

from __future__ import annotations

import asyncio
import time
from contextlib import suppress

import pytest
from pydantic import ValidationError

from connectors.modbus.source import ModbusSource, poll_phase
from gateway.model import Batch, Quality, Sample
from simulators.modbus.config import SimFault, SimulatorConfig
from simulators.modbus.server import running_simulator
from tests.connectors.modbus.integration.test_faults import gw_tag, sim_tag, source_cfg
from tests.servers import free_port
from tests.waiting import until


class Emits:
    """Every emitted batch with the wall time (ns) of its emit."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, Batch]] = []

    async def emit(self, batch: Batch) -> None:
        self.batches.append((time.time_ns(), batch))

    def first(self, *tags: str) -> dict[str, tuple[int, Sample]] | None:
        """The first GOOD sample of each of ``tags`` (one poll) with the emit time of its batch; None until all came."""
        got: dict[str, tuple[int, Sample]] = {}
        for at, batch in self.batches:
            for s in batch.samples:
                if s.quality == Quality.GOOD and s.tag in tags:
                    got.setdefault(s.tag, (at, s))
        return got if len(got) == len(tags) else None


async def poll_once(source: ModbusSource, emits: Emits, *tags: str) -> dict[str, tuple[int, Sample]]:
    task = asyncio.create_task(source.run(emits.emit))
    try:
        found: dict[str, tuple[int, Sample]] = await until(lambda: emits.first(*tags), timeout=10,
                                                           what=f"samples of {tags}")
        return found
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


async def test_a_slow_request_stamps_its_own_values_later_than_the_polls_first() -> None:
    port = free_port()
    sim = SimulatorConfig.model_validate({"devices": {"plc": {"unit": 1, "tags": [
        sim_tag("a", 0, 21), sim_tag("b", 100, 22)]}}})
    # two requests (max_gap 0); the second is answered 300 ms late
    cfg = source_cfg(port, {"plc": {"unit": 1, "tags": [gw_tag("a", 0), gw_tag("b", 100)]}}, max_gap=0,
                     timeout="2s", interval="10s")
    async with running_simulator(sim, port=port) as server:
        server.set_faults("plc", [SimFault(table="holding", address=100, delay=0.3)])
        before = time.time_ns()
        got = await poll_once(ModbusSource("m", cfg), Emits(), "a", "b")
    (_, a), (emitted, b) = got["a"], got["b"]
    assert (a.value, b.value) == (21, 22)
    assert before <= a.source_ts < b.source_ts <= emitted
    assert b.source_ts - a.source_ts >= 0.29e9  # b's own answer, 300 ms after a's
    assert emitted - b.source_ts < 0.1e9  # and b went out right after it was answered


async def test_the_inter_frame_delay_after_a_request_is_not_in_its_timestamp() -> None:
    port = free_port()
    sim = SimulatorConfig.model_validate({"devices": {"plc": {"unit": 1, "tags": [
        sim_tag("a", 0, 21), sim_tag("b", 100, 22)]}}})
    cfg = source_cfg(port, {"plc": {"unit": 1, "tags": [gw_tag("a", 0), gw_tag("b", 100)]}}, max_gap=0,
                     inter_frame_delay="200ms", interval="10s")
    async with running_simulator(sim, port=port):
        got = await poll_once(ModbusSource("m", cfg), Emits(), "a", "b")
    (_, a), (emitted, b) = got["a"], got["b"]
    assert b.source_ts - a.source_ts >= 0.19e9  # the quiet time between the two requests
    # the quiet time after b's answer passes before its values can go out, but b was answered before it
    assert emitted - b.source_ts >= 0.19e9


def test_poll_phases_are_stable_spread_and_within_the_interval() -> None:
    phases = [poll_phase(f"plc_{i}", "default", 1.0) for i in range(10)]
    assert phases == [poll_phase(f"plc_{i}", "default", 1.0) for i in range(10)]  # the same every run
    assert all(0 <= p < 1.0 for p in phases)
    assert len(set(phases)) == 10 and max(phases) - min(phases) > 0.5
    assert poll_phase("plc_0", "default", 2.0) == 2 * poll_phase("plc_0", "default", 1.0)


def _phases_s(emits: Emits, tag: str, interval: float) -> list[float]:
    """Where in the wall clock's intervals each poll of ``tag`` after the first was answered (s)."""
    stamps = [s.source_ts for _, b in emits.batches for s in b.samples if s.tag == tag and s.quality == Quality.GOOD]
    return [(ts / 1e9) % interval for ts in stamps[1:]]  # the first poll runs at start, off the grid


async def test_a_phase_puts_every_poll_of_the_source_on_that_instant_of_the_wall_clock() -> None:
    port = free_port()
    sim = SimulatorConfig.model_validate({"devices": {"plc": {"unit": 1, "tags": [sim_tag("a", 0, 21)]}}})
    devices = {"plc": {"unit": 1, "tags": [gw_tag("a", 0)]}}
    one, two = Emits(), Emits()
    sources = [(ModbusSource("one", source_cfg(port, devices, interval="200ms", phase="50ms")), one),
               # a phase beyond the interval counts modulo it: the same instant
               (ModbusSource("two", source_cfg(port, devices, interval="200ms", phase="450ms")), two)]
    async with running_simulator(sim, port=port):
        tasks = [asyncio.create_task(src.run(e.emit)) for src, e in sources]
        try:
            await until(lambda: len(one.batches) >= 6 and len(two.batches) >= 6, timeout=10, what="six polls each")
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    for emits in (one, two):
        phases = _phases_s(emits, "a", 0.2)
        assert len(phases) >= 5
        # answered a few ms after 50 ms into each 200 ms of the wall clock (at most one late poll on a busy box)
        assert sum(1 for p in phases if 0.05 <= p < 0.08) >= len(phases) - 1, phases


def test_a_phase_is_a_duration_from_zero() -> None:
    with pytest.raises(ValidationError) as err:
        source_cfg(1502, {"plc": {"unit": 1, "tags": [gw_tag("a", 0)]}}, phase="-1s")
    assert "phase" in str(err.value)
    assert source_cfg(1502, {"plc": {"unit": 1, "tags": [gw_tag("a", 0)]}}, phase="0s").phase == 0.0
