"""No configured secret is ever shown: URL passwords and query tokens are masked in logs, config errors,
/api/status and /health, wherever the component that quoted the URL came from."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gateway.logs import configure_logging, get_logger
from gateway.redact import redact
from tests.gateways import StartGateway, get
from tests.servers import free_port
from tests.waiting import until

SECRETS = ("s3cr3t-pw", "tok-abc123", "mq-pass-9")


def test_redact_masks_url_passwords_and_query_tokens() -> None:
    assert redact("http://admin:s3cr3t-pw@host:8086/api") == "http://admin:***@host:8086/api"
    assert redact("connect to mqtts://u:p%40ss@broker:8883 failed") == "connect to mqtts://u:***@broker:8883 failed"
    assert redact("GET /write?org=a&token=tok-abc123&bucket=b") == "GET /write?org=a&token=***&bucket=b"
    assert redact("https://host/x?api_key=K&x=1") == "https://host/x?api_key=***&x=1"
    text = "no secret: http://host:8086 a=b"
    assert redact(text) is text


@pytest.mark.timeout(60)
async def test_credentials_in_urls_never_reach_a_log_an_api_or_health(tmp_path: Path, gateway: StartGateway) -> None:
    dead = free_port()  # nothing listens: every write fails and quotes its URL
    stream = io.StringIO()
    configure_logging("debug", "json", stream=stream)
    runtime = await gateway({
        "data_dir": str(tmp_path / "data"), "http": {"port": 0},
        "sources": {"line": {"type": "synthetic", "interval": "100ms", "devices": {"m1": {"tags": [
            {"name": "t", "signal": "sine"}]}}}},
        "sinks": {"tsdb": {"type": "influxdb", "url": f"http://admin:{SECRETS[0]}@127.0.0.1:{dead}/?token={SECRETS[1]}",
                           "org": "o", "bucket": "b", "token": SECRETS[1], "retry_initial": "100ms",
                           "retry_max": "200ms"}},
    })

    async def failed() -> bool:
        status = json.loads((await get(runtime, "/api/status"))[2])
        return any(s.get("last_error") for s in status.get("sinks", []))

    await until(failed, 20, "the sink fails")
    get_logger("test").warning("quoting a url", url=f"http://x:{SECRETS[2]}@h/")  # any component, any field
    shown = [(await get(runtime, p))[2] for p in ("/api/status", "/health", "/api/tags")]
    logs = stream.getvalue()
    assert "127.0.0.1:" + str(dead) in logs + "".join(shown)  # the URL itself is shown, for diagnosis
    for secret in SECRETS:
        for where, text in (("log", logs), *zip(("/api/status", "/health", "/api/tags"), shown, strict=True)):
            assert secret not in text, (secret, where)


def test_a_bad_url_in_a_config_error_is_masked(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"sinks": {"tsdb": {"type": "influxdb", "url": f"ftp://a:{SECRETS[0]}@h:1",
                                                       "org": "o", "bucket": "b", "token": "t"}}}))
    out = subprocess.run([sys.executable, "-m", "gateway.cli.main", "validate", "-c", str(path)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2, out.stdout + out.stderr
    assert SECRETS[0] not in out.stdout + out.stderr and "url" in out.stderr


