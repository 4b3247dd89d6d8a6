"""TLS (a CA made in the test, mutual TLS), a wrong CA, a wrong password, and the last will on death."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from connectors.mqtt.batched_socket import BatchedSocket
from connectors.mqtt.config import MqttSinkConfig
from connectors.mqtt.sink import MqttSink
from gateway.config.site import SiteConfig
from gateway.errors import RetryableSinkError
from gateway.fleet.message import GatewayStatus
from gateway.logs import get_logger
from gateway.model import Batch, Quality, Sample
from tests.mqtt_subscriber import Subscriber
from tests.servers import Mosquitto, mosquitto

SITE = SiteConfig()


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def make_ca(d: Path, cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn)).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    (d / f"{cn}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


def issue(d: Path, ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate], cn: str, *, server: bool) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca[1].subject).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
         .not_valid_after(now + dt.timedelta(days=1)))
    if server:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
    cert = b.sign(ca[0], hashes.SHA256())
    (d / f"{cn}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, d / f"{cn}.key")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    ca = make_ca(d, "test-ca")
    make_ca(d, "other-ca")
    issue(d, ca, "localhost", server=True)
    issue(d, ca, "gateway", server=False)
    return d


@pytest.fixture(scope="module")
def tls_broker(pki: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    conf = (f"cafile {pki}/test-ca.crt\ncertfile {pki}/localhost.crt\nkeyfile {pki}/localhost.key\n"
            "require_certificate true\n")
    with mosquitto(tmp_path_factory.mktemp("tls-broker"), listener_config=conf) as broker:
        yield broker


def make_sink(port: int, name: str, **cfg: object) -> MqttSink:
    config = MqttSinkConfig.model_validate({"host": "localhost", "port": port, "reconnect_min": "1s",
                                            "reconnect_max": "1s", **cfg})
    return MqttSink(name, config, SITE, log=get_logger("test"))


BATCH = [Batch("plc", [Sample("m1", "t", 1.5, Quality.GOOD, 0, time.time_ns(), time.time_ns())])]


async def test_mutual_tls_with_a_private_ca(tls_broker: Mosquitto, pki: Path) -> None:
    sink = make_sink(tls_broker.port, "tls", tls={"ca_file": str(pki / "test-ca.crt"),
                                                  "cert_file": str(pki / "gateway.crt"),
                                                  "key_file": str(pki / "gateway.key")})
    await sink.open()
    assert sink.link is not None and await sink.link.wait_connected(10)
    await sink.write(BATCH)  # returns only after the broker's PUBACK over TLS
    await sink.close()


async def test_a_write_larger_than_the_socket_takes_goes_out_whole_over_tls(
        tls_broker: Mosquitto, pki: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TLS writes that the socket takes only in part (the rest waits for writability) keep the stream whole:
    mosquitto acks every message only after parsing it, and would drop a connection whose records broke."""
    partial: list[int] = []
    flush = BatchedSocket.flush

    def spy(self: BatchedSocket) -> bool:
        done = flush(self)
        if not done:
            partial.append(self.unsent)
        return done

    monkeypatch.setattr(BatchedSocket, "flush", spy)
    sink = make_sink(tls_broker.port, "tls-big", tls={"ca_file": str(pki / "test-ca.crt"),
                                                      "cert_file": str(pki / "gateway.crt"),
                                                      "key_file": str(pki / "gateway.key")})
    await sink.open()
    link = sink.link
    assert link is not None and await link.wait_connected(10)
    assert link._sock is not None  # a small send buffer: the socket takes each write only in part
    link._sock.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16_384)
    payloads = [bytes([i]) * 200_000 for i in range(40)]  # 8 MB in one write
    await asyncio.wait_for(link.publish_all([(f"big/{i}", p) for i, p in enumerate(payloads)], 1, False), 60)
    await link.publish_all([("big/after", b"1")], 1, False)  # the same connection goes on
    assert link.connects == 1
    await sink.close()
    assert partial, "the socket took every write whole: nothing here tested a partial TLS write"


