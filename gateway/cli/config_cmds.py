"""``validate`` and ``schema``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from gateway.cli.common import add_config_arg, load_or_report
from gateway.config.loader import config_json_schema
from gateway.plugins import PluginError


def register(sub: Any) -> None:
    p = sub.add_parser("validate", help="check a config: exit 0, or exit 2 with one line per problem",
                       description="Check a config file (and EDGEGW_* environment overrides) without running it.")
    add_config_arg(p)
    p.set_defaults(handler=validate)
    s = sub.add_parser("schema", help="print the JSON Schema of the whole config (every installed plug-in)")
    s.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    s.set_defaults(handler=schema)


def validate(args: argparse.Namespace) -> int:
    cfg = load_or_report(args.config)
    if cfg is None:
        return 2
    if (empty := cfg.empty_problem()) is not None:  # loads (`query` may use it), but would run nothing
        print(empty, file=sys.stderr)
        return 2
    print(f"{cfg.path}: ok ({len(cfg.sources)} sources, {len(cfg.sinks)} sinks)")
    return 0


def schema(args: argparse.Namespace) -> int:
    try:
        text = json.dumps(config_json_schema(), indent=2)
    except PluginError as exc:  # an installed plug-in that does not import: say which, no traceback
        print(f"edge-gateway schema: {exc}", file=sys.stderr)
        return 2
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    else:
        sys.stdout.write(text + "\n")
    return 0
