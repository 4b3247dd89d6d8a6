"""The OPC-UA plug-in through the runtime: entry point, config file, scaling by the engine, discovery,
a write through the runtime's writer (limits and inverse scale applied before the node's own type)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

from gateway.config.loader import load_config
from gateway.errors import WriteError
from gateway.runtime import Runtime
from tests.connectors.opcua.support import simulator
from tests.fakes import RecordingSink
from tests.waiting import until as wait_until

NS = "urn:test:runtime"


@pytest.mark.timeout(60)
async def test_opcua_source_through_the_runtime(tmp_path: Path, fake_plugins: None) -> None:
    sim_cfg = {"namespace": NS, "update_interval": "100ms", "devices": {
        "filler": {"path": ["Line1"], "variables": [
            {"name": "Temp", "type": "Double", "unit": "degC", "signal": "constant", "value": 20.0},
            {"name": "Speed", "type": "Int32", "signal": "constant", "value": 100, "writable": True},
        ]},
        "capper": {"variables": [
            {"name": "Torque", "type": "Double", "unit": "Nm", "signal": "constant", "value": 2.5},
            {"name": "Caps", "type": "UInt32", "signal": "constant", "value": 7},
            {"name": "Debug", "type": "Boolean", "signal": "constant", "value": False},
        ]},
    }}
    async with simulator(sim_cfg) as sim:
        cfg = {"http": {"port": 0}, "data_dir": str(tmp_path / "data"),
               "sources": {"ua": {"type": "opcua", "devices": {
                   "filler": {"endpoint": sim.url, "publishing_interval": "100ms", "tags": [
                       {"name": "temp_f", "node": f"nsu={NS};s=filler.Temp", "scale": 1.8, "offset": 32},
                       {"name": "speed", "node": "/Objects/2:Line1/2:filler/2:Speed", "writable": True,
                        "scale": 0.5, "min": 0, "max": 100},
                   ]},
                   "capper": {"endpoint": sim.url, "publishing_interval": "100ms", "discover": [
                       {"root": f"nsu={NS};s=capper", "exclude": ["Debug", "EngineeringUnits"], "depth": 2}]},
               }}},
               "sinks": {"rec": {"type": "recording"}}}
        path = tmp_path / "gateway.yaml"
        path.write_text(yaml.safe_dump(cfg))
        runtime = Runtime(load_config(path))
        stop = asyncio.Event()
        task = asyncio.create_task(runtime.run(stop))
        try:
            await asyncio.wait_for(runtime.started.wait(), 10)
            rec = RecordingSink.instances["rec"]

            def last(device: str, tag: str) -> object:
                got = [s.value for s in rec.received if s.device == device and s.tag == tag]
                return got[-1] if got else None

            await wait_until(lambda: last("filler", "temp_f") is not None and last("capper", "Caps") is not None,
                             timeout=20)
            assert last("filler", "temp_f") == pytest.approx(68.0)  # 20 degC, scaled by the engine
            assert last("capper", "Torque") == 2.5 and last("capper", "Caps") == 7
            assert {s.tag for s in rec.received if s.device == "capper"} == {"Torque", "Caps"}
            await runtime.write_tag("ua", "filler", "speed", 60)  # engineering 60 -> raw 120 (scale 0.5)
            assert await sim.read_value("filler", "Speed") == 120
            with pytest.raises(WriteError, match="above"):
                await runtime.write_tag("ua", "filler", "speed", 101)
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
