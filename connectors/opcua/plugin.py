"""Plug-in descriptor of the OPC-UA source (entry point ``edge_gateway.sources: opcua``).

Imports no asyncua: the source and its adapter are imported by the factory only.
"""

from __future__ import annotations

from connectors.opcua.config import OpcUaSourceConfig
from gateway.contracts import Source
from gateway.plugins import BuildContext, SourcePlugin


def _build(name: str, config: OpcUaSourceConfig, ctx: BuildContext) -> Source:
    from connectors.opcua.source import OpcUaSource

    return OpcUaSource(name, config, data_dir=ctx.data_dir, log=ctx.log.bind(source=name), metrics=ctx.metrics)


PLUGIN = SourcePlugin(
    kind="opcua",
    requires=("asyncua",),
    extra="opcua",
    config_model=OpcUaSourceConfig,
    factory=_build,
    description="OPC-UA servers: subscriptions or batched reads, nsu=/browse-path addressing, security, recovery",
)
