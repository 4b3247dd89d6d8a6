"""``python -m gateway.benchmark.e2e.simulate modbus|opcua FILE --port P``: one simulator process.

The same ``configure``/``run`` as ``edge-gateway simulate modbus|opcua FILE``, entered directly: the
benchmark depends on the protocol simulators only, not on the ``simulate`` command's dispatcher.
"""

from __future__ import annotations

import argparse
import importlib
import sys


def main(argv: list[str]) -> int:
    module = importlib.import_module(f"simulators.{argv[0]}.cli")
    parser = argparse.ArgumentParser(prog=f"simulate {argv[0]}")
    module.configure(parser)
    code: int = module.run(parser.parse_args(argv[1:]))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
