"""Services a config asks this process to run beside collection, found through entry points like every
plug-in: today the ``simulators:`` section (simulated lines for demos and recordings), so the core never
imports the simulators itself."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from gateway.errors import GatewayError

if TYPE_CHECKING:
    from gateway.config.loader import GatewayConfig

SERVICES_GROUP = "edge_gateway.services"
SIMULATED_LINES = "simulated-lines"


class ServiceError(GatewayError):
    """A service could not start; the message names the config field and what went wrong."""


class RunningService(Protocol):
    def describe(self) -> list[str]:
        """One line per thing served (where to reach it), for the start-up log."""
        ...

    async def stop(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ServicePlugin:
    kind: str
    serve: Callable[[GatewayConfig], Awaitable[RunningService]]
    requires: tuple[str, ...] = ()
    extra: str = ""


async def serve_simulators(cfg: GatewayConfig) -> RunningService | None:
    """Start what the config's ``simulators:`` section asks for (None when it asks for nothing); raises
    ``ServiceError`` with a one-line reason."""
    if not cfg.simulators:
        return None
    from gateway.plugins import PluginError, missing_requirement, service_plugin

    try:
        plugin = service_plugin(SIMULATED_LINES)
    except PluginError as exc:
        raise ServiceError(f"simulators: {exc}") from None
    if (missing := missing_requirement(plugin)) is not None:
        raise ServiceError(f"simulators: {missing}")
    return await plugin.serve(cfg)
