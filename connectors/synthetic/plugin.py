"""Plug-in descriptor of the synthetic source (entry point ``edge_gateway.sources: synthetic``)."""

from __future__ import annotations

from connectors.synthetic.config import SyntheticSourceConfig
from gateway.contracts import Source
from gateway.plugins import BuildContext, SourcePlugin


def _build(name: str, config: SyntheticSourceConfig, ctx: BuildContext) -> Source:
    from connectors.synthetic.source import SyntheticSource

    return SyntheticSource(name, config, log=ctx.log.bind(source=name), metrics=ctx.metrics)


PLUGIN = SourcePlugin(
    kind="synthetic",
    config_model=SyntheticSourceConfig,
    factory=_build,
    description="generated signals (sine, ramp, random walk, counter, square, step, constant) for demos and tests",
)
