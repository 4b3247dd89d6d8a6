"""Entry-point descriptor of the ``sqlite`` sink; the store itself is imported only when one is built."""

from __future__ import annotations

from typing import TYPE_CHECKING

from connectors.sqlite.config import SqliteStoreConfig
from gateway.plugins import BuildContext, SinkPlugin

if TYPE_CHECKING:
    from gateway.contracts import Sink


def _build(name: str, config: SqliteStoreConfig, ctx: BuildContext) -> Sink:
    from connectors.sqlite.sink import SqliteStoreSink

    return SqliteStoreSink(
        name, config, path=config.resolve_path(ctx.data_dir), metrics=ctx.metrics, log=ctx.log.bind(sink=name)
    )


PLUGIN = SinkPlugin(
    kind="sqlite",
    config_model=SqliteStoreConfig,
    factory=_build,
    description="embedded SQLite time-series store with retention (the default output); read it with `query`",
)
