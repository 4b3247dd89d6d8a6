"""Entry-point descriptor of the ``influxdb`` sink; influxdb-client is imported only when one is built."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from connectors.influxdb.config import InfluxSinkConfig
from gateway.plugins import BuildContext, SinkPlugin

if TYPE_CHECKING:
    from gateway.contracts import Sink


def _build(name: str, config: InfluxSinkConfig, ctx: BuildContext) -> Sink:
    from connectors.influxdb.sink import InfluxSink

    dead = os.path.join(ctx.data_dir, os.path.expanduser(config.dead_letter_path or f"{name}.dead.db"))
    return InfluxSink(name, config, ctx.site, dead_letter_path=dead, metrics=ctx.metrics, log=ctx.log.bind(sink=name))


PLUGIN = SinkPlugin(
    kind="influxdb",
    requires=("influxdb_client",),
    extra="influxdb",
    config_model=InfluxSinkConfig,
    factory=_build,
    description="InfluxDB v2 write API (InfluxDB 2/3, VictoriaMetrics): line protocol, gzip, dead-letters bad points",
)
