"""Interoperability: the OPC-UA source against a server that is not asyncua-based (node-opcua, from the
committed package-lock.json; `./dev test` runs `npm ci` here). The server enforces small operation limits
(3 nodes per Read, 2 monitored items per call), so going over them would fail here, not just be counted."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import WriteError
from gateway.model import Quality
from tests.connectors.opcua.support import running
from tests.waiting import until as wait_until

NS = "urn:test:nodeopcua"


TAGS = [
    {"name": "counter", "node": f"nsu={NS};s=Plant.Counter"},
    {"name": "temperature", "node": f"nsu={NS};s=Plant.Temperature"},
    {"name": "running", "node": "/Objects/2:Plant/2:Running"},
    {"name": "name", "node": f"nsu={NS};s=Plant.Name"},
    {"name": "setpoint", "node": f"nsu={NS};s=Plant.Setpoint", "writable": True},
    {"name": "missing", "node": f"nsu={NS};s=Plant.Nope"},
]


def source(url: str, **dev: object) -> dict[str, object]:
    return {"devices": {"plc": {"endpoint": url, "publishing_interval": "100ms", "sampling_interval": "100ms",
                                "tags": TAGS, **dev}}}


@pytest.mark.timeout(60)
async def test_subscription_values_writes_and_bad_node_against_node_opcua(
    node_opcua_url: str, data_dir: Path
) -> None:
    async with running(source(node_opcua_url), data_dir) as r:
        await wait_until(lambda: all(r.of(t["name"]) for t in TAGS), timeout=20, what="every tag")
        assert r.of("temperature")[0].value == 21.25
        assert r.of("running")[0].value is True
        assert r.of("name")[0].value == "line-7"
        assert r.of("missing")[0].quality is Quality.BAD
        await wait_until(lambda: len({s.value for s in r.of("counter")}) >= 3, what="counter moving")
        counts = [s.value for s in r.of("counter")]
        assert counts == sorted(counts) and all(isinstance(c, int) for c in counts)
        assert all(s.quality is Quality.GOOD and s.source_ts > 0 for s in r.of("counter"))
        # node-opcua refuses a Double into a Float node; the source writes the node's own type
        await r.source.write("plc", "setpoint", 4)
        await wait_until(lambda: r.last("setpoint").value == 4.0, what="written value")  # type: ignore[union-attr]
        with pytest.raises(WriteError, match="not writable"):
            await r.source.write("plc", "temperature", 1.0)


@pytest.mark.timeout(60)
async def test_polling_within_an_enforced_max_nodes_per_read(node_opcua_url: str, data_dir: Path) -> None:
    async with running(source(node_opcua_url, mode="poll", poll_interval="200ms"), data_dir) as r:
        await wait_until(lambda: len(r.of("counter")) >= 3, timeout=20, what="three polls")
        assert r.source.devices["plc"].last_error is None  # BadTooManyOperations would land here
        assert r.of("temperature")[-1].value == 21.25 and r.of("missing")[-1].quality is Quality.BAD
