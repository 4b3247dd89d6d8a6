"""Security against the simulator: Basic256Sha256 SignAndEncrypt with a username; the server certificate
goes through the trust list (refused, then accepted after `edge-gateway pki trust`); wrong password."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

from connectors.opcua.pki import Pki
from gateway.metrics import Metrics
from gateway.model import Quality
from tests.connectors.opcua.support import running, simulator
from tests.waiting import until as wait_until

NS = "urn:test:secure"


def sim_cfg(tmp: Path) -> dict[str, Any]:
    return {
        "namespace": NS, "update_interval": "100ms",
        "security": {"policies": ["Basic256Sha256"], "modes": ["SignAndEncrypt"], "users": {"op": "s3cret"},
                     "pki_dir": str(tmp / "server-pki"), "application_uri": "urn:test:sim-server"},
        "devices": {"m1": {"variables": [{"name": "count", "type": "UInt32", "signal": "counter"}]}},
    }


def source_cfg(url: str, password: str = "s3cret", policy: str = "Basic256Sha256") -> dict[str, Any]:
    return {"devices": {"m1": {
        "endpoint": url, "publishing_interval": "100ms", "reconnect_initial": "100ms", "reconnect_max": "300ms",
        "security": {"policy": policy, "mode": "SignAndEncrypt", "username": "op", "password": password,
                     "application_uri": "urn:test:gateway"},
        "tags": [{"name": "count", "node": f"nsu={NS};s=m1.count"}],
    }}}


async def pki_cli(data_dir: Path, *args: str) -> tuple[int, str, str]:
    """`edge-gateway pki ...` as a real process, without blocking the loop the simulator and source run on."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli.main", "pki", "--data-dir", str(data_dir), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


@pytest.mark.timeout(90)
async def test_untrusted_server_refused_then_accepted_after_pki_trust(tmp_path: Path, data_dir: Path) -> None:
    metrics = Metrics()
    async with simulator(sim_cfg(tmp_path)) as sim, running(source_cfg(sim.url), data_dir, metrics) as r:
        dev = r.source.devices["m1"]
        pki = Pki(data_dir / "pki")
        await wait_until(lambda: dev.last_error is not None and any(pki.rejected.glob("*.der")), what="cert rejected")
        assert dev.session is None and not r.of("count")
        assert dev.last_error is not None and "not trusted" in dev.last_error
        refused = metrics.registry.get_sample_value(
            "edgegw_device_errors_total", {"source": "plant", "device": "m1", "code": "BadCertificateUntrusted"})
        assert refused is not None and refused >= 1
        # the client certificate was generated once, with our application URI
        own = pki.list_own()
        assert "urn:test:gateway" in own.uris
        first_cert = pki.cert_path.read_bytes()

        rc, out, err = await pki_cli(data_dir, "list")
        assert rc == 0 and "rejected: 1" in out and "urn:test:sim-server" in out, err
        thumb = pki.list("rejected")[0].thumbprint
        rc, out, err = await pki_cli(data_dir, "trust", thumb[:12])
        assert rc == 0 and "trusted" in out, err

        await wait_until(lambda: any(s.quality is Quality.GOOD for s in r.of("count")), timeout=20,
                         what="secure data after trust")
        assert dev.last_error is None
        assert pki.cert_path.read_bytes() == first_cert  # kept, not regenerated per connect
        assert sim.sessions() == 1


@pytest.mark.timeout(60)
async def test_wrong_password_gives_a_clear_error(tmp_path: Path, data_dir: Path) -> None:
    async with simulator(sim_cfg(tmp_path)) as sim:
        # trust the server first, so the only problem left is the password
        der = (tmp_path / "server-pki" / "server_cert.der").read_bytes()
        Pki(data_dir / "pki").add_trusted(der)
        async with running(source_cfg(sim.url, password="wrong"), data_dir) as r:
            dev = r.source.devices["m1"]
            await wait_until(lambda: dev.last_error is not None, what="an error")
            assert "wrong user or password" in dev.last_error  # type: ignore[operator]
            assert dev.session is None and not r.of("count")


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("policy", "mode", "users"), [
    ("Aes128_Sha256_RsaOaep", "SignAndEncrypt", {}),
    ("Aes256_Sha256_RsaPss", "Sign", {"op": "s3cret"}),
    ("Basic256Sha256", "Sign", {}),
])
async def test_other_policies_modes_and_anonymous(
    tmp_path: Path, data_dir: Path, policy: str, mode: str, users: dict[str, str]
) -> None:
    cfg = sim_cfg(tmp_path)
    cfg["security"] = {**cfg["security"], "policies": [policy], "modes": [mode], "users": users}
    async with simulator(cfg) as sim:
        Pki(data_dir / "pki").add_trusted((tmp_path / "server-pki" / "server_cert.der").read_bytes())
        security: dict[str, Any] = {"policy": policy, "mode": mode, "application_uri": "urn:test:gateway"}
        if users:
            security |= {"username": "op", "password": "s3cret"}
        source = source_cfg(sim.url)
        source["devices"]["m1"]["security"] = security  # type: ignore[index]
        async with running(source, data_dir) as r:
            await wait_until(lambda: any(s.quality is Quality.GOOD for s in r.of("count")), timeout=20,
                             what=f"data over {policy}/{mode}")
            assert r.source.devices["m1"].last_error is None


@pytest.mark.timeout(60)
async def test_a_policy_the_server_does_not_offer_is_named_in_the_error(tmp_path: Path, data_dir: Path) -> None:
    async with simulator(sim_cfg(tmp_path)) as sim, running(
        source_cfg(sim.url, policy="Aes256_Sha256_RsaPss"), data_dir
    ) as r:
        dev = r.source.devices["m1"]
        await wait_until(lambda: dev.last_error is not None)
        assert "offers no Aes256_Sha256_RsaPss/SignAndEncrypt endpoint" in dev.last_error  # type: ignore[operator]
        assert "Basic256Sha256/SignAndEncrypt" in dev.last_error  # type: ignore[operator]
