"""``edge-gateway query``: read the embedded store from a shell, as a table or CSV."""

from __future__ import annotations

import argparse
import csv
import sqlite3
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol, TextIO

from connectors.sqlite.config import SqliteStoreConfig
from gateway.cli.common import format_time, format_value
from gateway.cli.common import parse_when as parse_time
from gateway.plugins import CommandPlugin
from gateway.status_codes import status_name

if TYPE_CHECKING:
    from connectors.sqlite.query import PointRow, SeriesRow
    from gateway.config.base import SinkConfigBase
    from gateway.watch import ValueMaps

PROG = "edge-gateway query"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class UsageError(Exception):
    """Bad arguments or a config that names no usable store: one line on stderr, exit status 2."""


class _StoreConfigs(Protocol):
    """What the command needs of the gateway config (``gateway.config.loader.GatewayConfig``)."""

    @property
    def data_dir(self) -> str: ...

    @property
    def sinks(self) -> Mapping[str, SinkConfigBase]: ...


def configure(p: argparse.ArgumentParser) -> None:
    p.epilog = (
        "WHEN is a duration ago (30s, 15m, 1h, 7d) or an ISO 8601 time (2024-05-01T06:00:00Z; without an "
        "offset it is UTC). Filters accept * and ? wildcards. Times are printed in UTC."
    )
    p.add_argument(
        "-c", "--config", metavar="FILE", help="gateway config (YAML) naming the store; default: the embedded default"
    )
    p.add_argument("--sink", metavar="NAME", help="which sqlite sink of the config, when there are several")
    p.add_argument("--db", metavar="PATH", help="read this store file instead of the config's")
    p.add_argument("--source", metavar="S", help="only this source")
    p.add_argument("--device", metavar="D", help="only this device")
    p.add_argument("--tag", metavar="T", help="only this tag")
    p.add_argument("--since", metavar="WHEN", help="points at or after WHEN")
    p.add_argument("--until", metavar="WHEN", help="points before WHEN")
    p.add_argument("--last", metavar="N", type=int, help="only the newest N points (printed oldest first)")
    p.add_argument("--format", choices=("table", "csv"), default="table", help="output format (default: table)")
    p.add_argument("--series", action="store_true", help="list the stored series instead of points")


