"""``edge-gateway deadletters list|replay|purge``: what sinks refused for good, from the spool's one
dead-letter table (``gateway.deadletters``)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from gateway.cli.common import add_config_arg, format_time, load_or_report, parse_when
from gateway.cli.common import format_value as format_cell
from gateway.config.loader import GatewayConfig
from gateway.deadletters import DeadLetter, Replayed, SpoolNotFoundError, connect, purge, read, replay, spool_path
from gateway.instance_lock import InstanceLock, InstanceLocked
from gateway.model import Sample, Value
from gateway.status_codes import status_name
from gateway.values import finite

PROG = "edge-gateway deadletters"
REPLAY_TIMEOUT = 30.0  # s: for the sink to open, and for each write
ERROR_WIDTH = 160  # characters of an error in the table (--json has all of it)
VALUE_WIDTH = 60  # characters of a value in the table: a waveform array must not fill the screen
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_LINE = str.maketrans({"\n": " ", "\r": " ", "\t": " "})

REPLAY_HELP = (
    "Send dead letters to their sink again, one write each: delete those it accepts; those it refuses again "
    "stay, holding only the refused samples, with the new error. Replay is offline: the gateway must be "
    "stopped (it exits 2 when the gateway holds the spool's lock), because it builds its own copy of each "
    "sink from the config, through the same plug-in path as the gateway, and a second copy of an uplink "
    "(a second MQTT session under the same client id, a second writer on the local store) must never run "
    "beside the gateway's. Fix the cause first (the config, the server), then replay with that config."
)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "deadletters", help="list, replay or purge what sinks refused for good (the spool's dead letters)",
        description="Everything a sink refused for good (a batch an uplink rejects as malformed, the points an "
        "InfluxDB server rejects) is kept as samples in the spool file, with the sink, source, error and time. "
        "The config (-c, default: the embedded default, like run) says where the spool is.")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    ls = actions.add_parser("list", help="print the dead letters (works while the gateway runs)",
                            description="Print the dead letters, oldest first: id, time (UTC), sink, source, "
                            "number of samples and the error (cut to one line). Read-only: safe while the "
                            "gateway runs.")
    add_config_arg(ls)
    ls.add_argument("--sink", metavar="NAME", help="only this sink's")
    ls.add_argument("--limit", metavar="N", type=int, help="only the newest N (printed oldest first)")
    ls.add_argument("--samples", action="store_true", help="also print each letter's samples")
    ls.add_argument("--json", action="store_true", help="print a JSON array, every letter with its samples")
    ls.set_defaults(handler=list_letters)

    rp = actions.add_parser("replay", help="send dead letters to their sink again (gateway stopped)",
                            description=REPLAY_HELP)
    add_config_arg(rp)
    rp.add_argument("--sink", metavar="NAME", help="only this sink's")
    rp.add_argument("--id", metavar="ID", dest="ids", type=int, nargs="+", help="only these dead letters")
    rp.add_argument("--dry-run", action="store_true", help="say what would be sent where, send nothing")
    rp.add_argument("--timeout", metavar="SECONDS", type=float, default=REPLAY_TIMEOUT,
                    help=f"for the sink to open and for each write (default {REPLAY_TIMEOUT:g})")
    rp.set_defaults(handler=replay_letters)

    pg = actions.add_parser("purge", help="delete a sink's dead letters (works while the gateway runs)",
                            description="Delete the dead letters of one sink, all or those dead-lettered before "
                            "a time. One short delete, safe while the gateway runs.")
    add_config_arg(pg)
    pg.add_argument("--sink", metavar="NAME", required=True, help="the sink whose dead letters go")
    pg.add_argument("--before", metavar="WHEN", help="only those dead-lettered before WHEN: an ISO 8601 time "
                    "(UTC without an offset) or a duration ago (7d)")
    pg.set_defaults(handler=purge_letters)


# -- list ---------------------------------------------------------------------------------------------

def list_letters(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        return _usage(f"--limit must be at least 1, not {args.limit}")
    cfg = load_or_report(args.config)
    if cfg is None:
        return 2
    try:
        conn = connect(spool_path(cfg))
    except SpoolNotFoundError as exc:
        print(f"{PROG}: {exc} (has the gateway run with this config yet?)", file=sys.stderr)
        return 1
    try:
        letters = read(conn, sink=args.sink, limit=args.limit)
    except sqlite3.Error as exc:
        print(f"{PROG}: cannot read the spool: {exc}", file=sys.stderr)
        return 1
    finally:
        conn.close()
    if args.json:
        print_json(letters, sys.stdout)
    elif letters:
        print_table(letters, sys.stdout, samples=args.samples)
    else:
        print(f"{PROG}: no dead letters" + (f" of sink {args.sink!r}" if args.sink else ""), file=sys.stderr)
    return 0


def print_table(letters: Sequence[DeadLetter], out: TextIO, *, samples: bool = False) -> None:
    header = ("ID", "TIME", "SINK", "SOURCE", "SAMPLES", "ERROR")
    rows = [(str(d.id), format_time(d.created_ns), d.sink, d.source, str(len(d.samples)) if d.readable else "?",
             one_line(d.error, ERROR_WIDTH)) for d in letters]
    widths = _widths(header, rows)
    _row(header, widths, out)
    for letter, row in zip(letters, rows, strict=True):
        _row(row, widths, out)
        if samples and letter.samples:
            sample_rows = [(format_time(s.source_ts or s.gateway_ts), s.device, s.tag, format_value(s.value),
                            _quality(s)) for s in letter.samples]
            sample_widths = _widths(("",) * 5, sample_rows)
            for sample_row in sample_rows:
                _row(sample_row, sample_widths, out, indent="    ")


def print_json(letters: Sequence[DeadLetter], out: TextIO) -> None:
    doc = [{
        "id": d.id, "time": format_time(d.created_ns), "sink": d.sink, "source": d.source, "seq": d.seq,
        "error": d.error, "count": len(d.samples), "readable": d.readable,
        "samples": [{
            "device": s.device, "tag": s.tag, "value": finite(s.value), "unit": s.unit, "quality": s.quality.label,
            "status": s.status, "status_name": status_name(s.status), "time": format_time(s.source_ts or s.gateway_ts),
        } for s in d.samples],
    } for d in letters]
    out.write(json.dumps(doc, indent=2, allow_nan=False) + "\n")


def _quality(s: Sample) -> str:
    return f"{s.quality.label} ({status_name(s.status)})" if s.status else s.quality.label


def _widths(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[int]:
    return [max([len(header[i]), *(len(r[i]) for r in rows)]) for i in range(len(header))]


def _row(cells: Sequence[str], widths: Sequence[int], out: TextIO, indent: str = "") -> None:
    # no padding after the last column: no trailing blanks when the output is diffed or grepped
    out.write(indent + "  ".join(c.ljust(w) for c, w in zip(cells[:-1], widths, strict=False)) + f"  {cells[-1]}\n")


def one_line(text: str, width: int) -> str:
    flat = " ".join(text.translate(_ONE_LINE).split())
    return flat if len(flat) <= width else flat[:width - 1] + "…"


def format_value(value: Value) -> str:
    """The query table's text of a value, on one line and cut to ``VALUE_WIDTH``."""
    return "-" if value is None else one_line(format_cell(value, table=False), VALUE_WIDTH)


