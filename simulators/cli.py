"""``edge-gateway simulate``: serve simulated equipment over real protocol servers.

- ``simulate SCENARIO``: a whole line (``simulators.line``) over Modbus and OPC-UA at once; SCENARIO is
  a scenario file or a built-in name (``bottling-line``, ``cnc-cell``).
- ``simulate --replay FILE``: a recording (``edge-gateway record``) served again, same protocols.
- ``simulate modbus FILE`` / ``simulate opcua FILE``: one protocol's device description.

Each module (``simulators.<protocol>.cli``, ``simulators.line.cli``) has ``configure(parser)`` and
``run(args) -> int`` and is imported only when chosen, so serving Modbus never loads asyncua.
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


def _module(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            return None
        raise


USAGE = """edge-gateway simulate SCENARIO [options]       a line over Modbus and OPC-UA (bottling-line, cnc-cell, FILE)
       edge-gateway simulate --replay FILE [options]  a recording served again
       edge-gateway simulate modbus|opcua FILE [...]  one protocol's device description
       (edge-gateway simulate SCENARIO -h: the options)"""


def _configure(parser: argparse.ArgumentParser) -> None:
    # The first word decides which parser reads the rest, so the forms cannot be argparse sub-commands
    # (a scenario is a free path); each form's own parser gives its -h.
    parser.usage = USAGE
    parser.add_argument("argv", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    parser.prefix_chars = "+"  # every word, `--replay` and `-h` included, goes to the chosen form's parser


def _run(args: argparse.Namespace) -> int:
    argv: list[str] = list(args.argv)
    if not argv:
        print(f"usage: {USAGE}", file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help"):
        print(f"usage: {USAGE}\n")
    protocol = argv[0] if argv[0] in PROTOCOLS else "line"
    if protocol != "line":
        argv = argv[1:]
    target = PROTOCOLS.get(protocol, ("simulators.line.cli", ""))[0]
    module = _module(target)
    if module is None:
        print(f"edge-gateway simulate {protocol}: this simulator is not installed", file=sys.stderr)
        return 2
    prog = "edge-gateway simulate" + ("" if protocol == "line" else f" {protocol}")
    parser = argparse.ArgumentParser(prog=prog, description=(PROTOCOLS.get(protocol, ("", ""))[1] or None))
    module.configure(parser)
    result: int = module.run(parser.parse_args(argv))
    return result


SIMULATE_COMMAND = CommandPlugin(
    name="simulate",
    requires=("asyncua", "pymodbus"),
    extra="modbus,opcua",
    help="serve a simulated line, a recording, or single devices over Modbus and OPC-UA",
    configure=_configure,
    run=_run,
)