def run(args: argparse.Namespace) -> int:
    from connectors.sqlite.query import StoreNotFoundError
    from connectors.sqlite.store import StoreFormatError
    from gateway.errors import ConfigError

    try:
        return _run(args, sys.stdout)
    except UsageError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return 2
    except StoreNotFoundError as exc:
        print(f"{PROG}: {exc} (has the gateway stored any data yet?)", file=sys.stderr)
        return 1
    except (StoreFormatError, sqlite3.Error) as exc:
        print(f"{PROG}: cannot read the store: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, out: TextIO) -> int:
    from connectors.sqlite.query import list_series, query_points

    now_ns = time.time_ns()
    since_ns = parse_when(args.since, now_ns, "--since") if args.since is not None else None
    until_ns = parse_when(args.until, now_ns, "--until") if args.until is not None else None
    if since_ns is not None and until_ns is not None and since_ns >= until_ns:
        raise UsageError("--since must be before --until")
    if args.last is not None and args.last < 1:
        raise UsageError(f"--last must be at least 1, not {args.last}")
    if args.series and (args.since is not None or args.until is not None or args.last is not None):
        raise UsageError("--series lists whole series; it does not take --since, --until or --last")
    db, maps = resolve_db(args)

    if args.series:
        series = list_series(db, device=args.device, tag=args.tag, source=args.source)
        if not series:
            print(f"{PROG}: {_nothing(args)} in {db}", file=sys.stderr)
            return 1
        _print_series(series, args.format, out)
        return 0

    if args.last is not None:
        points = query_points(
            db, args.device, args.tag, args.source, since_ns, until_ns, limit=args.last, order="desc"
        )
        points.reverse()
    else:
        points = query_points(db, args.device, args.tag, args.source, since_ns, until_ns)
    if not points:
        print(f"{PROG}: {_nothing(args)} in {db}", file=sys.stderr)
        return 1
    _print_points(points, args.format, out, maps)
    return 0


def _nothing(args: argparse.Namespace) -> str:
    filtered = any(getattr(args, a) is not None for a in ("source", "device", "tag", "since", "until"))
    what = "series" if args.series else "points"
    return f"no {what} match the filters" if filtered else f"the store is empty: no {what}"


def resolve_db(args: argparse.Namespace) -> tuple[str, dict[str, ValueMaps]]:
    """The store file, and the words of the config's value maps (none with ``--db``: no config read)."""
    if args.db is not None:
        if args.config is not None or args.sink is not None:
            raise UsageError("--db names the store file itself; drop -c/--sink")
        return str(args.db), {}
    from gateway.config.loader import load_config
    from gateway.watch import value_maps

    cfg = load_config(args.config)
    return store_path(cfg, args.sink), {name: value_maps(scfg.iter_tags()) for name, scfg in cfg.sources.items()}


def store_path(config: _StoreConfigs, sink: str | None) -> str:
    """The store file of the config's sqlite sink: the one there is, or ``sink``."""
    stores = {
        name: cfg if isinstance(cfg, SqliteStoreConfig) else SqliteStoreConfig.model_validate(cfg.model_dump())
        for name, cfg in config.sinks.items()
        if cfg.type == "sqlite"
    }
    if sink is not None:
        if sink not in config.sinks:
            raise UsageError(f"no sink {sink!r} in the config; sinks: {', '.join(sorted(config.sinks)) or 'none'}")
        if sink not in stores:
            raise UsageError(f"sink {sink!r} is of type {config.sinks[sink].type}, not sqlite")
        return stores[sink].resolve_path(config.data_dir)
    if len(stores) == 1:
        return next(iter(stores.values())).resolve_path(config.data_dir)
    if stores:
        raise UsageError(f"the config has several sqlite sinks ({', '.join(sorted(stores))}); pick one with --sink")
    if not config.sinks:  # nothing configured: the gateway writes its default store
        return SqliteStoreConfig().resolve_path(config.data_dir)
    raise UsageError(
        f"the config has no sqlite sink (sinks: {', '.join(sorted(config.sinks))}); name a file with --db"
    )


def parse_when(text: str, now_ns: int, option: str) -> int:
    """A duration ago (``1h``) or an ISO 8601 time (naive means UTC) -> wall-clock nanoseconds."""
    when = parse_time(text, now_ns)
    if when is None:
        raise UsageError(f"{option}: expected a duration (30s, 15m, 1h, 7d) or an ISO 8601 time, not {text.strip()!r}")
    return when


def _quality(point: PointRow) -> str:
    return f"{point.quality.label} ({status_name(point.status)})" if point.status else point.quality.label


def _word(maps: Mapping[str, ValueMaps], p: PointRow) -> str:
    from gateway.watch import state_word

    m = maps.get(p.source, {}).get((p.device, p.tag))
    return (state_word(m, p.value) or "") if m is not None else ""


def _print_points(points: Sequence[PointRow], fmt: str, out: TextIO,
                  maps: Mapping[str, ValueMaps] | None = None) -> None:
    maps = maps or {}
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(("time", "source", "device", "tag", "value", "unit", "quality", "status", "status_name",
                         "server_time", "state"))
        for p in points:
            writer.writerow(
                (format_time(p.ts_ns), p.source, p.device, p.tag, format_value(p.value, table=False), p.unit or "",
                 p.quality.label, p.status, status_name(p.status), format_time(p.server_ts) if p.server_ts else "",
                 _word(maps, p))
            )
        return
    header = ["TIME", "SOURCE", "DEVICE", "TAG", "VALUE", "UNIT", "QUALITY"]
    rows = []
    for p in points:
        word = _word(maps, p)
        value = format_value(p.value, table=True) + (f" ({word})" if word else "")
        rows.append([format_time(p.ts_ns), p.source, p.device, p.tag, value, p.unit or "-", _quality(p)])
    if any(p.server_ts for p in points):  # OPC-UA tags that carry the server timestamp
        header.append("SERVER TIME")
        for row, p in zip(rows, points, strict=True):
            row.append(format_time(p.server_ts) if p.server_ts else "-")
    _print_table(header, rows, out)


def _print_series(series: Sequence[SeriesRow], fmt: str, out: TextIO) -> None:
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(("source", "device", "tag", "unit", "points", "first", "last"))
        for s in series:
            writer.writerow(
                (s.source, s.device, s.tag, s.unit or "", s.points, format_time(s.first_ns), format_time(s.last_ns))
            )
        return
    _print_table(
        ("SOURCE", "DEVICE", "TAG", "UNIT", "POINTS", "FIRST", "LAST"),
        [
            (s.source, s.device, s.tag, s.unit or "-", str(s.points), format_time(s.first_ns),
             format_time(s.last_ns))
            for s in series
        ],
        out,
    )


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max([len(header[i]), *(len(r[i]) for r in rows)]) for i in range(len(header))]
    for row in (header, *rows):
        # No padding after the last column: no trailing blanks when the output is diffed or grepped.
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=False)))
        out.write(f"  {row[-1]}\n")


QUERY_COMMAND = CommandPlugin(
    name="query",
    help="print points or series from the embedded store (sqlite sink)",
    configure=configure,
    run=run,
)