# -- replay -------------------------------------------------------------------------------------------

def replay_letters(args: argparse.Namespace) -> int:
    if not args.timeout > 0:
        return _usage(f"--timeout must be positive, not {args.timeout:g}")
    cfg = load_or_report(args.config)
    if cfg is None:
        return 2
    path = spool_path(cfg)
    if args.dry_run:
        return _dry_run(cfg, path, args)
    if not path.is_file():
        print(f"{PROG}: no spool at {path} (has the gateway run with this config yet?)", file=sys.stderr)
        return 1
    lock = InstanceLock.of_spool(path)  # the very lock a running gateway holds
    try:
        lock.acquire()
    except InstanceLocked:
        holder = _holder(lock.path)
        print(f"{PROG} replay: the gateway is running ({holder} holds {lock.path.name}); replay builds its own "
              "copy of each sink, which must never run beside the gateway's: stop the gateway, replay, start it "
              "again", file=sys.stderr)
        return 2
    try:
        conn = connect(path, write=True)
        try:
            letters = _selected(conn, args)
            if letters is None:
                return 2
            if not letters:
                print(f"{PROG}: nothing to replay", file=sys.stderr)
                return 0
            from gateway.logs import configure_logging, get_logger

            configure_logging(cfg.log.level, cfg.log.format)
            results = asyncio.run(replay(conn, letters, cfg, timeout=args.timeout,
                                         log=get_logger("gateway.deadletters"), report=_report))
        finally:
            conn.close()
    finally:
        lock.release()
    return _summary(results)


