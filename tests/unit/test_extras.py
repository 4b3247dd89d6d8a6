"""Connector libraries are extras: the core installs none, each plug-in names its extra, and a config that
uses a kind whose library is missing is refused at load, naming the extra to install."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from gateway import plugins
from gateway.cli.main import main
from gateway.plugins import SINKS_GROUP, SOURCES_GROUP, SourcePlugin, installed_kinds, sink_plugin, source_plugin
from tests.fakes import ToggleSource, ToggleSourceConfig

ROOT = Path(__file__).resolve().parents[2]
PROTOCOL_LIBRARIES = ("asyncua", "pymodbus", "paho-mqtt", "influxdb-client", "pyarrow", "protobuf")


def test_the_core_needs_no_protocol_library_and_each_plugin_names_its_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.startswith(PROTOCOL_LIBRARIES)]
    extras = project["optional-dependencies"]
    assert {"modbus", "opcua", "mqtt", "influxdb", "parquet", "sparkplug", "all"} <= set(extras)
    for lib in PROTOCOL_LIBRARIES:
        assert any(d.startswith(lib) for d in extras["all"]), lib
    required = {}
    for kind in installed_kinds(SOURCES_GROUP):
        required[kind] = source_plugin(kind)
    for kind in installed_kinds(SINKS_GROUP):
        required[kind] = sink_plugin(kind)
    assert {k: (p.requires, p.extra) for k, p in required.items() if p.requires} == {
        "modbus": (("pymodbus",), "modbus"), "opcua": (("asyncua",), "opcua"),
        "mqtt": (("paho", "orjson"), "mqtt"), "influxdb": (("influxdb_client",), "influxdb"),
        "sparkplug": (("paho", "orjson", "google.protobuf"), "sparkplug")}
    for plugin in required.values():
        if plugin.extra:
            assert plugin.extra in extras


def test_a_dotted_library_whose_parent_package_is_missing_is_missing() -> None:
    assert plugins.missing_modules(["no_such_parent_pkg.protobuf", "json"]) == ["no_such_parent_pkg.protobuf"]


def test_a_kind_whose_library_is_missing_is_refused_with_the_extra(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text("sources:\n  line: {type: toggle}\nsinks:\n  store: {type: sqlite}\n")
    missing = SourcePlugin("toggle", ToggleSourceConfig, ToggleSource, requires=("no_such_protocol_lib",),
                           extra="toggle")
    with plugins.registered(missing):
        assert main(["validate", "-c", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert (f"{cfg}: sources.line.type: source type 'toggle' needs no_such_protocol_lib, which is not installed: "
            "pip install 'shopfloor-edge-gateway[toggle]'") in err
    assert "Traceback" not in err


def test_a_command_whose_library_is_missing_says_what_to_install(monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import gateway.cli.main as cli

    def never(_: object) -> int:
        raise AssertionError("must not run without its library")

    fake = plugins.CommandPlugin(name="scanx", help="scan something", configure=lambda p: None, run=never,
                                 requires=("no_such_protocol_lib",), extra="modbus")
    monkeypatch.setattr(cli, "command_plugins", lambda: [fake])
    assert cli.main(["scanx", "--anything", "here"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("edge-gateway scanx: command 'scanx' needs no_such_protocol_lib, which is not installed: "
                           "pip install 'shopfloor-edge-gateway[modbus]'")


def test_every_plugin_command_is_listed_without_a_hard_coded_table() -> None:
    import gateway.cli.main as cli

    names = set(cli.build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    assert {"query", "scan", "browse", "pki", "simulate", "record", "run", "validate", "write"} <= names
    assert not hasattr(cli, "PLUGIN_COMMANDS")
