"""``edge-gateway simulate PROTOCOL FILE``: serve simulated devices over a real protocol server.

Each protocol's simulator owns a module ``simulators.<protocol>.cli`` with ``configure(parser)`` and
``run(args) -> int``; it is imported only when chosen, so serving Modbus never loads asyncua.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType

from gateway.plugins import CommandPlugin

PROTOCOLS = {
    "modbus": ("simulators.modbus.cli", "Modbus TCP / RTU-over-TCP server (pymodbus)"),
    "opcua": ("simulators.opcua.cli", "OPC-UA server (asyncua)"),
}


def _module(protocol: str) -> ModuleType | None:
    try:
        return importlib.import_module(PROTOCOLS[protocol][0])
    except ModuleNotFoundError as exc:
        if exc.name and PROTOCOLS[protocol][0].startswith(exc.name):
            return None
        raise


def _configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="protocol", metavar="PROTOCOL")
    sub.required = True
    for name, (_, help_text) in PROTOCOLS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        module = _module(name)
        if module is None:
            p.add_argument("rest", nargs=argparse.REMAINDER)
            continue
        module.configure(p)


def _run(args: argparse.Namespace) -> int:
    module = _module(args.protocol)
    if module is None:
        print(f"edge-gateway simulate {args.protocol}: this simulator is not installed", file=sys.stderr)
        return 2
    result: int = module.run(args)
    return result


SIMULATE_COMMAND = CommandPlugin(
    name="simulate",
    help="serve simulated devices (Modbus, OPC-UA) from a YAML description",
    configure=_configure,
    run=_run,
)