def _selected(conn: sqlite3.Connection, args: argparse.Namespace) -> list[DeadLetter] | None:
    """The letters asked for; None (after saying why) when an ``--id`` does not exist."""
    letters = read(conn, sink=args.sink, ids=args.ids)
    if args.ids:
        missing = sorted(set(args.ids) - {d.id for d in letters})
        if missing:
            where = f" of sink {args.sink!r}" if args.sink else ""
            print(f"{PROG}: no dead letter{where} with id {', '.join(map(str, missing))}", file=sys.stderr)
            return None
    return letters


def _dry_run(cfg: GatewayConfig, path: Path, args: argparse.Namespace) -> int:
    try:
        conn = connect(path)
    except SpoolNotFoundError as exc:
        print(f"{PROG}: {exc} (has the gateway run with this config yet?)", file=sys.stderr)
        return 1
    try:
        letters = _selected(conn, args)
    finally:
        conn.close()
    if letters is None:
        return 2
    if not letters:
        print(f"{PROG}: nothing to replay", file=sys.stderr)
    for d in letters:
        kcfg = cfg.sinks.get(d.sink)
        what = f"dead letter {d.id} ({len(d.samples)} samples of {d.source})"
        if kcfg is None:
            print(f"{what}: would be skipped: no sink {d.sink!r} in {cfg.path}")
        elif not d.readable:
            print(f"{what}: would be skipped: its samples could not be kept")
        else:
            print(f"{what}: would be sent to {d.sink} ({kcfg.type})")
    return 0


def _report(r: Replayed) -> None:
    d = r.letter
    what = f"dead letter {d.id} ({len(d.samples)} samples of {d.source}) -> {d.sink}"
    if r.outcome == "delivered":
        print(f"{what}: delivered, removed")
    elif r.outcome == "refused":
        print(f"{what}: refused again, kept {r.kept} samples: {one_line(r.error, ERROR_WIDTH)}")
    else:
        print(f"{what}: {'not delivered' if r.outcome == 'failed' else 'skipped'}, kept: "
              f"{one_line(r.error, ERROR_WIDTH)}")


def _summary(results: Sequence[Replayed]) -> int:
    delivered = sum(r.outcome == "delivered" for r in results)
    kept = len(results) - delivered
    print(f"{delivered} of {len(results)} dead letters delivered and removed" + (f"; {kept} kept" if kept else ""))
    return 0 if kept == 0 else 1


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        pid = ""
    return f"pid {pid}" if pid.isdigit() else "another process"


# -- purge --------------------------------------------------------------------------------------------

def purge_letters(args: argparse.Namespace) -> int:
    before_ns = None
    if args.before is not None:
        before_ns = parse_when(args.before, time.time_ns())
        if before_ns is None:
            return _usage(f"--before: expected an ISO 8601 time or a duration (7d), not {args.before!r}")
    cfg = load_or_report(args.config)
    if cfg is None:
        return 2
    try:
        conn = connect(spool_path(cfg), write=True)
    except SpoolNotFoundError as exc:
        print(f"{PROG}: {exc} (has the gateway run with this config yet?)", file=sys.stderr)
        return 1
    try:
        n = purge(conn, args.sink, before_ns)
    except sqlite3.Error as exc:
        print(f"{PROG}: cannot purge: {exc}", file=sys.stderr)
        return 1
    finally:
        conn.close()
    since = f" dead-lettered before {format_time(before_ns)}" if before_ns is not None else ""
    print(f"purged {n} dead letters of sink {args.sink}{since}")
    return 0


def _usage(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return 2
