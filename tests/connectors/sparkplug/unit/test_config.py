"""The sparkplug sink's config: errors name the file and field, secrets stay hidden, the MQTT session is clean,
and bdSeq survives a restart."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from connectors.sparkplug.bdseq import BdSeq
from connectors.sparkplug.config import SparkplugSinkConfig
from gateway.config.loader import load_config
from gateway.errors import ConfigError
from gateway.logs import get_logger


@pytest.mark.parametrize(("cfg", "message"), [
    ({"group_id": "plant/1"}, "cannot contain /"),
    ({"edge_node_id": "{device}"}, "unknown placeholder(s) device"),
    ({"device_id": "{tag}"}, "unknown placeholder(s) tag"),
    ({"device_id": "a+{device}"}, "cannot contain +"),
    ({"primary_host_id": "scada#1"}, "cannot contain #"),
    ({"datatypes": {"temp": "Float"}}, "expected 'device/tag'"),
    ({"datatypes": {"*/temp": "Float32"}}, "Input should be 'Int8'"),
    ({"qos": 2}, "qos"),
    ({"password": "x"}, "password needs a username"),
    ({"commands": {"rate": 0}}, "commands.rate"),
    ({"layout": "device"}, "layout"),
    ({"hosts": []}, "list at least one broker"),
    ({"hosts": ["a:1883", "A:1883"]}, "entry 1: 'A:1883' repeats entry 0"),
    ({"hosts": ["a:1883"], "port": 1884}, "hosts replaces host and port"),
])
def test_config_errors_name_the_file_and_field(tmp_path: Path, cfg: dict[str, object], message: str) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump({"sinks": {"scada": {"type": "sparkplug", **cfg}}}))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert any(p.startswith(f"{path}: sinks.scada") and message in p for p in err.value.problems), err.value.problems


def test_password_is_never_shown_and_the_session_is_clean() -> None:
    cfg = SparkplugSinkConfig.model_validate({"username": "u", "password": "hunter2", "protocol": "5"})
    assert "hunter2" not in repr(cfg) and "hunter2" not in cfg.model_dump_json()
    mqtt = cfg.mqtt("edge-gateway-a-b")
    assert (mqtt.clean_start, mqtt.session_expiry, mqtt.protocol) == (True, 0.0, "5")
    assert mqtt.password is not None and mqtt.password.get_secret_value() == "hunter2"


def test_bdseq_is_stored_before_use_and_wraps(tmp_path: Path) -> None:
    log = get_logger("test")
    path = tmp_path / "sparkplug" / "scada.bdseq"
    seq = BdSeq(path, log)
    assert (seq.current, seq.next(), seq.next()) == (-1, 0, 1)
    assert path.read_text() == "1\n"
    again = BdSeq(path, log)  # a restart, even after kill -9: the file holds the last CONNECT's
    assert (again.current, again.next()) == (1, 2)
    path.write_text("255\n")
    assert BdSeq(path, log).next() == 0
    path.write_text("garbage")
    assert BdSeq(path, log).next() == 0


def test_sample_yaml_is_a_valid_config(tmp_path: Path) -> None:
    sample = yaml.safe_load((Path(__file__).resolve().parents[4] / "connectors/sparkplug/sample.yaml").read_text())
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump({"sources": {"line": {"type": "synthetic", "devices": {
        "press_1": {"tags": [{"name": "mode", "signal": "constant", "value": 1}]}}}}, "sinks": {"scada": sample}}))
    cfg = load_config(path).sinks["scada"]
    assert isinstance(cfg, SparkplugSinkConfig) and cfg.primary_host_id == "ignition" and cfg.commands.enabled


def test_a_cluster_s_brokers_reach_the_mqtt_link() -> None:
    cfg = SparkplugSinkConfig.model_validate({"hosts": ["n1:1883", "[fd00::2]:1884"], "protocol": "3.1.1"})
    mqtt = cfg.mqtt("edge-1")
    assert mqtt.endpoints() == [("n1", 1883), ("fd00::2", 1884)] and mqtt.clean_start is True
    assert SparkplugSinkConfig.model_validate({"port": 1884}).mqtt("edge-1").endpoints() == [("127.0.0.1", 1884)]
