"""``fleet status`` against real gateways and mosquitto: the shipped plant planned into three gateways, each
publishing its retained status; one stopped (offline), one running a config other than its plan; and a
gateway that comes back after another box took its id stands down."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import yaml

from gateway.cli.main import main
from gateway.config.loader import load_config
from gateway.fleet.message import GatewayStatus
from gateway.runtime import Runtime
from tests import REPO
from tests.mqtt_subscriber import Subscriber
from tests.servers import Mosquitto
from tests.waiting import until

PLANT = REPO / "configs" / "plant.yaml"
Status = Callable[..., Awaitable[tuple[int, str]]]


@asynccontextmanager
async def running(path: Path) -> AsyncIterator[Runtime]:
    """One gateway in this loop, stopped (cleanly) when the block ends."""
    runtime = Runtime(load_config(path))
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    await asyncio.wait_for(runtime.started.wait(), 10)
    try:
        yield runtime
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


@pytest.fixture
def status(capsys: pytest.CaptureFixture[str]) -> Status:
    async def run(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        code = await asyncio.to_thread(main, ["fleet", "status", *args])
        return code, capsys.readouterr().out

    return run


def rows(text: str) -> dict[str, str]:
    """The table's rows by gateway id (the in-process gateways' log lines, on the same stdout, left out)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("GATEWAY "))
    return {line.split()[0]: line for line in lines[start + 1:] if line.startswith("gw")}


def document(text: str) -> dict[str, object]:
    """The JSON that ``--json`` printed, among the log lines."""
    body, _ = json.JSONDecoder().raw_decode(text[text.index('{\n  "gateways"'):])
    return body  # type: ignore[no-any-return]


@pytest.mark.timeout(90)
async def test_the_planned_plant_seen_by_fleet_status(tmp_path: Path, mosquitto_server: Mosquitto, status: Status,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    plant = tmp_path / "plant.yaml"  # the shipped plant, its broker being the test's mosquitto
    plant.write_text(PLANT.read_text().replace("port: 1883", f"port: {mosquitto_server.port}"))
    out = tmp_path / "fleet"
    assert main(["fleet", "plan", str(plant), "--gateways", "3", "-o", str(out),
                 "--data-dir", f"{tmp_path}/data/{{id}}"]) == 0
    plan = json.loads((out / "plan.json").read_text())
    monkeypatch.setenv("EDGEGW_HTTP__ENABLED", "false")  # three gateways on one box; http is not in the hash
    async with running(out / "gw01.yaml"), running(out / "gw03.yaml"):
        async with running(out / "gw02.yaml") as gw02:
            async def all_online() -> str | None:
                code, text = await status("--plan", str(out))
                return text if code == 0 and "GATEWAY " in text and len(rows(text)) == 3 else None

            text = await until(all_online, 30, "three gateways online, as planned")
            for gid, gw in plan["gateways"].items():
                row = rows(text)[gid]
                assert " online " in row and f"{gw['config_hash']} = plan" in row and row.endswith(" ok")

            async def devices_down() -> bool:  # the plant's lines are not served here: a change, published at once
                _, text = await status("--plan", str(out))
                return all(f" 0/{len(gw['devices'])}/{len(gw['devices'])} " in rows(text)[gid]
                           for gid, gw in plan["gateways"].items())

            await until(devices_down, 15, "every device reported down, well within the 10 s status interval")
            instance = gw02.fleet.instance
        # gw02 stopped cleanly: its status says offline, and fleet status flags it (exit 1)
        code, text = await status("--plan", str(out))
        assert code == 1 and "offline" in rows(text)["gw02"] and rows(text)["gw01"].endswith(" ok")
        # started again with an override that changes what it does: it runs a config other than its plan
        monkeypatch.setenv("EDGEGW_SINKS__LOCAL_STORE__RETENTION", "1d")
        async with running(out / "gw02.yaml") as again:
            assert again.fleet.instance != instance

            async def flagged() -> dict[str, list[str]] | None:
                code, text = await status("--plan", str(out), "--json")
                gateways: list[dict[str, object]] = document(text)["gateways"]  # type: ignore[assignment]
                flags = {g["id"]: g["flags"] for g in gateways}
                online = all(g.get("status", {}).get("state") == "online" for g in gateways)  # type: ignore[attr-defined]
                return flags if code == 1 and online else None

            assert await until(flagged, 20, "gw02 back, on another config") == {
                "gw01": [], "gw02": ["config"], "gw03": []}
        # without the plan (and so without the manifest's topics): the default prefix misses this plant's
        # status topic (acme/plant1/gateway/<id>/status), --topic-prefix finds it
        code, text = await status("--broker", f"127.0.0.1:{mosquitto_server.port}", "--topic-prefix", "acme/plant1")
        assert code == 1 and set(rows(text)) == {"gw01", "gw02", "gw03"} and "offline" in rows(text)["gw02"]
        assert "= plan" not in text


@pytest.mark.timeout(60)
async def test_a_gateway_that_comes_back_after_being_replaced_stands_down(
        tmp_path: Path, mosquitto_server: Mosquitto, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(yaml.safe_dump({
        "site": {"enterprise": "rep", "site": "s", "area": "a", "line": "l"}, "gateway": {"id": "gwx"},
        "data_dir": str(tmp_path / "old-box"), "http": {"enabled": False},
        "sources": {"line": {"type": "synthetic", "interval": "100ms",
                             "devices": {"m1": {"tags": [{"name": "n", "signal": "counter"}]}}}},
        "sinks": {"uplink": {"type": "mqtt", "port": mosquitto_server.port, "protocol": "3.1.1",
                             "keepalive": "5s", "topic": "rep/{device}"}},
    }))
    topic = "rep/s/a/l/gateway/gwx/status"
    with Subscriber(mosquitto_server.port, [topic, "rep/m1"]) as sub:
        async with running(config) as old:
            await sub.wait_for(lambda m: any(r.topic == "rep/m1" for r in m))
            # the replacement: same config, an empty data directory, started while the old box still runs
            monkeypatch.setenv("EDGEGW_DATA_DIR", str(tmp_path / "new-box"))
            async with running(config) as new:
                # its connect took the old box's broker session; the old box reconnects, finds the new one
                # online in the retained status, and stands down
                await until(lambda: old.fleet.replaced_by is not None, 15, "the old gateway stands down")
                assert old.fleet.replaced_by is not None and old.fleet.replaced_by.instance == new.fleet.instance
                await until(lambda: not any(n.startswith("source:") for n in old.tasks), 5, "old sources stopped")
                healthy, body = old.board.health()
                assert not healthy
                assert "sink uplink: replaced: another instance runs this gateway id; stopped" in body["problems"]
                assert new.fleet.replaced_by is None
                seen = len(sub.snapshot())
                await sub.wait_for(lambda m: len([r for r in m[seen:] if r.topic == "rep/m1"]) >= 10)  # data flows
                new_sink = new.sinks["uplink"]
                assert new_sink.link is not None and new_sink.link.connected  # type: ignore[attr-defined]
                assert not new_sink.health_problems()
                retained = [GatewayStatus.parse(r.payload) for r in sub.snapshot() if r.topic == topic]
                assert retained[-1].instance == new.fleet.instance and retained[-1].state == "online"
    log = capsys.readouterr().out
    replaced = [line for line in log.splitlines() if "gateway replaced: another instance now runs this gateway id"
                in line]
    assert len(replaced) == 1 and "stop this box's gateway" in replaced[0]
