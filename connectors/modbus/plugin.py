"""Plug-in descriptor of the Modbus source (entry point ``edge_gateway.sources: modbus``).

Imports no pymodbus: the source and its adapter are imported by the factory only.
"""

from __future__ import annotations

from connectors.modbus.config import ModbusSourceConfig
from gateway.contracts import Source
from gateway.plugins import BuildContext, SourcePlugin


def _build(name: str, config: ModbusSourceConfig, ctx: BuildContext) -> Source:
    from connectors.modbus.source import ModbusSource

    return ModbusSource(name, config, log=ctx.log.bind(source=name), metrics=ctx.metrics)


PLUGIN = SourcePlugin(
    kind="modbus",
    requires=("pymodbus",),
    extra="modbus",
    config_model=ModbusSourceConfig,
    factory=_build,
    description="Modbus TCP, RTU over TCP and RTU (serial) devices, polled in planned block reads",
)
