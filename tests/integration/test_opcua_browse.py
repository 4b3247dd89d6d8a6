"""`edge-gateway browse` against the simulator process: the tree, and a tag draft that validates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from connectors.opcua.config import OpcUaSourceConfig
from tests.integration.opcua_support import sim_process

NS = "urn:test:browse"
SIM = {"namespace": NS, "devices": {"filler": {"path": ["Line1"], "variables": [
    {"name": "Temp", "type": "Double", "unit": "degC", "signal": "constant", "value": 20.5},
    {"name": "Speed", "type": "Int32", "signal": "constant", "value": 100, "writable": True},
]}}}


def browse(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli.main", "browse", *args],
                          capture_output=True, text=True, timeout=30)


def test_browse_prints_the_tree_and_drafts_config(tmp_path: Path) -> None:
    with sim_process(SIM, tmp_path) as sim:
        tree = browse(sim.url, "--node", "/Objects/2:Line1", "--depth", "3")
        assert tree.returncode == 0, tree.stderr
        lines = tree.stdout.splitlines()
        temp = next(line for line in lines if "2:Temp " in line)
        assert "ns=2;s=filler.Temp" in temp and "Double" in temp and "r-" in temp and "= 20.5" in temp
        speed = next(line for line in lines if "2:Speed " in line)
        assert "Int32" in speed and "rw" in speed and "= 100" in speed
        assert any("2:filler  [Object]" in line for line in lines)

        draft = browse(sim.url, "--node", f"nsu={NS};s=filler", "--emit-config", "--device", "filler")
        assert draft.returncode == 0, draft.stderr
        cfg = OpcUaSourceConfig.model_validate(yaml.safe_load(draft.stdout))
        tags = {t.name: t for t in cfg.devices["filler"].tags}
        assert set(tags) == {"Temp", "Speed"}
        assert tags["Temp"].node == f"nsu={NS};s=filler.Temp" and tags["Temp"].unit == "degC"
        assert tags["Speed"].writable and not tags["Temp"].writable

        missing = browse(sim.url, "--node", f"nsu={NS};s=nope")
        assert missing.returncode == 1 and "BadNodeId" in missing.stderr and "ns=2;s=nope" in missing.stderr
