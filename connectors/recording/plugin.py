"""Entry-point descriptor of the ``record`` sink; the sink (and pyarrow) is imported only when one is built."""

from __future__ import annotations

from typing import TYPE_CHECKING

from connectors.recording.config import RecordSinkConfig
from gateway.plugins import BuildContext, SinkPlugin

if TYPE_CHECKING:
    from gateway.contracts import Sink


def _build(name: str, config: RecordSinkConfig, ctx: BuildContext) -> Sink:
    from connectors.recording.sink import RecordSink

    return RecordSink(name, config, log=ctx.log.bind(sink=name))


PLUGIN = SinkPlugin(
    kind="record",
    config_model=RecordSinkConfig,
    factory=_build,
    description="records samples to a CSV or Parquet file, for analysis or `simulate --replay`",
)
