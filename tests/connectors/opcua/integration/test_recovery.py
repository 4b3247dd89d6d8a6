"""Recovery against the simulator as a real process: killed and restarted, namespaces reordered across a
restart, stalled (watchdog). Data must resume without restarting the source, over exactly one session."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from gateway.metrics import Metrics
from gateway.model import Quality
from tests.connectors.opcua.support import SimProcess, running, sim_process
from tests.waiting import until as wait_until

NS = "urn:test:recovery"


def sim_cfg(extra_namespaces: list[str] | None = None) -> dict[str, Any]:
    return {
        "namespace": NS,
        "extra_namespaces": extra_namespaces or [],
        "update_interval": "100ms",
        "devices": {"m1": {"variables": [
            {"name": "count", "type": "UInt32", "signal": "counter"},
            {"name": "a", "type": "Double", "signal": "constant", "value": 11.0},
            {"name": "b", "type": "Double", "signal": "constant", "value": 22.0},
        ]}},
    }


def source_cfg(url: str, **extra: Any) -> dict[str, Any]:
    return {"devices": {"m1": {
        "endpoint": url, "publishing_interval": "100ms", "sampling_interval": 0, "timeout": "2s",
        "reconnect_initial": "100ms", "reconnect_max": "500ms", "watchdog": "2s",
        "tags": [{"name": "count", "node": f"nsu={NS};s=m1.count"},
                 {"name": "a", "node": f"nsu={NS};s=m1.a"},
                 {"name": "b", "node": f"nsu={NS};s=m1.b"}],
        **extra,
    }}}


@pytest.mark.timeout(90)
async def test_server_process_killed_and_restarted_resumes_with_one_session(tmp_path: Path, data_dir: Path) -> None:
    metrics = Metrics()
    sim = SimProcess(sim_cfg(), tmp_path)
    sim.start()
    try:
        async with running(source_cfg(sim.url), data_dir, metrics) as r:
            dev = r.source.devices["m1"]
            await wait_until(lambda: len(r.of("count")) >= 3, what="first counts")
            sim.kill()
            await wait_until(lambda: r.last("count").quality is Quality.BAD, timeout=10,  # type: ignore[union-attr]
                             what="loss reported as BAD")
            assert dev.session is None and r.last("count").status == 0x80050000  # type: ignore[union-attr]
            lost_at = len(r.samples)
            await asyncio.sleep(0.5)  # let a few reconnect attempts fail against the closed port
            sim.start()  # same port, new process
            await wait_until(lambda: any(s.quality is Quality.GOOD for s in r.samples[lost_at:]),
                             timeout=20, what="data after restart")
            await wait_until(lambda: len([s for s in r.samples[lost_at:] if s.tag == "count"]) >= 3)
            stats = await asyncio.to_thread(sim.stats)
            assert stats["sessions"] == "1"
            assert stats["items"] == "3"  # one subscription's items, none duplicated
            assert dev.sessions_opened == 2
            up = metrics.registry.get_sample_value("edgegw_device_connected", {"source": "plant", "device": "m1"})
            assert up == 1.0
    finally:
        sim.stop()


@pytest.mark.timeout(90)
async def test_namespace_order_changed_between_restarts_nsu_tags_still_resolve(
    tmp_path: Path, data_dir: Path
) -> None:
    sim = SimProcess(sim_cfg(), tmp_path)
    sim.start()
    try:
        async with running(source_cfg(sim.url), data_dir) as r:
            dev = r.source.devices["m1"]
            await wait_until(lambda: r.last("a") is not None and r.last("b") is not None)
            assert (r.last("a").value, r.last("b").value) == (11.0, 22.0)  # type: ignore[union-attr]
            # the restarted server registers two namespaces first: ours moves from index 2 to 4, and
            # ns=2 now names a namespace where ";s=m1.a" does not exist
            sim.kill()
            sim.write(sim_cfg(["urn:other:one", "urn:other:two"]))
            await wait_until(lambda: r.last("a").quality is Quality.BAD)  # type: ignore[union-attr]
            mark = len(r.samples)  # everything from the first server is before this
            sim.start()
            await wait_until(lambda: {s.tag for s in r.samples[mark:] if s.quality is Quality.GOOD} >= {"a", "b"},
                             timeout=20, what="values after the reorder")
            good = {s.tag: s.value for s in r.samples[mark:] if s.quality is Quality.GOOD}
            assert good["a"] == 11.0 and good["b"] == 22.0
            assert "ns=4;" in str(dev.nodes[1].to_string())
    finally:
        sim.stop()


@pytest.mark.timeout(60)
async def test_watchdog_recovers_a_stalled_server(tmp_path: Path, data_dir: Path) -> None:
    with sim_process(sim_cfg(), tmp_path) as sim:
        async with running(source_cfg(sim.url), data_dir) as r:
            dev = r.source.devices["m1"]
            await wait_until(lambda: len(r.of("count")) >= 3)
            sim.send("stall 4")  # the simulator's loop blocks: socket open, no answers
            await wait_until(lambda: r.last("count").quality is Quality.BAD, timeout=10,  # type: ignore[union-attr]
                             what="stall detected")
            mark = len(r.samples)
            await wait_until(lambda: dev.session is not None and dev.sessions_opened >= 2, timeout=20,
                             what="reconnected")
            await wait_until(lambda: any(s.tag == "count" and s.quality is Quality.GOOD for s in r.samples[mark:]),
                             timeout=10, what="data after the stall")
            assert (await asyncio.to_thread(sim.reply)) == "ok stall"  # the stall's own answer
            stats = await asyncio.to_thread(sim.stats)
            assert stats["sessions"] == "1" and stats["items"] == "3"


@pytest.mark.timeout(60)
async def test_simulator_restart_fault_is_recovered(tmp_path: Path, data_dir: Path) -> None:
    with sim_process(sim_cfg(), tmp_path) as sim:
        async with running(source_cfg(sim.url), data_dir) as r:
            dev = r.source.devices["m1"]
            await wait_until(lambda: len(r.of("count")) >= 2)
            assert (await asyncio.to_thread(sim.command, "restart 1")) == "ok restart"
            await wait_until(lambda: dev.sessions_opened >= 2 and dev.session is not None, timeout=20,
                             what="new session after the restart")
            mark = len(r.samples)
            await wait_until(lambda: any(s.tag == "count" and s.quality is Quality.GOOD for s in r.samples[mark:]))
            stats = await asyncio.to_thread(sim.stats)
            assert stats["starts"] == "2" and stats["sessions"] == "1" and stats["items"] == "3"
