"""Replace a box (issue 15 item 5), against a 3-node nats-server cluster.

Three gateways (processes) with disjoint shards of one plant, planned by ``fleet plan``, publish into the
cluster. One is killed (SIGKILL, its will says offline) and its replacement started with the same shard config
and an empty data directory. Another is frozen (SIGSTOP: a box cut off), replaced the same way, and let go
again (SIGCONT): its broker session was taken, it reconnects, finds its id online under a later instance and
stands down with a clear log line. A subscriber on another node than the gateways' sees every device from
exactly one gateway at a time (each instance's counters start at 0: a device shows one unbroken run per
instance, the runs one after the other), nothing a gateway had delivered is missing, and for the killed box
every sample its spool had seen acknowledged by the cluster arrived."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from gateway.cli.main import main
from gateway.fleet.message import GatewayStatus
from tests.mqtt_subscriber import Received, Subscriber
from tests.servers import NatsCluster
from tests.waiting import until

INTERVAL = 0.2


class Gateway:
    """``edge-gateway run`` in its own process, its log (JSON lines) in a file."""

    def __init__(self, config: Path, log: Path, data_dir: Path | None = None) -> None:
        env = {**os.environ, "EDGEGW_HTTP__ENABLED": "false", "PYTHONUNBUFFERED": "1"}
        if data_dir is not None:
            env["EDGEGW_DATA_DIR"] = str(data_dir)
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "gateway.cli.main", "run", "-c", str(config)],
                                         stdout=out, stderr=subprocess.STDOUT, env=env)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def logged(self, text: str) -> list[dict[str, object]]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            if text in line:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    out.append({"event": line})
        return out


@pytest.fixture
def procs() -> Iterator[list[Gateway]]:
    started: list[Gateway] = []
    yield started
    for g in started:
        g.stop()


def plant(prefix: str, hosts: list[str]) -> dict[str, object]:
    return {
        "site": {"enterprise": prefix, "site": "plant", "area": "a", "line": "all"},
        "sources": {f"line{i}": {"type": "synthetic", "interval": f"{int(INTERVAL * 1000)}ms", "devices": {
            f"m{j}": {"tags": [{"name": "n", "signal": "counter"}, {"name": "t", "signal": "sine"}]} for j in (1, 2)}}
            for i in (1, 2, 3)},
        "sinks": {"uplink": {"type": "mqtt", "hosts": hosts, "protocol": "3.1.1", "keepalive": "5s",
                             "reconnect_min": "1s", "reconnect_max": "2s", "topic": prefix + "/{source}/{device}",
                             "status_topic": prefix + "/gateway/{gateway}/status"}},
    }


def statuses(messages: list[Received], prefix: str) -> dict[str, GatewayStatus]:
    """The latest status per gateway id."""
    out: dict[str, GatewayStatus] = {}
    for r in messages:
        if r.topic.startswith(f"{prefix}/gateway/"):
            st = GatewayStatus.parse(r.payload)
            out[st.id] = st
    return out


def runs(messages: list[Received], topic: str) -> list[list[tuple[float, int]]]:
    """A device's distinct (time, counter) pairs in time order, cut where the counter starts again: one run per
    instance that collected it."""
    seen = set()
    for r in messages:
        if r.topic == topic:
            body = json.loads(r.payload)
            seen.add((datetime.fromisoformat(body["ts"]).timestamp(), body["values"]["n"]))
    out: list[list[tuple[float, int]]] = []
    for ts, n in sorted(seen):
        if not out or n < out[-1][-1][1]:
            out.append([])
        out[-1].append((ts, n))
    return out


def acked_ticks(data_dir: Path) -> int:
    """How many ticks the sink's persisted spool cursor says the cluster acknowledged (one batch per tick)."""
    with sqlite3.connect(data_dir / "spool.db") as db:
        row = db.execute("SELECT seq FROM cursors WHERE sink = 'uplink'").fetchone()
    return int(row[0]) if row else 0


