"""Helpers shared by the CLI commands."""

from __future__ import annotations

import argparse
import sys

from gateway.config.loader import GatewayConfig, load_config
from gateway.errors import ConfigError


def add_config_arg(p: argparse.ArgumentParser, *, required: bool = False) -> None:
    p.add_argument(
        "-c", "--config", metavar="FILE", required=required,
        help="gateway config (YAML); without it, the embedded default" if not required else "gateway config (YAML)",
    )


def load_or_report(path: str | None) -> GatewayConfig | None:
    """Load a config, or print one line per problem to stderr and return None (callers exit 2)."""
    try:
        return load_config(path)
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return None
