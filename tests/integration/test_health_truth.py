"""/health tells the truth, and tells the public nothing more: 503 with a short reason when data was
dropped or a sink has a problem; no hosts, ports, URLs or credentials; wrong passwords rate-limited."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.gateways import StartGateway, get
from tests.servers import free_port
from tests.waiting import until

SECRET = "s3cr3t-pw"


@pytest.mark.timeout(60)
async def test_health_is_503_with_short_public_reasons_and_no_detail(tmp_path: Path, gateway: StartGateway) -> None:
    broker_port = free_port()  # nothing listens: the uplink is down and its backlog overflows
    runtime = await gateway({
        "data_dir": str(tmp_path / "data"),
        "http": {"port": 0, "username": "admin", "password": SECRET},
        "spool": {"max_size": "16KiB", "overflow": "drop_newest"},
        "sources": {"line": {"type": "synthetic", "interval": "10ms", "devices": {"m1": {"tags": [
            {"name": f"t{i}", "signal": "sine"} for i in range(20)]}}}},
        "sinks": {
            "store": {"type": "sqlite", "path": str(tmp_path / "store.db")},
            "uplink": {"type": "mqtt", "host": "127.0.0.1", "port": broker_port, "username": "gw",
                       "password": SECRET, "max_pending_age": "1h"},
        },
    })

    async def unhealthy() -> Any:
        status, _, body = await get(runtime, "/health")
        return json.loads(body) if status == 503 else None

    body = await until(unhealthy)
    assert set(body) == {"status", "problems"}
    assert body["status"] == "unhealthy"
    assert any(p.startswith("data dropped ") and "(sinks: uplink)" in p for p in body["problems"]), body
    text = json.dumps(body)
    for leak in ("127.0.0.1", str(broker_port), SECRET, "http://", "mqtt://", "connect"):
        assert leak not in text, (leak, text)
    # The detail is behind auth and says which sink lost what.
    status, _, _ = await get(runtime, "/api/status")
    assert status == 401
    status, _, detail = await get(runtime, "/api/status", ("admin", SECRET))
    sinks = {s["name"]: s for s in json.loads(detail)["sinks"]}
    assert status == 200 and sinks["uplink"]["dropped"] > 0 and sinks["store"]["dropped"] == 0
    assert SECRET not in detail


@pytest.mark.timeout(60)
async def test_wrong_passwords_are_rate_limited_per_address(tmp_path: Path, gateway: StartGateway) -> None:
    runtime = await gateway({
        "data_dir": str(tmp_path / "data"), "http": {"port": 0, "username": "admin", "password": SECRET},
        "sources": {"line": {"type": "synthetic", "interval": "100ms", "devices": {"m1": {"tags": [
            {"name": "t", "signal": "sine"}]}}}},
        "sinks": {"store": {"type": "sqlite", "path": str(tmp_path / "store.db")}},
    })
    codes = [(await get(runtime, "/api/status", ("admin", f"guess{i}")))[0] for i in range(5)]
    assert codes == [401, 401, 401, 401, 429]
    status, headers, _ = await get(runtime, "/api/status", ("admin", SECRET))
    assert status == 429 and int(headers["Retry-After"]) >= 29  # even the right password waits it out
    status, _, _ = await get(runtime, "/health")
    assert status in (200, 503)  # the public health check is never locked out
