"""`edge-gateway browse` against the simulator process: the tree, and a tag draft that validates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from connectors.opcua.config import OpcUaSourceConfig
from tests.connectors.opcua.support import sim_process

NS = "urn:test:browse"
SIM = {"namespace": NS, "devices": {"filler": {"path": ["Line1"], "variables": [
    {"name": "Temp", "type": "Double", "unit": "degC", "signal": "constant", "value": 20.5},
    {"name": "Speed", "type": "Int32", "signal": "constant", "value": 100, "writable": True},
    {"name": "RecipeText", "type": "String", "signal": "text", "text": "step " * 60},
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
        whole = yaml.safe_load(draft.stdout)
        assert whole["sinks"] == {"local_store": {"type": "sqlite"}}  # a whole config, as scan drafts one
        cfg = OpcUaSourceConfig.model_validate(whole["sources"]["browsed"])
        tags = {t.name: t for t in cfg.devices["filler"].tags}
        assert set(tags) == {"temp", "speed", "recipe_text"}  # names a person would write
        assert tags["temp"].node == f"nsu={NS};s=filler.Temp" and tags["temp"].unit == "degC"
        assert not any(t.writable for t in tags.values())  # even the writable node: the integrator opts in
        assert draft.stdout.count("writable: false") == 3

        recipe = next(line for line in lines if "2:RecipeText " in line)
        assert len(recipe) < 200 and recipe.endswith("...")  # a long value cut to one short line

        missing = browse(sim.url, "--node", f"nsu={NS};s=nope")
        assert missing.returncode == 1 and "BadNodeId" in missing.stderr and "ns=2;s=nope" in missing.stderr


def test_browse_reaches_the_variables_leaves_the_server_object_out_and_stops_at_max_nodes(tmp_path: Path) -> None:
    with sim_process(SIM, tmp_path) as sim:
        tree = browse(sim.url)  # from Objects, no depth: down to the variables, however deep
        assert tree.returncode == 0, tree.stderr
        assert any("2:Temp " in line for line in tree.stdout.splitlines())
        assert "0:Server  [Object]" not in tree.stdout  # diagnostics some servers crash on
        full = browse(sim.url, "--include-server", "--max-nodes", "50")
        assert "0:Server  [Object]" in full.stdout
        assert "stopped at --max-nodes 50" in full.stderr
        assert len([line for line in full.stdout.splitlines() if line.strip()]) == 50


def test_pki_finds_its_folder_from_the_config(tmp_path: Path) -> None:
    data = tmp_path / "gw-data"
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(yaml.safe_dump({"data_dir": str(data), "sources": {"plc": {"type": "opcua", "devices": {"p": {
        "endpoint": "opc.tcp://127.0.0.1:4840", "tags": [{"name": "t", "node": "ns=2;s=T"}]}}}},
        "sinks": {"s": {"type": "discard"}}}))
    listed = subprocess.run([sys.executable, "-m", "gateway.cli.main", "pki", "-c", str(cfg), "list"],
                            capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0] == f"pki folder: {data / 'pki'}"
    trust = subprocess.run([sys.executable, "-m", "gateway.cli.main", "pki", "-c", str(cfg), "trust", "abcd"],
                           capture_output=True, text=True, timeout=30)
    assert trust.returncode == 1 and f"looked in {data / 'pki'}" in trust.stderr
