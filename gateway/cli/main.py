"""``edge-gateway``: the product's command tree.

Built-in commands live beside this module; the others (``query``, ``scan``, ``browse``, ``pki``,
``simulate``, ``record``, ``bench``, ...) register themselves as CLI plug-ins from ``connectors/``,
``simulators/`` and ``bench/``
(entry-point group ``edge_gateway.commands``), so the engine never imports a protocol library to build its
parser, and a command whose library is not installed says which extra to install.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from gateway import __version__
from gateway.cli import config_cmds, deadletters_cmd, fleet_cmd, run_cmd, write_cmd
from gateway.plugins import PluginError, command_plugins, missing_requirement

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-gateway",
        description="Industrial data-collection edge gateway: OPC-UA and Modbus in; MQTT, InfluxDB and a "
        "local store out, through a durable spool.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    run_cmd.register(sub)
    config_cmds.register(sub)
    write_cmd.register(sub)
    deadletters_cmd.register(sub)
    fleet_cmd.register(sub)
    try:
        plugins = command_plugins()  # the connectors' and simulators' commands register themselves
    except PluginError as exc:  # a broken plug-in must not take the whole CLI down
        print(f"edge-gateway: warning: {exc}", file=sys.stderr)
        plugins = []
    for plugin in plugins:
        missing = missing_requirement(plugin)
        if missing is not None:  # listed, and says what to install instead of a traceback
            p = sub.add_parser(plugin.name, help=f"{plugin.help} (not installed)", add_help=False)
            p.set_defaults(handler=_not_installed(plugin.name, missing), takes_any_arguments=True)
            continue
        p = sub.add_parser(plugin.name, help=plugin.help, description=plugin.help, aliases=list(plugin.aliases))
        plugin.configure(p)
        p.set_defaults(handler=plugin.run)
    return parser


def _not_installed(name: str, why: str) -> Handler:
    def handler(_: argparse.Namespace) -> int:
        print(f"edge-gateway {name}: {why}", file=sys.stderr)
        return 2

    return handler


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "takes_any_arguments", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    handler: Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `edge-gateway query | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
