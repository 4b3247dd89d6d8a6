"""Identity and certificate checks against the simulator over a real socket: a server whose certificate URI
does not match the application URI it announces is refused with an error naming both; an X509 user identity
(``security: {certificate, private_key}``) is accepted when the server knows it and refused when it does not."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest
import structlog
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from cryptography.x509.oid import ExtendedKeyUsageOID

from connectors.opcua.pki import Pki
from gateway.metrics import Metrics
from gateway.model import Quality
from tests.connectors.opcua.support import running, simulator
from tests.waiting import until as wait_until

NS = "urn:test:identity"


def sim_cfg(tmp: Path, **security: Any) -> dict[str, Any]:
    return {
        "namespace": NS, "update_interval": "100ms",
        "security": {"policies": ["Basic256Sha256"], "modes": ["SignAndEncrypt"],
                     "pki_dir": str(tmp / "server-pki"), "application_uri": "urn:test:sim-server", **security},
        "devices": {"m1": {"variables": [{"name": "count", "type": "UInt32", "signal": "counter"}]}},
    }


def source_cfg(url: str, **identity: Any) -> dict[str, Any]:
    return {"devices": {"m1": {
        "endpoint": url, "publishing_interval": "100ms", "reconnect_initial": "100ms", "reconnect_max": "200ms",
        "security": {"policy": "Basic256Sha256", "mode": "SignAndEncrypt", "application_uri": "urn:test:gateway",
                     **identity},
        "tags": [{"name": "count", "node": f"nsu={NS};s=m1.count"}],
    }}}


def trust_server(tmp: Path, data_dir: Path) -> None:
    """Put the simulator's certificate on the gateway's trust list, so only the problem under test remains."""
    Pki(data_dir / "pki").add_trusted((tmp / "server-pki" / "server_cert.der").read_bytes())


async def identity_cert(folder: Path, name: str) -> tuple[Path, Path]:
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    cert, key = folder / f"{name}.der", folder / f"{name}.pem"
    await setup_self_signed_certificate(key, cert, f"urn:test:user:{name}", socket.gethostname(),
                                        [ExtendedKeyUsageOID.CLIENT_AUTH], {"commonName": name})
    return cert, key


def errors(metrics: Metrics, code: str) -> float:
    v = metrics.registry.get_sample_value(
        "edgegw_device_errors_total", {"source": "plant", "device": "m1", "code": code})
    return v or 0.0


@pytest.mark.timeout(60)
async def test_server_certificate_uri_mismatch_is_refused_with_a_clear_error(
    tmp_path: Path, data_dir: Path
) -> None:
    metrics = Metrics()
    cfg = sim_cfg(tmp_path, certificate_uri="urn:test:not-the-server")
    async with simulator(cfg) as sim:
        trust_server(tmp_path, data_dir)
        async with running(source_cfg(sim.url), data_dir, metrics) as r:
            dev = r.source.devices["m1"]
            # several attempts, each refused with the same classified error (backoff, not a silent loop)
            await wait_until(lambda: errors(metrics, "BadCertificateUriInvalid") >= 2, what="URI mismatch refused")
            assert dev.last_error == (
                "server certificate URI urn:test:not-the-server does not match the server's application URI "
                "urn:test:sim-server"
            )
            assert dev.session is None and not r.of("count")
            assert sim.sessions() == 0  # refused before any session was created
            assert errors(metrics, "BadCommunicationError") == 0  # nothing fell through as a generic failure


@pytest.mark.timeout(60)
async def test_certificate_user_identity_gives_good_samples(tmp_path: Path, data_dir: Path) -> None:
    cert, key = await identity_cert(tmp_path / "users", "operator")
    async with simulator(sim_cfg(tmp_path, user_certificates=[str(cert)])) as sim:
        trust_server(tmp_path, data_dir)
        async with running(source_cfg(sim.url, certificate=str(cert), private_key=str(key)), data_dir) as r:
            await wait_until(lambda: sum(s.quality is Quality.GOOD for s in r.of("count")) >= 2,
                             what="GOOD samples with an X509 identity")
            assert r.source.devices["m1"].last_error is None
            assert sim.server is not None
            sessions = list(sim.server.iserver._external_sessions.values())
            assert len(sessions) == 1
            assert sessions[0].user is not None and sessions[0].user.name == "x509"  # not anonymous
            values = [s.value for s in r.of("count") if s.quality is Quality.GOOD]
            counts = [v for v in values if isinstance(v, int)]
            assert counts == values and counts == sorted(counts)  # the counter's real values, in order


@pytest.mark.timeout(60)
async def test_unknown_certificate_user_identity_is_refused(tmp_path: Path, data_dir: Path) -> None:
    known, _ = await identity_cert(tmp_path / "users", "operator")
    cert, key = await identity_cert(tmp_path / "users", "intruder")
    metrics = Metrics()
    async with simulator(sim_cfg(tmp_path, user_certificates=[str(known)])) as sim:
        trust_server(tmp_path, data_dir)
        cfg = source_cfg(sim.url, certificate=str(cert), private_key=str(key))
        cfg["devices"]["m1"]["reconnect_max"] = "20s"  # a refused login waits this long at once, not 100 ms
        with structlog.testing.capture_logs() as logs:
            async with running(cfg, data_dir, metrics) as r:
                dev = r.source.devices["m1"]
                await wait_until(lambda: dev.last_error is not None, what="an error")
                assert "the server refused the identity (BadUserAccessDenied)" in dev.last_error  # type: ignore[operator]
                assert errors(metrics, "BadUserAccessDenied") >= 1
                # with the initial 100 ms backoff a few more attempts would land in this second: none may
                await asyncio.sleep(1.0)
                assert errors(metrics, "BadUserAccessDenied") == 1
                assert dev.session is None and not r.of("count")
    refusals = [e for e in logs if e["event"].startswith("opcua login refused")]
    assert len(refusals) == 1 and refusals[0]["retry_in"] == 20.0


@pytest.mark.timeout(60)
async def test_client_certificate_with_a_stale_uri_is_reissued_for_the_configured_uri(
    tmp_path: Path, data_dir: Path
) -> None:
    pki = Pki(data_dir / "pki")
    pki.ensure_dirs()
    await setup_self_signed_certificate(pki.key_path, pki.cert_path, "urn:test:old-name", socket.gethostname(),
                                        [ExtendedKeyUsageOID.CLIENT_AUTH], {"commonName": "edge-gateway"})
    assert pki.list_own().uris == ("urn:test:old-name",)
    key = pki.key_path.read_bytes()
    async with simulator(sim_cfg(tmp_path)) as sim:
        trust_server(tmp_path, data_dir)
        async with running(source_cfg(sim.url), data_dir) as r:
            await wait_until(lambda: any(s.quality is Quality.GOOD for s in r.of("count")), what="GOOD samples")
            assert r.source.devices["m1"].last_error is None
    assert pki.list_own().uris == ("urn:test:gateway",)  # the SAN now carries the configured application URI
    assert pki.key_path.read_bytes() == key  # same key pair, only the certificate was reissued
