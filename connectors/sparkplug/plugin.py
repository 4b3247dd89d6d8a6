"""Entry-point descriptor of the ``sparkplug`` sink; paho and protobuf are imported only when a sink is built."""

from __future__ import annotations

from typing import TYPE_CHECKING

from connectors.sparkplug.config import SparkplugSinkConfig
from gateway.plugins import BuildContext, SinkPlugin

if TYPE_CHECKING:
    from gateway.contracts import Sink


def _build(name: str, config: SparkplugSinkConfig, ctx: BuildContext) -> Sink:
    from connectors.sparkplug.sink import SparkplugSink

    return SparkplugSink(name, config, ctx.site, log=ctx.log.bind(sink=name), data_dir=ctx.data_dir,
                         writer=ctx.writer, dead_letters=ctx.dead_letters)


PLUGIN = SinkPlugin(
    kind="sparkplug",
    requires=("paho", "orjson", "google.protobuf"),
    extra="sparkplug",
    config_model=SparkplugSinkConfig,
    factory=_build,
    description="Sparkplug B edge node (NBIRTH/DBIRTH/DDATA/DDEATH, bdSeq, rebirth, primary host STATE, DCMD writes)",
)