@pytest.mark.timeout(150)
async def test_three_gateways_one_killed_one_cut_off_both_replaced(
        tmp_path: Path, nats_cluster: NatsCluster, procs: list[Gateway], capsys: pytest.CaptureFixture[str]) -> None:
    prefix = f"rp{os.getpid()}x{int(time.time()) % 100000}"  # the cluster outlives tests: topics of our own
    n1, n2, n3 = nats_cluster.nodes
    plant_file = tmp_path / "plant.yaml"
    plant_file.write_text(yaml.safe_dump(plant(prefix, nats_cluster.hosts)))
    fleet = tmp_path / "fleet"
    assert main(["fleet", "plan", str(plant_file), "-n", "3", "-o", str(fleet),
                 "--data-dir", f"{tmp_path}/data/{{id}}"]) == 0
    manifest = json.loads((fleet / "plan.json").read_text())
    owner = {d: g for g, gw in manifest["gateways"].items() for d in gw["devices"]}
    assert sorted(owner) == [f"line{i}.m{j}" for i in (1, 2, 3) for j in (1, 2)]
    by_gw = {g: sorted({d.split(".")[0] for d in gw["devices"]}) for g, gw in manifest["gateways"].items()}
    assert sorted(line for lines in by_gw.values() for line in lines) == ["line1", "line2", "line3"]  # disjoint
    line_of = {g: lines[0] for g, lines in by_gw.items()}

    async def fleet_status(broker: str) -> tuple[int, str]:
        capsys.readouterr()
        code = await asyncio.to_thread(main, ["fleet", "status", "--plan", str(fleet), "--broker", broker, "--json"])
        return code, capsys.readouterr().out

    with Subscriber(n2.mqtt_port, [f"{prefix}/#"], client_id=f"sub-{prefix}", protocol="3.1.1") as sub:
        gws = {g: Gateway(fleet / f"{g}.yaml", tmp_path / f"{g}.log") for g in ("gw01", "gw02", "gw03")}
        procs.extend(gws.values())

        def online(gid: str, other_than: str | None = None) -> GatewayStatus | None:
            st = statuses(sub.snapshot(), prefix).get(gid)
            return st if st is not None and st.state == "online" and st.instance != other_than else None

        await until(lambda: all(online(g) for g in gws), 60, "three gateways online")
        first = {g: online(g) for g in gws}
        await sub.wait_for(lambda m: {r.topic for r in m} >= {f"{prefix}/{d.replace('.', '/')}" for d in owner}, 20)
        # retained statuses, read from the third node: the fleet as planned
        code, text = await fleet_status(n3.host)
        assert code == 0 and all(g["flags"] == [] for g in json.loads(text)["gateways"]), text

        # 1. gw02's box dies: the cluster publishes its will, fleet status flags it. First let it deliver a few
        # seconds' worth, so that its spool holds acknowledged cursors to check against (persisted within 1 s)
        gw02_topic = f"{prefix}/{line_of['gw02']}/m1"
        await sub.wait_for(lambda m: sum(len(r) for r in runs(m, gw02_topic)) >= 3 / INTERVAL, 20)
        gws["gw02"].signal(signal.SIGKILL)
        gws["gw02"].proc.wait(5)
        await until(lambda: (st := statuses(sub.snapshot(), prefix).get("gw02")) and st.state == "offline", 20,
                    "gw02's last will")
        code, text = await fleet_status(n1.host)
        assert code == 1 and {g["id"]: g["flags"] for g in json.loads(text)["gateways"]}["gw02"] == ["offline"]
        # its replacement: the same shard config, an empty data directory
        gws["gw02b"] = Gateway(fleet / "gw02.yaml", tmp_path / "gw02b.log", tmp_path / "new" / "gw02")
        procs.append(gws["gw02b"])
        await until(lambda: online("gw02", other_than=first["gw02"].instance), 30, "gw02 replaced")  # type: ignore[union-attr]

        # 2. gw03's box is cut off (frozen): the cluster gives up on it after 1.5 keep-alives and publishes its
        # will; it is replaced, and then comes back: it must stand down
        gws["gw03"].signal(signal.SIGSTOP)
        frozen_at = time.time()
        await until(lambda: (st := statuses(sub.snapshot(), prefix).get("gw03")) and st.state == "offline", 20,
                    "gw03's will after its keep-alive ran out")
        gws["gw03b"] = Gateway(fleet / "gw03.yaml", tmp_path / "gw03b.log", tmp_path / "new" / "gw03")
        procs.append(gws["gw03b"])
        await until(lambda: online("gw03", other_than=first["gw03"].instance), 30, "gw03 replaced")  # type: ignore[union-attr]
        gw03_topic = f"{prefix}/{line_of['gw03']}/m1"
        await sub.wait_for(lambda m: len(runs(m, gw03_topic)) == 2, 15)  # the replacement collects
        gws["gw03"].signal(signal.SIGCONT)
        await until(lambda: gws["gw03"].logged("gateway replaced: another instance now runs this gateway id"), 30,
                    "the old gw03 stands down")
        stood_down = gws["gw03"].logged("gateway replaced")[0]
        assert await until(lambda: statuses(sub.snapshot(), prefix)["gw03"].instance
                           == stood_down["replaced_by_instance"], 5, "the replacement's status retained")
        assert gws["gw03"].logged("stopped publishing and disconnected for good")
        resumed = sum(len(r) for r in runs(sub.snapshot(), gw03_topic))
        await sub.wait_for(lambda m: sum(len(r) for r in runs(m, gw03_topic)) >= resumed + 10, 20)  # still flowing
        assert gws["gw03"].proc.poll() is None  # it stays up, idle, saying why (a restart would take the shard back)
        code, text = await fleet_status(n2.host)
        final = {g["id"]: g for g in json.loads(text)["gateways"]}
        assert code == 0, text  # every gateway online, running its plan's config (data_dir is the box's own)
        assert final["gw03"]["status"]["instance"] != first["gw03"].instance  # type: ignore[union-attr]
        for g in ("gw02b", "gw03b", "gw01"):
            gws[g].signal(signal.SIGTERM)
        for g in ("gw02b", "gw03b", "gw01"):
            assert gws[g].proc.wait(10) == 0
        await until(lambda: all(st.state == "offline" for st in statuses(sub.snapshot(), prefix).values()), 15,
                    "every gateway stopped")
        messages = sub.snapshot()

    acked = acked_ticks(tmp_path / "data" / "gw02")
    assert acked > 0
    for device, gid in owner.items():
        device_runs = runs(messages, f"{prefix}/{device.replace('.', '/')}")
        replaced = gid != "gw01"
        assert len(device_runs) == (2 if replaced else 1), (device, [(r[0], r[-1]) for r in device_runs])
        for run in device_runs:
            # nothing missing from what each instance delivered: its counter from 0, no hole
            assert [n for _, n in run] == list(range(len(run))), device
        if replaced:
            old, new = device_runs
            assert old[-1][0] < new[0][0]  # one gateway at a time
        if gid == "gw02":  # every tick the killed box's spool saw acknowledged reached the subscriber
            assert len(device_runs[0]) >= acked, (device, len(device_runs[0]), acked)
        if gid == "gw03":  # the old box published nothing it collected after it was cut off
            assert device_runs[0][-1][0] <= frozen_at + INTERVAL
        # no two collectors interleaved: distinct samples at least about an interval apart
        times = sorted(ts for run in device_runs for ts, _ in run)
        assert min(b - a for a, b in itertools.pairwise(times)) > INTERVAL / 2, device
