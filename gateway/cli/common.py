"""Helpers shared by the CLI commands."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime, timedelta

from gateway.config.base import parse_duration
from gateway.config.loader import GatewayConfig, load_config
from gateway.errors import ConfigError
from gateway.values import array_json

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TABLE_ESCAPES = str.maketrans({"\n": "\\n", "\r": "\\r", "\t": "\\t"})


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


def parse_when(text: str, now_ns: int) -> int | None:
    """``now``, a duration ago (``7d``) or an ISO 8601 time (naive means UTC) -> wall-clock ns; None if
    it is none of those (the command says which option wanted what)."""
    text = text.strip()
    if text == "now":
        return now_ns
    try:
        return now_ns - round(parse_duration(text) * 1e9)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return ((when - _EPOCH) // timedelta(microseconds=1)) * 1000


def format_time(ts_ns: int) -> str:
    """ISO 8601 UTC with milliseconds: ``2024-05-01T06:00:00.250Z``."""
    seconds, rest = divmod(ts_ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{rest // 1_000_000:03d}Z"


def format_value(value: object, *, table: bool) -> str:
    """A sample's value as text: ``-`` for none in a table (empty in CSV), arrays as JSON, and in a table
    line breaks and tabs escaped so a row stays one line."""
    if value is None:
        return "-" if table else ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):  # an array or matrix, as JSON (NaN/inf as null)
        text = array_json(value)
        return text.translate(_TABLE_ESCAPES) if table else text
    text = str(value)
    return text.translate(_TABLE_ESCAPES) if table else text
