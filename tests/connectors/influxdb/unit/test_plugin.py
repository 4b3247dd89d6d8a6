"""Building the InfluxDB sink: its dead letters are the runtime's (the spool's); the old separate file's
setting still loads, and says where dead letters went."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog.testing

from connectors.influxdb.config import InfluxSinkConfig
from connectors.influxdb.plugin import PLUGIN
from connectors.influxdb.sink import InfluxSink
from gateway.config.site import SiteConfig
from gateway.delivery import WriteRejections
from gateway.logs import get_logger
from gateway.metrics import Metrics
from gateway.plugins import BuildContext

SITE = SiteConfig(enterprise="acme", site="busan", area="packaging", line="line1")


def build(tmp_path: Path, **cfg: Any) -> tuple[InfluxSink, WriteRejections, list[dict[str, Any]]]:
    rejections = WriteRejections()
    ctx = BuildContext(metrics=Metrics(), site=SITE, data_dir=str(tmp_path), log=get_logger("test"),
                       dead_letters=rejections)
    with structlog.testing.capture_logs() as logs:
        sink = PLUGIN.factory("tsdb", InfluxSinkConfig.model_validate(cfg), ctx)
    assert isinstance(sink, InfluxSink)
    return sink, rejections, [e for e in logs if e["log_level"] == "warning"]


def test_the_sink_hands_rejected_samples_to_the_runtimes_dead_letters(tmp_path: Path) -> None:
    sink, rejections, warnings = build(tmp_path)
    assert sink.dead_letters is rejections and warnings == []
    assert list(tmp_path.iterdir()) == []  # no file of its own


def test_dead_letter_path_still_loads_deprecated_and_ignored(tmp_path: Path) -> None:
    _, _, warnings = build(tmp_path, dead_letter_path="tsdb-rejects.db")
    assert [w["event"] for w in warnings] == [
        "sinks.tsdb.dead_letter_path is deprecated and ignored: dead letters now live in the spool; read them with "
        "`edge-gateway deadletters list`"]
    assert not (tmp_path / "tsdb-rejects.db").exists()
    schema = InfluxSinkConfig.model_json_schema()["properties"]["dead_letter_path"]
    assert schema["deprecated"] is True


def test_a_file_the_old_version_left_is_pointed_out(tmp_path: Path) -> None:
    (tmp_path / "tsdb.dead.db").write_bytes(b"")
    _, _, warnings = build(tmp_path)
    assert [(w["event"], w["file"]) for w in warnings] == [
        (f"{tmp_path / 'tsdb.dead.db'} is no longer written (dead letters now live in the spool; read them with "
         "`edge-gateway deadletters list`); it keeps the points rejected before, as line protocol, until you "
         "delete it", str(tmp_path / "tsdb.dead.db"))]
