"""Config loading: YAML + EDGEGW_* overrides, plug-in models, one exact line per problem."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator, Mapping
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Literal

import pytest
import yaml
from pydantic import SecretStr

from connectors.sqlite.config import SqliteStoreConfig
from connectors.synthetic.config import SyntheticSourceConfig
from gateway import plugins
from gateway.config.base import Duration, SinkConfigBase
from gateway.config.loader import (
    EMBEDDED,
    GatewayConfig,
    config_json_schema,
    default_config_text,
    default_data_dir,
    load_config,
)
from gateway.errors import ConfigError
from gateway.plugins import SINKS_GROUP, SOURCES_GROUP, PluginError, SinkPlugin, installed_kinds

REPO = Path(__file__).resolve().parents[2]
SOURCE_KINDS = ", ".join(installed_kinds(SOURCES_GROUP))


class FakeMqttConfig(SinkConfigBase):
    """A stand-in for the MQTT sink (a later issue): nested fields, a duration and a secret."""

    type: Literal["fakemqtt"] = "fakemqtt"
    host: str
    port: int = 1883
    keepalive: Duration = 60.0
    password: SecretStr | None = None


FAKE_MQTT = SinkPlugin(kind="fakemqtt", config_model=FakeMqttConfig, factory=lambda *_: None)  # type: ignore[arg-type]


@pytest.fixture
def fake_sinks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Install ``fakemqtt`` (loaded from the cache) and ``broken`` (whose module does not exist)."""
    real_group = plugins._group

    def group(name: str) -> dict[str, EntryPoint]:
        eps = real_group(name)
        if name == SINKS_GROUP:
            eps["fakemqtt"] = EntryPoint("fakemqtt", "tests.unit.test_config:FAKE_MQTT", SINKS_GROUP)
            eps["broken"] = EntryPoint("broken", "tests.no_such_module:PLUGIN", SINKS_GROUP)
        return eps

    monkeypatch.setattr(plugins, "_group", group)
    monkeypatch.setitem(plugins._cache, (SINKS_GROUP, "fakemqtt"), FAKE_MQTT)


Write = Callable[[str], Path]


@pytest.fixture
def write(tmp_path: Path) -> Iterator[Write]:
    def _write(text: str) -> Path:
        path = tmp_path / "plant.yaml"
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    yield _write


