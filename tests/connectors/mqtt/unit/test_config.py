"""The MQTT sink's broker list: ``hosts`` is validated entry by entry, and replaces ``host``/``port``."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.mqtt.config import MqttSinkConfig, parse_endpoint
from gateway.config.loader import load_config
from gateway.errors import ConfigError


@pytest.mark.parametrize(("text", "expected"), [
    ("broker-a:1883", ("broker-a", 1883)),
    ("10.0.0.7:8883", ("10.0.0.7", 8883)),
    ("[fd00::10]:1883", ("fd00::10", 1883)),
    (" b.plant.local:1 ", ("b.plant.local", 1)),
])
def test_endpoints_parse(text: str, expected: tuple[str, int]) -> None:
    assert parse_endpoint(text) == expected


@pytest.mark.parametrize(("hosts", "message"), [
    ([], "list at least one broker"),
    (["broker-a"], "entry 0: 'broker-a' has no port; expected host:port"),
    (["a:1883", "b:0"], "entry 1: 'b:0': the port must be a number from 1 to 65535"),
    (["a:http"], "the port must be a number"),
    (["fd00::10:1883"], "put an IPv6 address in brackets, e.g. [fd00::10]:1883"),
    (["[fd00::10]1883"], "is not [IPv6 address]:port"),
    (["a b:1883"], "'a b' is not a host name or address"),
    (["a:1883", "b:1883", "A:1883"], "entry 2: 'A:1883' repeats entry 0"),
    ([""], "an empty entry"),
])
def test_bad_hosts_are_refused_naming_the_entry(hosts: list[str], message: str) -> None:
    with pytest.raises(ValueError, match="hosts") as info:
        MqttSinkConfig.model_validate({"hosts": hosts})
    assert message in str(info.value)


def test_hosts_replace_host_and_port() -> None:
    cfg = MqttSinkConfig.model_validate({"hosts": ["a:1883", "[::1]:1884"]})
    assert cfg.endpoints() == [("a", 1883), ("::1", 1884)]
    assert MqttSinkConfig.model_validate({"host": "b", "port": 1885}).endpoints() == [("b", 1885)]
    assert MqttSinkConfig.model_validate({}).endpoints() == [("127.0.0.1", 1883)]
    for both in ({"host": "b"}, {"port": 1885}, {"host": "b", "port": 1885}):
        with pytest.raises(ValueError, match="hosts replaces host and port: set hosts, or"):
            MqttSinkConfig.model_validate({"hosts": ["a:1883"], **both})


def test_validate_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text("sources: {gen: {type: synthetic, devices: {d: {tags: [{name: a, signal: sine}]}}}}\n"
                    "sinks: {cloud: {type: mqtt, hosts: ['a:1883', 'a:1883']}}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.problems == [f"{path}: sinks.cloud.hosts: entry 1: 'a:1883' repeats entry 0"]
    env = {"EDGEGW_SINKS__CLOUD__TYPE": "mqtt", "EDGEGW_SINKS__CLOUD__HOSTS": '["a:1883", "b:1883"]'}
    path.write_text("sources: {gen: {type: synthetic, devices: {d: {tags: [{name: a, signal: sine}]}}}}\n")
    cfg = load_config(path, env=env)
    assert cfg.sinks["cloud"].endpoints() == [("a", 1883), ("b", 1883)]  # type: ignore[attr-defined]