async def test_wrong_ca_is_refused_with_a_clear_error(tls_broker: Mosquitto, pki: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    sink = make_sink(tls_broker.port, "badca", tls={"ca_file": str(pki / "other-ca.crt"),
                                                    "cert_file": str(pki / "gateway.crt"),
                                                    "key_file": str(pki / "gateway.key")})
    await sink.open()
    assert sink.link is not None
    assert not await sink.link.wait_connected(2.5)
    with pytest.raises(RetryableSinkError, match="broker certificate not trusted"):
        await sink.write(BATCH)
    await sink.close()
    out = capsys.readouterr().out
    assert out.count("broker certificate not trusted") == 1  # logged once, not per retry
    assert "check tls.ca_file" in out


async def test_wrong_password_clear_error_and_no_tight_loop(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    pwfile = tmp_path / "passwd"
    await asyncio.to_thread(subprocess.run, ["mosquitto_passwd", "-b", "-c", str(pwfile), "gw", "right"],
                            check=True, capture_output=True)
    with mosquitto(tmp_path / "auth-broker", listener_config=f"password_file {pwfile}\n",
                   allow_anonymous=False) as broker:
        good = make_sink(broker.port, "goodpw", username="gw", password="right")
        await good.open()
        assert good.link is not None and await good.link.wait_connected(10)
        await good.close()
        bad = make_sink(broker.port, "badpw", username="gw", password="wrong", reconnect_min="1s",
                        reconnect_max="30s")
        await bad.open()
        await asyncio.sleep(3.5)  # observation window for the retry rate, not a synchronisation
        with pytest.raises(RetryableSinkError, match=r"Not authorized|Bad user name or password"):
            await bad.write(BATCH)
        assert bad.link is not None and 1 <= bad.link.refusals <= 3  # attempts at ~0, 1, 3 s: backing off
        await bad.close()
    out = capsys.readouterr().out
    refusals = [line for line in out.splitlines() if "broker refused the connection" in line]
    assert len(refusals) == 1 and "check username/password" in refusals[0]
    assert "wrong" not in out  # the password never reaches the log


def test_birth_on_start_and_last_will_when_the_process_dies(mosquitto_server: Mosquitto, tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({
        "data_dir": str(tmp_path / "data"), "http": {"enabled": False},
        "site": {"enterprise": "will", "site": "s", "area": "a", "line": "l"},
        "sources": {"src": {"type": "synthetic", "interval": "100ms",
                            "devices": {"m1": {"tags": [{"name": "t", "signal": "sine"}]}}}},
        "sinks": {"cloud": {"type": "mqtt", "port": mosquitto_server.port, "keepalive": "5s",
                            "client_id": "will-test-gw"}},
    }))
    status = "will/s/a/l/gateway/s-l/status"  # gateway.id defaults to <site>-<line>
    with Subscriber(mosquitto_server.port, [status]) as sub:
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli.main", "run", "-c", str(config)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
        try:
            deadline = time.monotonic() + 20
            while not any(b'"online"' in r.payload for r in sub.snapshot()):
                assert time.monotonic() < deadline, "no birth message"
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)  # no DISCONNECT: the broker must publish the will
            proc.wait(5)
            deadline = time.monotonic() + 20
            while not (sub.snapshot() and b'"offline"' in sub.snapshot()[-1].payload):
                assert time.monotonic() < deadline, f"no last will: {sub.snapshot()}"
                time.sleep(0.05)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
    live = [GatewayStatus.parse(r.payload) for r in sub.snapshot() if not r.retain]
    assert [s.state for s in live] == ["online", "offline"]
    assert len({s.instance for s in live}) == 1 and live[0].id == "s-l"
    # the will is the last heartbeat's status: it says which gateway, which config, when last seen
    assert live[1].config_hash == live[0].config_hash and live[1].started_ns == live[0].started_ns
