"""5,000 monitored items against low advertised per-call limits: asyncua advertises but does not enforce
them, so the simulator counts the CreateMonitoredItems calls it receives and their sizes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.connectors.opcua.support import running, simulator
from tests.waiting import until as wait_until

NS = "urn:test:scale"
N = 5000


@pytest.mark.timeout(120)
async def test_5000_items_subscribe_within_the_servers_per_call_limits(data_dir: Path) -> None:
    # ten machines of 500: asyncua's address space adds a child in time linear in its siblings
    machines = {f"m{m}": {"variables": [{"name": f"v{i}", "type": "Int32", "signal": "constant", "value": i}
                                        for i in range(m * 500, (m + 1) * 500)]} for m in range(N // 500)}
    cfg = {"namespace": NS, "update_interval": "10s", "limits": {"max_monitored_items_per_call": 700},
           "devices": machines}
    async with simulator(cfg) as sim:
        tags = [{"name": f"v{i}", "node": f"ns=2;s=m{i // 500}.v{i}"} for i in range(N)]
        source = {"devices": {"m1": {"endpoint": sim.url, "publishing_interval": "100ms", "timeout": "20s",
                                     "tags": tags}}}
        async with running(source, data_dir) as r:
            await wait_until(lambda: len({s.tag for s in r.samples}) == N, timeout=60, what="every initial value")
            assert {s.tag: s.value for s in r.samples} == {f"v{i}": i for i in range(N)}
            assert sim.stats.item_calls == [700] * 7 + [100]
            assert sim.monitored_items() == N
            assert r.source.devices["m1"].items_created == N
