"""``edge-gateway simulate SCENARIO`` and ``edge-gateway simulate --replay FILE``.

Serves until SIGINT/SIGTERM, printing ``ready ...`` once both servers listen and one line per machine
state change. ``--export DIR`` writes the register map and node list (CSV) and exits; ``--emit-config
FILE`` writes a gateway config that collects every point and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Any

from simulators.description import load_or_report, until_signalled


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenario", nargs="?", help="scenario file, or a built-in: bottling-line, cnc-cell")
    parser.add_argument("--replay", type=Path, metavar="FILE", help="serve a recording (.csv or .parquet) instead")
    parser.add_argument("--loop", action="store_true", help="replay: start over after the last sample")
    parser.add_argument("--speed", type=float, default=1.0, help="time factor: 10 runs ten times faster")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--modbus-port", type=int, help="default: the scenario's (replay: 5020)")
    parser.add_argument("--opcua-port", type=int, help="default: the scenario's (replay: 4840)")
    parser.add_argument("--no-modbus", action="store_true", help="serve OPC-UA only")
    parser.add_argument("--no-opcua", action="store_true", help="serve Modbus only")
    parser.add_argument("--export", type=Path, metavar="DIR",
                        help="write NAME-registers.csv and NAME-nodes.csv to DIR and exit")
    parser.add_argument("--emit-config", type=Path, metavar="FILE",
                        help="write a gateway config collecting every point and exit")
    parser.add_argument("--emit-protocol", choices=("opcua", "modbus"), default="opcua",
                        help="which protocol the emitted config collects over (default opcua)")
    parser.add_argument("--emit-interval", default="1s",
                        help="publishing (OPC-UA) or poll (Modbus) interval of the emitted config (default 1s)")


def _fail(message: str) -> int:
    print(f"edge-gateway simulate: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    if (args.scenario is None) == (args.replay is None):
        return _fail("give a SCENARIO or --replay FILE (one of them)")
    if args.speed <= 0:
        return _fail("--speed must be positive")
    built = _build_replay(args) if args.replay is not None else _build_scenario(args)
    if built is None:
        return 2
    name, model, placement, next_time, on_step = built
    if args.export is not None or args.emit_config is not None:
        return _write_files(args, name, model, placement)

    async def serve() -> None:
        from simulators.line.server import LineServer

        server = LineServer(model, placement, next_time=next_time, speed=args.speed, on_step=on_step)
        await server.start()
        parts = [f"ready {name}"]
        if placement.modbus_port is not None:
            parts.append(f"modbus={placement.host}:{placement.modbus_port}")
        if server.opcua_url is not None:
            parts.append(f"opcua={server.opcua_url}")
        machines = len({p.machine for p in model.points})
        print(" ".join([*parts, f"machines={machines}", f"points={len(model.points)}"]), flush=True)
        try:
            await until_signalled()
        finally:
            await server.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0


Built = tuple[str, Any, Any, Any, Any]


def _build_scenario(args: argparse.Namespace) -> Built | None:
    from simulators.line.model import LineModel
    from simulators.line.scenario import LineScenario
    from simulators.line.server import Placement
    from simulators.scenarios import scenario_path

    path = scenario_path(args.scenario)
    if not path.is_file():
        _fail(f"{args.scenario}: no such scenario file (built-in: bottling-line, cnc-cell)")
        return None
    scenario = load_or_report(path, LineScenario)
    if scenario is None:
        return None
    model = LineModel(scenario)
    placement = Placement.for_scenario(scenario, host=args.host, modbus_port=args.modbus_port,
                                       opcua_port=args.opcua_port, modbus=not args.no_modbus, opcua=not args.no_opcua)
    states = {m: model.state_of(m) for m in scenario.machines}

    def on_step() -> None:  # one line per state change: what a PoC team watches the line do
        for machine, before in states.items():
            now = model.state_of(machine)
            if now != before:
                states[machine] = now
                print(f"t={model.time:.1f}s {machine}: {before} -> {now}", flush=True)

    return scenario.name, model, placement, model.next_time, on_step


def _build_replay(args: argparse.Namespace) -> Built | None:
    from connectors.recording.files import RecordingError
    from simulators.line.replay import ReplayError, ReplayModel
    from simulators.line.server import Placement

    try:
        model = ReplayModel.from_file(args.replay, loop=args.loop)
    except (OSError, RecordingError, ReplayError) as exc:
        _fail(str(exc) if isinstance(exc, RecordingError) else f"{args.replay}: {exc}")
        return None
    placement = Placement(
        host=args.host,
        modbus_port=None if args.no_modbus else (args.modbus_port or 5020),
        opcua_port=None if args.no_opcua else (args.opcua_port or 4840),
        namespace="urn:edge-gateway:replay", path="/replay", folder="Replay",
    )
    print(f"replaying {model.samples} samples of {len(model.points)} tags over {model.span:.1f} s"
          f"{' (looping)' if args.loop else ''} at speed {args.speed:g}", flush=True)
    return "replay", model, placement, model.next_time, None


def _write_files(args: argparse.Namespace, name: str, model: Any, placement: Any) -> int:
    from simulators.line.export import write_nodes, write_register_map
    from simulators.line.gateway_config import write_gateway_config

    if args.export is not None:
        args.export.mkdir(parents=True, exist_ok=True)
        regs, nodes = args.export / f"{name}-registers.csv", args.export / f"{name}-nodes.csv"
        write_register_map(model.points, regs)
        write_nodes(model.points, nodes, namespace=placement.namespace, folder=placement.folder)
        print(f"wrote {regs} and {nodes} ({len(model.points)} points)")
    if args.emit_config is not None:
        source = f"{name.replace('-', '_')}_{args.emit_protocol}"
        what = f"--replay {args.replay}" if args.replay is not None else args.scenario
        header = (f"Collects every point of `edge-gateway simulate {what}` over {args.emit_protocol}.\n"
                  f"Generated by: edge-gateway simulate {what} --emit-config {args.emit_config}"
                  f" --emit-protocol {args.emit_protocol}")
        try:
            write_gateway_config(args.emit_config, model.points, placement, protocol=args.emit_protocol,
                                 source=source, header=header, interval=args.emit_interval)
        except ValueError as exc:
            return _fail(str(exc))
        print(f"wrote {args.emit_config}")
    return 0
