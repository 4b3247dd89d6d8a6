"""Samples -> line protocol: escaping, layouts, quality, precision, config validation."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from connectors.influxdb.config import InfluxSinkConfig
from connectors.influxdb.lines import LineBuilder, escape_key, field_value
from gateway.config.loader import load_config
from gateway.config.site import SiteConfig
from gateway.errors import ConfigError
from gateway.model import Batch, Quality, Sample
from tests import REPO

SITE = SiteConfig(enterprise="acme", site="busan", area="packaging", line="line1")
TS = 1_795_460_550_318_123_456


def build(samples: list[Sample], **cfg: object) -> list[str]:
    lines, counts, firsts = LineBuilder(InfluxSinkConfig.model_validate(cfg), SITE).build([Batch("plc", samples)])
    assert len(counts) == len(lines) == len(firsts)
    return lines


@pytest.mark.parametrize("fields", ["per_tag", "value"])
def test_each_line_names_the_samples_it_came_from(fields: str) -> None:
    """``firsts``/``counts`` map a line back to its samples across batches, skipping samples that make no
    line (a None value without a quality field): what sends a rejected point's samples to the dead letters."""
    a = [Sample("m1", "x", 1.0, Quality.GOOD, 0, TS, TS), Sample("m1", "y", 2.0, Quality.GOOD, 0, TS, TS),
         Sample("m1", "w", None, Quality.BAD, 4, TS, TS), Sample("m1", "z", 3.0, Quality.GOOD, 0, TS, TS),
         Sample("m1", "x", 4.0, Quality.GOOD, 0, TS + 10**9, TS)]
    b = [Sample("m2", "x", 5.0, Quality.GOOD, 0, TS, TS)]
    batches = [Batch("plc", a), Batch("plc", []), Batch("plc", b)]
    built = LineBuilder(InfluxSinkConfig.model_validate({"fields": fields, "precision": "s"}), SITE).build(batches)
    flat = a + b
    covered = [flat[f:f + n] for f, n in zip(built.firsts, built.counts, strict=True)]
    if fields == "per_tag":  # a line per device, timestamp and quality; the BAD None alone makes no line
        assert built.lines == ["plc,device=m1,quality=good,site=busan x=1.0,y=2.0 1795460550",
                               "plc,device=m1,quality=good,site=busan z=3.0 1795460550",
                               "plc,device=m1,quality=good,site=busan x=4.0 1795460551",
                               "plc,device=m2,quality=good,site=busan x=5.0 1795460550"]
        assert covered == [[a[0], a[1]], [a[3]], [a[4]], [b[0]]]
    else:
        assert [line.split(" ")[1] for line in built.lines] == [
            "value=1.0", "value=2.0", "value=3.0", "value=4.0", "value=5.0"]
        assert covered == [[a[0]], [a[1]], [a[3]], [a[4]], [b[0]]]


def test_field_values_and_escaping() -> None:
    assert [field_value(v) for v in (1.0, 2, True, None, float("nan"), 'say "hi"\\')] == [
        "1.0", "2i", "true", None, None, '"say \\"hi\\"\\\\"']
    assert escape_key("a b,c=d") == "a\\ b\\,c\\=d"


def test_per_tag_layout_splits_on_quality_and_device() -> None:
    s = [Sample("m1", "a", 1.0, Quality.GOOD, 0, TS, TS), Sample("m1", "b", 2, Quality.GOOD, 0, TS, TS),
         Sample("m1", "c", 3.0, Quality.BAD, 0, TS, TS), Sample("m2", "a", 4.0, Quality.GOOD, 0, TS, TS)]
    assert build(s, precision="s") == [
        "plc,device=m1,quality=good,site=busan a=1.0,b=2i 1795460550",
        "plc,device=m1,quality=bad,site=busan c=3.0 1795460550",
        "plc,device=m2,quality=good,site=busan a=4.0 1795460550",
    ]


def test_quality_as_field_none_values_and_gateway_time() -> None:
    s = [Sample("m1", "a", None, Quality.BAD, 4, TS, TS + 7), Sample("m1", "b", 1.5, Quality.GOOD, 0, TS, TS + 7)]
    assert build(s, quality="field", precision="ns", time_basis="gateway", tags={}) == [
        f"plc a_quality=2i,b=1.5,b_quality=0i {TS + 7}"]
    assert build(s, quality="none", precision="ms", tags={}) == ["plc b=1.5 1795460550318"]


def test_value_layout_shares_timestamps_and_writes_quality_alone() -> None:
    s = [Sample("m1", "a", 1.5, Quality.GOOD, 0, TS, TS), Sample("m1", "b", None, Quality.BAD, 4, TS, TS),
         Sample("m1", "a", float("inf"), Quality.GOOD, 0, TS + 10**9, TS + 10**9)]
    assert build(s, fields="value", quality="field", precision="s", tags={}) == [
        "plc,tag=a value=1.5,quality=0i 1795460550", "plc,tag=b quality=2i 1795460550",
        "plc,tag=a quality=0i 1795460551"]
    assert build(s, fields="value", quality="none", precision="s", tags={}) == ["plc,tag=a value=1.5 1795460550"]


@pytest.mark.parametrize(("cfg", "message"), [
    ({"measurement": "{tag}"}, "cannot appear in measurement or tags"),
    ({"fields": "value", "tags": {"tag": "{device}"}}, "tag key `tag`"),
    ({"tags": {"x": "{bogus}"}}, "unknown placeholder(s) bogus"),
    ({"precision": "m"}, "precision"),
    ({"gzip_level": 0}, "gzip_level"),
    ({"gzip_level": 10}, "gzip_level"),
])
def test_config_errors(tmp_path: Path, cfg: dict[str, object], message: str) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump({"sinks": {"tsdb": {"type": "influxdb", **cfg}}}))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert any(p.startswith(f"{path}: sinks.tsdb") and message in p for p in err.value.problems), err.value.problems


def test_sample_yaml_is_a_valid_config(tmp_path: Path) -> None:
    sample = yaml.safe_load((REPO / "connectors" / "influxdb" / "sample.yaml").read_text())
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump({"sinks": {"tsdb": sample}}))
    cfg = load_config(path).sinks["tsdb"]
    assert isinstance(cfg, InfluxSinkConfig) and cfg.precision == "ms" and cfg.token.get_secret_value() == "change-me"


def test_arrays_are_json_text_and_the_server_timestamp_an_integer_field() -> None:
    srv = 1_700_000_000_123_456_789
    lines = build([Sample("press_1", "levels", [1, 2.5, float("nan")], Quality.GOOD, 0, TS, TS, None, srv),
                   Sample("press_1", "names", ['a "b"'], Quality.GOOD, 0, TS, TS, None)],
                  fields="value", precision="ns")
    assert lines[0].endswith(f' value="[1,2.5,null]",server_ts={srv}i {TS}'), lines[0]
    assert lines[1].endswith(' value="[\\"a \\\\\\"b\\\\\\"\\"]" ' + str(TS)), lines[1]
    (line,) = build([Sample("press_1", "temp", 1.5, Quality.GOOD, 0, TS, TS, None, srv)], precision="ns")
    assert f"temp=1.5,temp_server_ts={srv}i " in line, line


def test_a_point_time_line_protocol_cannot_hold_becomes_the_receive_time() -> None:
    (line,) = build([Sample("press_1", "t", 1.0, Quality.GOOD, 0, -11_644_473_600 * 10**9, TS)], precision="ns")
    assert line.endswith(f" {TS}"), line
