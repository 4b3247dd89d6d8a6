"""``edge-gateway fleet plan``: units, loads, balance, stability on re-plan, the shards on disk and their checks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from gateway.cli.main import main
from gateway.config.loader import load_config
from gateway.fleet.identity import config_hash
from gateway.fleet.plan import REQUEST_WEIGHT, PlanError, Unit, gateway_ids, make_plan, units_of
from tests import REPO

PLANT = REPO / "configs" / "plant.yaml"


def synthetic_plant(lines: int, devices: int, *, tags: int = 4, interval: str = "1s") -> dict[str, object]:
    return {
        "site": {"enterprise": "acme", "site": "p", "area": "a", "line": "l"},
        "sources": {f"line{i}": {"type": "synthetic", "interval": interval, "devices": {
            f"m{j}": {"tags": [{"name": f"t{k}", "signal": "counter"} for k in range(tags)]}
            for j in range(devices)}} for i in range(1, lines + 1)},
        "sinks": {"uplink": {"type": "mqtt", "port": 1883, "protocol": "3.1.1"}, "store": {"type": "sqlite"}},
    }


def write(tmp_path: Path, cfg: dict[str, object], name: str = "plant.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def plan_cli(*args: str | Path) -> int:
    return main(["fleet", "plan", *map(str, args)])


def test_units_by_line_and_by_device_with_their_loads(tmp_path: Path) -> None:
    cfg = load_config(PLANT, env={})
    lines = units_of(cfg, "line")
    assert [u.key for u in lines] == ["line1", "line2", "line3", "line4", "cell1", "cell2"]
    line1 = lines[0]
    # the bottling line: 61 tags at 1 s, and the Modbus read plan's 15 requests a second (3 per machine)
    assert (len(line1.devices), line1.tags, line1.values_per_s, line1.reads_per_s) == (5, 61, 61.0, 15.0)
    cell1 = lines[4]  # polled every 500 ms: twice the values and requests per tag
    assert (cell1.tags, cell1.values_per_s, cell1.reads_per_s) == (46, 92.0, 24.0)
    assert cell1.weight == 92.0 + REQUEST_WEIGHT * 24.0
    devices = units_of(cfg, "device")
    assert len(devices) == 28 and devices[0].key == "line1.conveyor" and devices[0].devices == (("line1", "conveyor"),)


def test_line_field_groups_sources_and_a_serial_line_moves_whole(tmp_path: Path) -> None:
    plant = synthetic_plant(2, 2)
    plant["sources"]["line1_opc"] = {  # type: ignore[index]
        "type": "synthetic", "line": "line1", "devices": {"x": {"tags": [{"name": "t", "signal": "sine"}]}}}
    plant["sources"]["rs485"] = {  # type: ignore[index]
        "type": "modbus", "transport": "rtu", "serial": {"port": "/dev/ttyUSB0"}, "devices": {
            "a": {"unit": 1, "tags": [{"name": "v", "address": 0, "type": "uint16"}]},
            "b": {"unit": 2, "tags": [{"name": "v", "address": 0, "type": "uint16"}]}}}
    cfg = load_config(write(tmp_path, plant), env={})
    assert [(u.key, len(u.devices)) for u in units_of(cfg, "line")] == [("line1", 3), ("line2", 2), ("rs485", 2)]
    by_device = {u.key: u.devices for u in units_of(cfg, "device")}
    assert by_device["rs485"] == (("rs485", "a"), ("rs485", "b"))  # one serial line, one box
    assert "line1_opc.x" in by_device


def units(n: int, weight: float = 10.0) -> list[Unit]:
    return [Unit(f"d{i:03d}", (("s", f"d{i:03d}"),), 1, weight, 0.0) for i in range(n)]


def test_a_fresh_plan_is_balanced_and_deterministic() -> None:
    mixed = [Unit(f"u{i}", (("s", f"u{i}"),), 1, float(w), 0.0) for i, w in enumerate([50, 40, 30, 20, 20, 10, 10, 5])]
    a = make_plan(mixed, gateway_ids(3, "gw"), "device")
    b = make_plan(list(reversed(mixed)), gateway_ids(3, "gw"), "device")
    assert a.owner() == b.owner()
    assert sorted(s.weight for s in a.shards) == [60.0, 60.0, 65.0]
    assert a.moved is None


@pytest.mark.parametrize(("before", "after"), [(3, 4), (4, 5), (9, 10), (5, 4)])
def test_re_planning_moves_only_what_the_balance_needs(before: int, after: int) -> None:
    us = units(60)
    first = make_plan(us, gateway_ids(before, "gw"), "device")
    second = make_plan(us, gateway_ids(after, "gw"), "device", previous=first.owner())
    assert second.moved == sum(1 for k, g in second.owner().items() if first.owner()[k] != g)
    weights = [s.weight for s in second.shards]
    assert max(weights) <= 1.1 * sum(weights) / after + 10  # within the tolerance, give or take one unit
    if after > before:  # what moves goes to the new gateways, and only about their share of it
        assert all(g in gateway_ids(after, "gw")[before:] for k, g in second.owner().items()
                   if first.owner()[k] != g)
        assert second.moved <= 60 * (after - before) // after + 1
    else:  # only the removed gateways' devices move
        assert second.moved == len([k for k, g in first.owner().items() if g not in gateway_ids(after, "gw")])


def test_the_same_plan_again_moves_nothing() -> None:
    us = units(30)
    first = make_plan(us, gateway_ids(4, "gw"), "device")
    again = make_plan(us, gateway_ids(4, "gw"), "device", previous=first.owner())
    assert again.owner() == first.owner() and again.moved == 0


def test_refusals() -> None:
    with pytest.raises(PlanError, match=r"3 devices cannot keep 4 gateways busy: plan at most 3$"):
        make_plan(units(3), gateway_ids(4, "gw"), "device")
    with pytest.raises(PlanError, match=r"--by device splits the lines"):
        make_plan(units(2), gateway_ids(3, "gw"), "line")
    with pytest.raises(PlanError, match="at least one gateway"):
        make_plan(units(2), [], "line")


def test_plan_writes_shards_that_validate_and_a_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fleet"
    assert plan_cli(PLANT, "--gateways", "3", "-o", out, "--data-dir", f"{tmp_path}/data/{{id}}") == 0
    text = capsys.readouterr().out
    assert "3 gateways, 28 devices, by line" in text and "each device is in exactly one shard" in text
    manifest = json.loads((out / "plan.json").read_text())
    assert list(manifest["gateways"]) == ["gw01", "gw02", "gw03"]
    owners: dict[str, str] = {}
    for gid, gw in manifest["gateways"].items():
        cfg = load_config(out / gw["config"], env={})
        assert cfg.empty_problem() is None and cfg.gateway_id() == gid
        assert cfg.data_dir == f"{tmp_path}/data/{gid}" and gw["data_dir"] == cfg.data_dir
        assert gw["config_hash"] == config_hash(cfg)
        assert gw["client_ids"] == {"plant_broker": f"edge-gateway-plant1-{gid}-plant_broker"}
        assert cfg.sinks["plant_broker"].client_id == gw["client_ids"]["plant_broker"]  # type: ignore[attr-defined]
        assert gw["status_topics"] == [f"acme/plant1/gateway/{gid}/status"]
        for key in gw["devices"]:
            assert key not in owners
            owners[key] = gid
        assert sorted(f"{s}.{d}" for s, scfg in cfg.sources.items() for d in scfg.device_names()) == gw["devices"]
        assert not cfg.simulators
    assert len(owners) == 28 and manifest["brokers"] == ["127.0.0.1:1883"]
    # a shard is the plant's own text cut down: same source settings, each tag on one line
    shard = (out / "gw01.yaml").read_text()
    assert shard.startswith("# Gateway gw01 of plant.yaml") and "- {name: speed, table: input" in shard


def test_re_plan_into_the_same_directory_says_what_moved(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fleet"
    assert plan_cli(PLANT, "-n", "4", "--by", "device", "-o", out) == 0
    before = json.loads((out / "plan.json").read_text())
    capsys.readouterr()
    assert plan_cli(PLANT, "-n", "5", "--by", "device", "-o", out) == 0
    text = capsys.readouterr().out
    after = json.loads((out / "plan.json").read_text())
    old = {d: g for g, gw in before["gateways"].items() for d in gw["devices"]}
    new = {d: g for g, gw in after["gateways"].items() for d in gw["devices"]}
    moved = sum(1 for d in old if old[d] != new[d])
    assert f"moved {moved} of 28 devices (re-planned from 4 to 5 gateways)" in text
    assert 0 < moved <= 7
    # back to 4: gw05's file goes, its devices find a home, and at most a couple more move for the balance
    capsys.readouterr()
    assert plan_cli(PLANT, "-n", "4", "--by", "device", "-o", out) == 0
    assert not (out / "gw05.yaml").exists() and (out / "gw04.yaml").exists()
    back = int(re.search(r"moved (\d+) of 28 devices", capsys.readouterr().out).group(1))  # type: ignore[union-attr]
    orphans = len(after["gateways"]["gw05"]["devices"])
    assert orphans <= back <= orphans + 2


def test_plan_refuses_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fleet"
    assert plan_cli(PLANT, "-n", "7", "-o", out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["edge-gateway fleet: 6 lines cannot keep 7 gateways busy: plan at most 6 "
                   "(--by device splits the lines)"]
    assert not out.exists()
    assert plan_cli(PLANT, "-n", "2", "-o", out) == 0
    manifest = json.loads((out / "plan.json").read_text())
    manifest["gateways"]["gw02"]["devices"].append(manifest["gateways"]["gw01"]["devices"][0])
    (out / "plan.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    assert plan_cli(PLANT, "-n", "3", "-o", out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is listed under both gw01 and gw02" in err[0] and "--fresh" in err[0]
    assert plan_cli(PLANT, "-n", "3", "-o", out, "--fresh") == 0
    empty = write(tmp_path, {"sinks": {"s": {"type": "sqlite"}}}, "empty.yaml")
    capsys.readouterr()
    assert plan_cli(empty, "-n", "2", "-o", tmp_path / "e") == 2
    assert capsys.readouterr().err.strip().endswith("names no source: nothing to split")


def test_check_finds_a_device_in_two_configs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fleet"
    assert plan_cli(PLANT, "-n", "3", "-o", out) == 0
    capsys.readouterr()
    assert main(["fleet", "check", str(out)]) == 0
    assert "3 gateways, 28 devices: each device is in exactly one config" in capsys.readouterr().out
    # somebody copies a line into gw03 by hand
    gw01, gw03 = (yaml.safe_load((out / f"{g}.yaml").read_text()) for g in ("gw01", "gw03"))
    name = next(iter(gw01["sources"]))
    gw03["sources"][name] = gw01["sources"][name]
    (out / "gw03.yaml").write_text(yaml.safe_dump(gw03))
    assert main(["fleet", "check", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"device {name}." in err[0] and "in two shards (gw01 and gw03)" in err[0]


def test_config_hash_is_the_effective_config(tmp_path: Path) -> None:
    base = synthetic_plant(1, 1)
    h = config_hash(load_config(write(tmp_path, base), env={}))
    same = {**base, "data_dir": str(tmp_path / "elsewhere"), "http": {"port": 8799}, "log": {"level": "debug"}}
    same["sources"] = {"line1": {**base["sources"]["line1"], "interval": "1000ms"}}  # type: ignore[index]
    assert config_hash(load_config(write(tmp_path, same), env={})) == h  # local to the box, or the same value
    assert config_hash(load_config(write(tmp_path, base), env={"EDGEGW_SINKS__UPLINK__PORT": "1884"})) != h
    assert config_hash(load_config(write(tmp_path, {**base, "gateway": {"id": "gw07"}}), env={})) != h


@pytest.mark.parametrize("name", ["example.yaml", "bottling-gateway.yaml", "cnc-gateway.yaml", "modbus-gateway.yaml",
                                  "opcua-gateway.yaml", "plant.yaml"])
def test_every_shipped_gateway_config_plans_and_checks(tmp_path: Path, name: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    cfg = load_config(REPO / "configs" / name, env={})
    n = min(2, len(units_of(cfg, "device")))
    out = tmp_path / "fleet"
    assert plan_cli(REPO / "configs" / name, "-n", str(n), "--by", "device", "-o", out) == 0, capsys.readouterr().err
    assert main(["fleet", "check", str(out)]) == 0
    assert f"{n} gateways, {len(units_of(cfg, 'device'))} devices" in capsys.readouterr().out.splitlines()[-1]


def test_the_plan_names_the_brokers_of_status_publishing_sinks_only(tmp_path: Path) -> None:
    plant = synthetic_plant(2, 1)
    plant["sinks"] = {  # a broker cluster and a store with two write endpoints
        "uplink": {"type": "mqtt", "hosts": ["mq1:1883", "mq2:1883", "[fd00::3]:1883"], "protocol": "3.1.1"},
        "tsdb": {"type": "influxdb", "urls": ["http://ts1:8086", "http://ts2:8086"], "bucket": "b", "org": "o"}}
    out = tmp_path / "fleet"
    assert plan_cli(write(tmp_path, plant), "-n", "2", "-o", out) == 0
    manifest = json.loads((out / "plan.json").read_text())
    assert manifest["brokers"] == ["mq1:1883", "mq2:1883", "[fd00::3]:1883"]
    assert manifest["gateways"]["gw02"]["status_topics"] == ["acme/p/a/l/gateway/gw02/status"]
