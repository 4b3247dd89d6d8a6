"""Plug-in descriptor of the simulated lines a config serves in-process (entry point
``edge_gateway.services: simulated-lines``; the ``simulators:`` config section, used by the embedded
default). Imports no protocol library: the servers are imported when a line is started."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.services import SIMULATED_LINES, ServicePlugin

if TYPE_CHECKING:
    from gateway.config.loader import GatewayConfig
    from simulators.line.server import LineServer


class _Lines:
    def __init__(self, names: list[str], servers: list[LineServer]) -> None:
        self._names = names
        self._servers = servers

    def describe(self) -> list[str]:
        return [f"{name}: modbus {s.placement.host}:{s.placement.modbus_port}, {s.opcua_url}"
                for name, s in zip(self._names, self._servers, strict=True)]

    async def stop(self) -> None:
        from simulators.line.embedded import stop_lines

        await stop_lines(self._servers)


async def _serve(cfg: GatewayConfig) -> _Lines:
    from simulators.line.embedded import config_base, start_lines

    return _Lines(list(cfg.simulators), await start_lines(cfg.simulators, config_base(cfg)))


LINES = ServicePlugin(kind=SIMULATED_LINES, serve=_serve, requires=("asyncua", "pymodbus"), extra="modbus,opcua")
