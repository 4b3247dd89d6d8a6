"""Entry-point descriptor of the ``influxdb`` sink; influxdb-client is imported only when one is built."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from connectors.influxdb.config import InfluxSinkConfig
from gateway.plugins import BuildContext, SinkPlugin

if TYPE_CHECKING:
    import structlog

    from gateway.contracts import Sink


def _build(name: str, config: InfluxSinkConfig, ctx: BuildContext) -> Sink:
    from connectors.influxdb.sink import InfluxSink

    log = ctx.log.bind(sink=name)
    _warn_legacy_dead_letters(name, config, ctx.data_dir, log)
    return InfluxSink(name, config, ctx.site, dead_letters=ctx.dead_letters, log=log)


def _warn_legacy_dead_letters(name: str, config: InfluxSinkConfig, data_dir: str,
                              log: structlog.stdlib.BoundLogger) -> None:
    """``dead_letter_path`` is still accepted (a config written for an older gateway must keep starting),
    but nothing is written there any more: say where dead letters went, and about a file left behind."""
    where = "dead letters now live in the spool; read them with `edge-gateway deadletters list`"
    if "dead_letter_path" in config.model_fields_set:
        log.warning(f"sinks.{name}.dead_letter_path is deprecated and ignored: {where}")
    old = os.path.join(data_dir, os.path.expanduser(config.dead_letter_path or f"{name}.dead.db"))
    if os.path.exists(old):
        log.warning(f"{old} is no longer written ({where}); it keeps the points rejected before, as line "
                    "protocol, until you delete it", file=old)


PLUGIN = SinkPlugin(
    kind="influxdb",
    requires=("influxdb_client",),
    extra="influxdb",
    config_model=InfluxSinkConfig,
    factory=_build,
    description="InfluxDB v2 write API (InfluxDB 2/3, VictoriaMetrics): line protocol, gzip; points the server "
    "rejects go to the spool's dead letters, the rest are written",
)
