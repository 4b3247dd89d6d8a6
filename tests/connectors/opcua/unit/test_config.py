"""OPC-UA source config, addressing forms, quality mapping, value coercion for writes, the trust list."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog
import yaml
from asyncua import ua

from connectors.opcua import adapter
from connectors.opcua.adapter import OpcUaError, _chunks, _coerce, _parse_nodeid, _plain, write_kind_of
from connectors.opcua.config import OpcUaSourceConfig, check_node
from connectors.opcua.pki import Pki, describe
from connectors.opcua.source import quality_of
from gateway.config.loader import load_config
from gateway.errors import ConfigError
from gateway.model import Quality
from gateway.writes import FLOAT32_MAX


def cfg(tags: list[dict[str, object]], **dev: object) -> dict[str, object]:
    return {"type": "opcua", "devices": {"m1": {"endpoint": "opc.tcp://127.0.0.1:4840", "tags": tags, **dev}}}


@pytest.mark.parametrize("node", [
    "ns=2;s=Line1.Temp", "ns=2;i=42", "i=2258", "nsu=urn:acme:line;s=A.B", "nsu=http://x/y;i=7",
    "ns=1;g=09087e75-8e5e-499b-954f-f2a9603db28a", "ns=1;b=M/RbKBsRVkePCePcx24oRA==",
    "/Objects/2:Line1/2:Filler/2:Temperature", "/Objects/Server",
])
def test_every_address_form_is_accepted(node: str) -> None:
    OpcUaSourceConfig.model_validate(cfg([{"name": "t", "node": node}]))


@pytest.mark.parametrize("node", ["Temperature", "ns=x;s=a", "nsu=;s=a", "/Objects//x", "s"])
def test_malformed_addresses_are_refused(node: str) -> None:
    with pytest.raises(ValueError, match=r"NodeId|browse path"):
        OpcUaSourceConfig.model_validate(cfg([{"name": "t", "node": node}]))


def test_config_errors_come_out_with_file_and_dotted_path(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump({"sources": {"plc": cfg(
        [{"name": "t", "node": "ns=2;s=a", "server_deadband": 1, "server_deadband_percent": 2}],
        security={"policy": "Basic256Sha256", "mode": "None"})}}))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = "\n".join(info.value.problems)
    assert f"{path}: sources.plc.devices.m1.tags.0: server_deadband" in text
    assert "exclude each other" in text and "secure policy needs mode" in text


def test_duplicate_tags_and_empty_devices_are_refused() -> None:
    with pytest.raises(ValueError, match="repeated: t"):
        OpcUaSourceConfig.model_validate(cfg([{"name": "t", "node": "i=1"}, {"name": "t", "node": "i=2"}]))
    with pytest.raises(ValueError, match="tags or discover"):
        OpcUaSourceConfig.model_validate(cfg([]))


def test_nsu_resolves_against_the_current_namespace_array() -> None:
    first = ["http://opcfoundation.org/UA/", "urn:server", "urn:acme:line"]
    moved = ["http://opcfoundation.org/UA/", "urn:server", "urn:x", "urn:y", "urn:acme:line"]
    assert _parse_nodeid("nsu=urn:acme:line;s=A", first) == ua.NodeId("A", 2)  # type: ignore[arg-type]
    assert _parse_nodeid("nsu=urn:acme:line;s=A", moved) == ua.NodeId("A", 4)  # type: ignore[arg-type]
    with pytest.raises(OpcUaError) as info:
        _parse_nodeid("nsu=urn:gone;i=1", first)
    assert info.value.code == adapter.BAD_NODE_ID_UNKNOWN


def test_status_code_maps_to_quality_by_severity() -> None:
    assert quality_of(0) is Quality.GOOD
    assert quality_of(0x00000400) is Quality.GOOD  # Good with info bits
    assert quality_of(0x40920000) is Quality.UNCERTAIN  # UncertainNoCommunicationLastUsableValue
    assert quality_of(0x80340000) is Quality.BAD  # BadNodeIdUnknown
    assert quality_of(0xC0000000) is Quality.BAD
    assert adapter.status_name(0x80340000) == "BadNodeIdUnknown"


def test_write_values_are_coerced_to_the_nodes_type_or_refused() -> None:
    vt = ua.VariantType
    assert _coerce(7, vt.Float) == 7.0 and type(_coerce(7, vt.Float)) is float
    assert _coerce(12.0, vt.Int16) == 12 and type(_coerce(12.0, vt.Int16)) is int
    assert _coerce(True, vt.Boolean) is True and _coerce(False, vt.Boolean) is False
    assert _coerce(2**64 - 1, vt.UInt64) == 2**64 - 1
    for value, t in ((40000, vt.Int16), (-1, vt.UInt32), (1.5, vt.Int32), ("maybe", vt.Boolean), ("true", vt.Boolean),
                     (0, vt.Boolean), (True, vt.Int32), (True, vt.Double), ("1", vt.Double), (5, vt.String)):
        with pytest.raises(OpcUaError):
            _coerce(value, t)
    assert _coerce("2026-01-02T03:04:05+00:00", vt.DateTime).year == 2026


def test_node_types_map_to_write_kinds() -> None:
    vt = ua.VariantType
    assert write_kind_of(vt.Boolean, False).base == "bool"
    assert (write_kind_of(vt.Byte, False).lo, write_kind_of(vt.Byte, False).hi) == (0, 255)
    assert write_kind_of(vt.Float, False).hi == FLOAT32_MAX
    arr = write_kind_of(vt.Int32, True)
    assert arr.array and arr.base == "int" and arr.type_name == "Int32[]"
    assert write_kind_of(vt.DateTime, False).base == "datetime"
    with pytest.raises(OpcUaError, match="not supported"):
        write_kind_of(vt.ExtensionObject, False)


def test_values_become_plain_sample_values() -> None:
    assert _plain(1.5) == 1.5 and _plain(True) is True and _plain(None) is None
    assert _plain(ua.LocalizedText("hi")) == "hi"
    assert _plain(b"\x01\xff") == "01ff"


def test_chunks_respect_a_limit_and_zero_means_none() -> None:
    assert [len(c) for c in _chunks(list(range(25)), 10)] == [10, 10, 5]
    assert [len(c) for c in _chunks(list(range(25)), 0)] == [25]


async def test_trust_list_reject_then_trust(tmp_path: Path) -> None:
    from asyncua.crypto.cert_gen import setup_self_signed_certificate
    from cryptography.x509.oid import ExtendedKeyUsageOID

    await setup_self_signed_certificate(tmp_path / "k.pem", tmp_path / "c.der", "urn:test:server", "localhost",
                                        [ExtendedKeyUsageOID.SERVER_AUTH], {"commonName": "srv"})
    der = (tmp_path / "c.der").read_bytes()
    pki = Pki(tmp_path / "pki")
    pki.ensure_dirs()
    assert not pki.is_trusted(der)
    rejected = pki.reject(der)
    assert rejected.parent == pki.rejected and describe(der).uris == ("urn:test:server",)
    with pytest.raises(LookupError, match="no rejected certificate"):
        pki.trust("ffffff")
    moved = pki.trust(describe(der).thumbprint[:8])
    assert moved.parent == pki.trusted and not rejected.exists()
    assert pki.is_trusted(der)


def test_descriptors_do_not_import_asyncua() -> None:
    import subprocess
    import sys

    code = ("import sys, connectors.opcua.plugin, connectors.opcua.cli, connectors.opcua.config; "
            "sys.exit('asyncua' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_a_password_from_the_environment_completes_a_username_from_the_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.config.loader import load_config

    path = tmp_path / "gw.yaml"
    path.write_text(
        "sources:\n  plc:\n    type: opcua\n    devices:\n      press:\n"
        "        endpoint: opc.tcp://127.0.0.1:4840\n        security: {username: operator}\n"
        "        tags: [{name: t, node: 'ns=2;s=T'}]\n"
    )
    monkeypatch.setenv("EDGEGW_SOURCES__PLC__DEVICES__PRESS__SECURITY__PASSWORD", "s3cret")
    security = load_config(path).sources["plc"].devices["press"].security  # type: ignore[attr-defined]
    assert security.username == "operator" and security.password.get_secret_value() == "s3cret"


def test_insane_timestamps_are_replaced_flagged_and_logged_once(tmp_path: Path) -> None:
    from connectors.opcua.config import OpcUaSourceConfig
    from connectors.opcua.source import OpcUaSource
    from gateway.model import Quality
    from gateway.status_codes import UNCERTAIN_TIMESTAMP

    cfg = OpcUaSourceConfig.model_validate({"devices": {"d": {
        "endpoint": "opc.tcp://127.0.0.1:4840", "tags": [
            {"name": "a", "node": "ns=2;s=A"}, {"name": "b", "node": "ns=2;s=B", "server_timestamp": True}]}}})
    dev = OpcUaSource("s", cfg, data_dir=str(tmp_path)).devices["d"]
    gw = 1_800_000_000 * 10**9
    opcua_min = -11_644_473_600 * 10**9  # 1601-01-01
    with structlog.testing.capture_logs() as logs:
        first = dev.samples([(0, 1.0, 0, opcua_min, gw), (1, 2.0, 0, gw - 10**9, gw - 5 * 10**8)], gw)
        again = dev.samples([(0, 1.5, 0, gw + 2 * 86_400 * 10**9, gw), (1, 3.0, 0x80000000, -1, opcua_min)], gw)
        sane = dev.samples([(0, 2.0, 0, gw - 10**6, gw)], gw)
    a, b = first
    assert (a.source_ts, a.quality, a.status) == (gw, Quality.UNCERTAIN, UNCERTAIN_TIMESTAMP)
    assert (b.source_ts, b.quality, b.server_ts) == (gw - 10**9, Quality.GOOD, gw - 5 * 10**8)
    assert a.server_ts == 0  # tag a does not carry it
    a2, b2 = again
    assert (a2.source_ts, a2.status) == (gw, UNCERTAIN_TIMESTAMP)  # more than a day ahead
    assert (b2.source_ts, b2.quality, b2.status, b2.server_ts) == (gw, Quality.BAD, 0x80000000, 0)  # BAD stays BAD
    assert (sane[0].source_ts, sane[0].quality) == (gw - 10**6, Quality.GOOD)
    events = [e["event"] for e in logs]
    assert events.count("opcua timestamp outside the sane window; using the receive time") == 2  # a, then b
    assert events.count("opcua timestamps sane again") == 1
    assert dev.timestamps_replaced == 3


@pytest.mark.parametrize("node,reason", [
    ("i=notanumber", "whole number"), ("ns=2;i=-1", "whole number"), ("i=4294967296", "whole number"),
    ("ns=1;g=not-a-guid", "GUID"), ("ns=1;b=%%%", "base64"),
])
def test_node_ids_are_checked_for_what_their_type_needs(node: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        check_node(node)


def test_good_node_ids_pass() -> None:
    for node in ("i=2258", "ns=2;i=42", "nsu=urn:x;s=A.B", "ns=1;g=72962b91-fa75-4ae6-8d28-b404dc7daf63",
                 "ns=1;b=T1BDVUE=", "/Objects/2:Line1"):
        assert check_node(node) == node
