"""Lines served inside the gateway process (config key ``simulators:``; the embedded default uses it)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from gateway.config.loader import GatewayConfig
from gateway.config.site import EmbeddedLineConfig
from gateway.services import ServiceError
from simulators.line.server import LineServer, Placement


class EmbeddedLineError(ServiceError):
    """A simulated line could not be served (its scenario, its ports)."""


async def start_lines(lines: Mapping[str, EmbeddedLineConfig], base: Path) -> list[LineServer]:
    """Start every configured line; on a failure the ones already started are stopped again."""
    import logging

    from pydantic import ValidationError

    # the simulated servers' own chatter (e.g. "no encrypting policy") is not the gateway's business
    logging.getLogger("asyncua.server").setLevel(logging.ERROR)

    from simulators.line.model import LineModel
    from simulators.line.scenario import load_scenario
    from simulators.scenarios import scenario_path

    started: list[LineServer] = []
    try:
        for name, cfg in lines.items():
            path = scenario_path(cfg.scenario)
            if not path.is_absolute() and not path.is_file():
                path = base / path
            try:
                scenario = load_scenario(path)
            except (OSError, ValueError, ValidationError) as exc:
                raise EmbeddedLineError(f"simulators.{name}.scenario: {path}: {exc}") from exc
            model = LineModel(scenario)
            placement = Placement.for_scenario(scenario, host=cfg.host, modbus_port=cfg.modbus_port,
                                               opcua_port=cfg.opcua_port)
            server = LineServer(model, placement, next_time=model.next_time, speed=cfg.speed)
            try:
                await server.start()
            except OSError as exc:
                await server.stop()
                raise EmbeddedLineError(
                    f"simulators.{name}: cannot serve {scenario.name} on {cfg.host} (Modbus port "
                    f"{placement.modbus_port}, OPC-UA port {placement.opcua_port}): {exc}"
                ) from exc
            started.append(server)
    except BaseException:
        await stop_lines(started)
        raise
    return started


def config_base(cfg: GatewayConfig) -> Path:
    """Where a config's relative scenario paths start: its file's directory (the cwd for the default)."""
    from gateway.config.loader import EMBEDDED

    return Path(cfg.path).parent if cfg.path != EMBEDDED else Path.cwd()


async def stop_lines(servers: list[LineServer]) -> None:
    for server in reversed(servers):
        await server.stop()