def problems(path: Path | None, env: Mapping[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, env={} if env is None else env)
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


SYNTH = """\
sources:
  gen:
    type: synthetic
    interval: {interval}
    devices:
      line:
        tags:
          - {{name: a, signal: sine, amplitude: 2, period: 1m}}
          - {{name: b, signal: ramp, start: 0, end: 10, period: 1m}}
          - {{name: c, signal: counter}}
          - {{name: d, signal: constant, value: 3, unit: {unit}}}
sinks:
  local_store: {{type: sqlite}}
"""


def synth(interval: str = "1s", unit: str = "bar") -> str:
    return SYNTH.format(interval=interval, unit=unit)


BROKER = """\
sources:
  gen:
    type: synthetic
    devices: {line: {tags: [{name: a, signal: sine}]}}
sinks:
  plant_broker:
    type: fakemqtt
    host: broker.local
    port: 8883
    keepalive: 30s
    sources: ["gen"]
"""


# --- loading -----------------------------------------------------------------------------------------


def test_embedded_default_loads() -> None:
    cfg = load_config(None, env={})
    assert cfg.path == EMBEDDED
    # the simulated bottling line, served beside the gateway, collected over both protocols
    # (tests/unit/test_line_configs.py checks every tag against the line's register map and node list)
    assert list(cfg.sources) == ["line_modbus", "line_opcua"] and list(cfg.sinks) == ["local_store"]
    assert [s.type for s in cfg.sources.values()] == ["modbus", "opcua"]
    assert isinstance(cfg.sinks["local_store"], SqliteStoreConfig)
    assert cfg.simulators["line"].scenario == "bottling-line"
    assert yaml.safe_load(default_config_text())["sinks"]["local_store"]["type"] == "sqlite"


def test_embedded_default_takes_an_uplink_from_the_environment() -> None:
    env = {"EDGEGW_SINKS__UPLINK__TYPE": "mqtt", "EDGEGW_SINKS__UPLINK__HOST": "broker.local",
           "EDGEGW_SINKS__TSDB__TYPE": "influxdb", "EDGEGW_SINKS__TSDB__URL": "http://tsdb.local:8086",
           "EDGEGW_SINKS__TSDB__BUCKET": "line", "EDGEGW_SINKS__TSDB__ORG": "acme"}
    cfg = load_config(None, env=env)
    assert list(cfg.sinks) == ["local_store", "uplink", "tsdb"]
    assert [cfg.sinks[n].type for n in cfg.sinks] == ["sqlite", "mqtt", "influxdb"]
    assert cfg.sinks["uplink"].host == "broker.local"


def test_example_yaml_loads_for_real() -> None:
    path = REPO / "configs" / "example.yaml"
    cfg = load_config(path, env={})
    assert cfg.path == str(path)
    assert cfg.site.site == "busan"
    assert {s.type for s in cfg.sources.values()} == {"synthetic"}
    assert {s.type for s in cfg.sinks.values()} == {"sqlite"}
    assert cfg.spool.max_size == 256 * 1024 * 1024 and cfg.log.level == "info"


def test_plugin_instances_and_dump(write: Write) -> None:
    cfg = load_config(write(synth(interval="250 ms")), env={})
    src = cfg.sources["gen"]
    assert isinstance(src, SyntheticSourceConfig) and src.interval == 0.25
    dumped = cfg.model_dump()
    assert "path" not in dumped
    # The plug-in's own fields are dumped, not just the base class's.
    assert dumped["sources"]["gen"]["devices"]["line"]["tags"][3]["value"] == 3
    assert dumped["sinks"]["local_store"]["retention"] == 30 * 86400.0


def test_empty_file_and_null_sections(write: Write) -> None:
    cfg = load_config(write("sources:\nsinks:\n"), env={})
    assert cfg.sources == {} and cfg.sinks == {}
    assert load_config(write(""), env={}).http.port == 8750


def test_default_data_dir(write: Write) -> None:
    assert default_data_dir({"XDG_DATA_HOME": "/srv/data"}) == "/srv/data/edge-gateway"
    home = str(Path.home() / ".local" / "share" / "edge-gateway")
    assert default_data_dir({}) == home
    assert default_data_dir({"XDG_DATA_HOME": "relative/dir"}) == home  # the XDG spec: ignore it
    assert load_config(write(""), env={"XDG_DATA_HOME": "/srv/data"}).data_dir == "/srv/data/edge-gateway"


# --- environment overrides ---------------------------------------------------------------------------


def test_env_overrides_one_nested_field_and_keeps_siblings(write: Write, fake_sinks: None) -> None:
    env = {
        "EDGEGW_SINKS__PLANT_BROKER__PORT": "1884",
        "EDGEGW_LOG__LEVEL": "debug",
        "EDGEGW_DATA_DIR": "/x",
        "EDGEGW_SINKS__PLANT_BROKER__SOURCES": '["gen", "other_*"]',
        "EDGEGW_SINKS__PLANT_BROKER__PASSWORD": "s3cret",
        "OTHER_VAR": "ignored",
    }
    cfg = load_config(write(BROKER), env=env)
    broker = cfg.sinks["plant_broker"]
    assert isinstance(broker, FakeMqttConfig)
    assert broker.port == 1884
    assert (broker.host, broker.keepalive) == ("broker.local", 30.0)  # siblings keep their YAML values
    assert broker.sources == ["gen", "other_*"]
    assert broker.password is not None and broker.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(cfg)
    assert cfg.log.level == "debug" and cfg.log.format == "auto"
    assert cfg.data_dir == "/x"


def test_env_can_add_an_entry_and_change_a_type(write: Write) -> None:
    env = {
        "EDGEGW_SINKS__EXTRA__TYPE": "sqlite",
        "edgegw_sinks__extra__retention": "1d",
        "EDGEGW_SINKS__LOCAL_STORE__TYPE": "discard",
    }
    cfg = load_config(write(synth()), env=env)
    extra = cfg.sinks["extra"]
    assert isinstance(extra, SqliteStoreConfig) and extra.retention == 86400.0
    # The plug-in is picked after the merge, so a variable can switch an entry's type.
    assert type(cfg.sinks["local_store"]).__name__ == "DiscardSinkConfig"


def test_os_environ_is_the_default(write: Write, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEGW_HTTP__PORT", "9000")
    assert load_config(write(synth())).http.port == 9000
    # A given mapping replaces the process environment entirely (tests, an embedding application).
    assert load_config(write(synth()), env={}).http.port == 8750
    assert load_config(write(synth()), env={"edgegw_http__port": "9100"}).http.port == 9100


# --- one exact line per problem ----------------------------------------------------------------------


def test_unknown_key_with_hint(write: Write, fake_sinks: None) -> None:
    p = write(BROKER.replace("keepalive: 30s", "keepaliv: 30s"))
    assert problems(p) == [f"{p}: sinks.plant_broker.keepaliv: unknown key; did you mean 'keepalive'?"]


def test_unknown_key_deep_in_a_plugin_and_at_top_level(write: Write) -> None:
    p = write(synth().replace("start: 0,", "strat: 0,") + "logs: {level: info}\n")
    assert problems(p) == [
        f"{p}: sources.gen.devices.line.tags.1.strat: unknown key; did you mean 'start'?",
        f"{p}: logs: unknown key; did you mean 'log'?",
    ]


def test_unknown_key_of_a_tag_lists_the_known_keys(write: Write) -> None:
    # Tags are pydantic dataclasses (an unknown key is `unexpected_keyword_argument`, not `extra_forbidden`).
    p = write("sources:\n  plc:\n    type: modbus\n    host: h\n"
              "    devices: {d1: {unit: 1, tags: [{name: a, address: 0, zzz: 1}]}}\n"
              "sinks:\n  local_store: {type: sqlite}\n")
    assert problems(p) == [
        f"{p}: sources.plc.devices.d1.tags.0.zzz: unknown key; expected one of: address, address_base, alarm, bit, "
        "clamp, count, deadband, deadband_percent, length, max, max_silence, min, name, offset, on_change, order, "
        "poll_group, scale, stale_after, states, table, type, unit, writable",
    ]
    tags = '[{"name": "a", "address": 0, "scal": 2}]'
    assert problems(p, {"EDGEGW_SOURCES__PLC__DEVICES__D1__TAGS": tags}) == [
        "EDGEGW_SOURCES__PLC__DEVICES__D1__TAGS: sources.plc.devices.d1.tags.0.scal: unknown key; did you mean "
        "'scale'?",
    ]


def test_wrong_type(write: Write, fake_sinks: None) -> None:
    p = write(BROKER.replace("port: 8883", "port: [8883]"))
    assert problems(p) == [f"{p}: sinks.plant_broker.port: Input should be a valid integer"]


def test_wrong_type_in_a_list_item(write: Write) -> None:
    p = write(synth(unit="[1, 2]"))
    assert problems(p) == [f"{p}: sources.gen.devices.line.tags.3.unit: Input should be a valid string"]


def test_missing_field(write: Write, fake_sinks: None) -> None:
    p = write(BROKER.replace("    host: broker.local\n", ""))
    assert problems(p) == [f"{p}: sinks.plant_broker.host: Field required"]


def test_bad_duration(write: Write) -> None:
    p = write(synth(interval="fast"))
    assert problems(p) == [f"{p}: sources.gen.interval: expected a duration such as 250ms, 1s, 5m, 2h (got 'fast')"]


def test_unknown_plugin_type(write: Write) -> None:
    p = write(synth().replace("sinks:", "  x: {type: profinet}\nsinks:"))
    assert problems(p) == [f"{p}: sources.x.type: unknown source type 'profinet'; installed: {SOURCE_KINDS}"]


def test_missing_type_and_non_mapping_entry(write: Write) -> None:
    p = write(synth().replace("sinks:", "  nothing: {interval: 1s}\n  five: 5\nsinks:"))
    assert problems(p) == [
        f"{p}: sources.nothing.type: Field required; installed source types: {SOURCE_KINDS}",
        f"{p}: sources.five: expected a mapping with a 'type' key (source types: {SOURCE_KINDS})",
    ]


def test_bad_names(write: Write) -> None:
    p = write(synth().replace("  gen:", "  Bad-Name:").replace("local_store:", "a__b:"))
    hint = "invalid name: use lowercase letters, digits and single underscores, e.g. filler_plc"
    assert problems(p) == [f"{p}: sources.Bad-Name: {hint}", f"{p}: sinks.a__b: {hint}"]


def test_every_problem_is_reported_at_once(write: Write, fake_sinks: None) -> None:
    text = (
        BROKER.replace("port: 8883", "port: many")
        .replace("keepalive: 30s", "keepalive: soon")
        .replace("sinks:", "  y: {type: profinet}\nsinks:")
        + "log: {level: loud}\n"
    )
    p = write(text)
    assert problems(p) == [
        f"{p}: sources.y.type: unknown source type 'profinet'; installed: {SOURCE_KINDS}",
        f"{p}: sinks.plant_broker.port: Input should be a valid integer, unable to parse string as an integer",
        f"{p}: sinks.plant_broker.keepalive: expected a duration such as 250ms, 1s, 5m, 2h (got 'soon')",
        f"{p}: log.level: Input should be 'debug', 'info', 'warning' or 'error'",
    ]


def test_secrets_never_appear(write: Write, fake_sinks: None) -> None:
    p = write(BROKER.replace("port: 8883", "port: 8883\n    password: [hunter2]"))
    lines = problems(p)
    assert lines == [f"{p}: sinks.plant_broker.password: Input should be a valid string"]
    assert "hunter2" not in "\n".join(lines)


def test_broken_plugin_is_a_problem_not_a_traceback(write: Write, fake_sinks: None) -> None:
    p = write(synth().replace("local_store: {type: sqlite}", "out: {type: broken}"))
    (line,) = problems(p)
    assert line.startswith(f"{p}: sinks.out.type: sink plug-in 'broken' failed to load: ModuleNotFoundError(")


def test_only_used_plugins_are_imported(write: Write, fake_sinks: None) -> None:
    # `broken` cannot be imported; a config that does not use it loads anyway.
    load_config(write(BROKER), env={})
    with pytest.raises(PluginError, match="broken"):
        config_json_schema()


# --- where the value came from -----------------------------------------------------------------------


def test_env_error_names_the_variable(write: Write, fake_sinks: None) -> None:
    p = write(BROKER)
    env = {"EDGEGW_SINKS__PLANT_BROKER__PORT": "x", "EDGEGW_SINKS__PLANT_BROKER__KEEPALIVE": "never"}
    assert problems(p, env) == [
        "EDGEGW_SINKS__PLANT_BROKER__PORT: sinks.plant_broker.port: "
        "Input should be a valid integer, unable to parse string as an integer",
        "EDGEGW_SINKS__PLANT_BROKER__KEEPALIVE: sinks.plant_broker.keepalive: "
        "expected a duration such as 250ms, 1s, 5m, 2h (got 'never')",
    ]


def test_env_unknown_key_and_type_name_the_variable(write: Write) -> None:
    p = write(synth())
    env = {"EDGEGW_SINKS__LOCAL_STORE__RETENSION": "1d", "EDGEGW_SOURCES__GEN__TYPE": "profinet"}
    assert problems(p, env) == [
        f"EDGEGW_SOURCES__GEN__TYPE: sources.gen.type: unknown source type 'profinet'; installed: {SOURCE_KINDS}",
        "EDGEGW_SINKS__LOCAL_STORE__RETENSION: sinks.local_store.retension: unknown key; did you mean 'retention'?",
    ]


def test_entry_created_by_env_is_blamed_on_it(write: Write, fake_sinks: None) -> None:
    p = write(synth())
    assert problems(p, {"EDGEGW_SINKS__CLOUD__TYPE": "fakemqtt"}) == [
        "EDGEGW_SINKS__CLOUD__TYPE: sinks.cloud.host: Field required"
    ]


def test_env_mapping_over_a_scalar_is_blamed_on_it(write: Write) -> None:
    p = write(synth() + "site: {line: line1}\n")
    assert problems(p, {"EDGEGW_SITE__LINE__X": "a"}) == [
        "EDGEGW_SITE__LINE__X: site.line: Input should be a valid string"
    ]


def test_env_json_mapping_is_merged_and_attributed_per_key(write: Write) -> None:
    p = write(synth(interval="fast"))
    env = {"EDGEGW_SOURCES__GEN": '{"seed": "x"}'}
    assert problems(p, env) == [
        f"{p}: sources.gen.interval: expected a duration such as 250ms, 1s, 5m, 2h (got 'fast')",
        "EDGEGW_SOURCES__GEN: sources.gen.seed: Input should be a valid integer, unable to parse string as an integer",
    ]


def test_env_invalid_json(write: Write) -> None:
    p = write(synth())
    assert problems(p, {"EDGEGW_SINKS__LOCAL_STORE__SOURCES": "[gen"}) == [
        "EDGEGW_SINKS__LOCAL_STORE__SOURCES: sinks.local_store.sources: invalid JSON "
        "(Expecting value at column 2); lists and mappings are written as JSON here"
    ]


# --- the file itself ---------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "nope.yaml"
    assert problems(p) == [f"{p}: no such file"]


def test_yaml_syntax_error(write: Write) -> None:
    p = write("site:\n  site: busan\n  area: [packaging\nlog: {}\n")
    # libyaml and the pure-Python parser word the problem differently; file, line and context are ours.
    (line,) = problems(p)
    assert line.startswith(f"{p}:4: YAML syntax error: ")
    assert "expected ',' or ']'" in line and line.endswith("(while parsing a flow sequence on line 3)")


def test_yaml_duplicate_key(write: Write) -> None:
    p = write("sinks:\n  a: {type: sqlite}\n  a: {type: discard}\n")
    assert problems(p) == [f"{p}:3: duplicate key 'a'"]


def test_top_level_not_a_mapping(write: Write) -> None:
    p = write("- site\n- sources\n")
    assert problems(p) == [
        f"{p}: expected a mapping of sections (site, data_dir, sources, sinks, spool, http, log) "
        "at the top level, found a list"
    ]


def test_section_of_the_wrong_shape(write: Write) -> None:
    p = write("sources: [gen]\n1: x\n")
    assert problems(p) == [
        f"{p}: sources: Input should be a valid dictionary",
        f"{p}: 1: unknown key; expected one of: data_dir, gateway, http, log, simulators, sinks, site, sources, spool",
    ]


# --- schema ------------------------------------------------------------------------------------------


def test_schema_has_every_installed_plugin_as_a_discriminated_union() -> None:
    schema = config_json_schema()
    for section, group in (("sources", SOURCES_GROUP), ("sinks", SINKS_GROUP)):
        values = next(iter(schema["properties"][section]["patternProperties"].values()))
        mapping = values["discriminator"]["mapping"]
        assert values["discriminator"]["propertyName"] == "type"
        assert sorted(mapping) == installed_kinds(group)
        for kind, ref in mapping.items():
            assert schema["$defs"][ref.rsplit("/", 1)[-1]]["properties"]["type"]["const"] == kind
    assert {"synthetic"} <= set(installed_kinds(SOURCES_GROUP))
    assert {"sqlite"} <= set(installed_kinds(SINKS_GROUP))
    assert set(schema["properties"]) == set(GatewayConfig.model_fields) - {"path"}


def test_an_empty_config_is_refused_with_a_hint(tmp_path: Path) -> None:
    import subprocess
    import sys

    for text in ("", "sources: {}\nsinks: {local: {type: sqlite}}\n"):
        path = tmp_path / "empty.yaml"
        path.write_text(text)
        for command in ("validate", "run"):
            out = subprocess.run([sys.executable, "-m", "gateway.cli.main", command, "-c", str(path)],
                                 capture_output=True, text=True, timeout=30)
            assert out.returncode == 2, (command, out.stdout, out.stderr)
            assert out.stderr.startswith(f"{path}: sources: the config names no source") and "without -c" in out.stderr
            assert "Traceback" not in out.stderr
