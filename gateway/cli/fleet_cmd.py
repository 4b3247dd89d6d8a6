"""``edge-gateway fleet plan|check|status``: shard a plant over several gateways, and watch them.

``plan`` and ``check`` need no protocol library. ``status`` reads the gateways' retained status messages
through the MQTT sink plug-in (``SinkPlugin.read_status``), so the core never imports paho.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from gateway.cli.common import load_or_report
from gateway.config.site import GATEWAY_ID_PATTERN
from gateway.errors import GatewayError
from gateway.fleet.message import StatusQuery
from gateway.fleet.plan import Plan, PlanError, gateway_ids, make_plan, units_of
from gateway.fleet.shards import Manifest, check_configs, read_manifest, write_plan
from gateway.plugins import PluginError, missing_requirement, sink_plugin

PROG = "edge-gateway fleet"
DEFAULT_DATA_DIR = "/var/lib/edge-gateway/{id}"


def register(sub: Any) -> None:
    p = sub.add_parser("fleet", help="shard a plant over several gateways (plan, check) and watch them (status)",
                       description="A fleet of gateways: each collects a shard of one plant's devices, all "
                       "publishing into the plant's broker (cluster). See docs/fleet.md.")
    fleet = p.add_subparsers(dest="fleet_command", metavar="SUBCOMMAND")
    fleet.required = True

    plan = fleet.add_parser(
        "plan", help="split a plant config into N gateway configs",
        description="Split a plant config (its sources and devices) into N gateway configs balanced on "
        "configured tags and poll load, each with its gateway id, MQTT client ids, status topic and data "
        "directory, plus plan.json. Re-planning into a directory that holds a plan keeps every device where "
        "it was unless moving it is needed for the balance, and says how many moved. Exit 0, or 2 with one "
        "line saying why not.")
    plan.add_argument("plant", metavar="PLANT.yaml", help="the whole plant as one gateway config")
    plan.add_argument("-n", "--gateways", type=int, required=True, metavar="N", help="how many gateways")
    plan.add_argument("--by", choices=["line", "device"], default="line",
                      help="what moves as a whole: a line (sources naming the same `line:`, or one source), "
                      "or a device (a serial line's devices stay together); default line")
    plan.add_argument("-o", "--output", metavar="DIR",
                      help="where the configs and plan.json go (default: PLANT's directory / <plant>-fleet)")
    plan.add_argument("--previous", metavar="DIR",
                      help="the plan to stay close to (default: the one already in the output directory)")
    plan.add_argument("--fresh", action="store_true", help="ignore any previous plan")
    plan.add_argument("--id-prefix", default="gw", metavar="PREFIX", help="gateway ids PREFIX01, PREFIX02, ...")
    plan.add_argument("--data-dir", default=DEFAULT_DATA_DIR, metavar="TEMPLATE",
                      help=f"each gateway's data_dir, {{id}} its id (default {DEFAULT_DATA_DIR})")
    plan.set_defaults(handler=run_plan)

    check = fleet.add_parser(
        "check", help="check that no device is in two gateway configs",
        description="Load gateway configs (a plan's directory, or files) and check that each validates and "
                    "that no device is collected by two of them. Exit 0, or 2 with one line saying why not.")
    check.add_argument("paths", nargs="+", metavar="DIR|FILE", help="a plan directory or gateway configs")
    check.set_defaults(handler=run_check)

    status = fleet.add_parser(
        "status", help="the fleet's gateways from their retained status messages",
        description="Read every gateway's retained status message (…/gateway/<id>/status) from the broker and "
        "print the fleet: state, host, version, uptime, devices ok/bad, backlog, last delivery, config hash. "
        "Flags: offline (last will or stopped), silent (no status for 3 intervals), behind (backlog older "
        "than --behind), config (hash other than the plan's), missing (planned, never reported), not in plan, "
        "unreadable. Exit 0 when nothing is flagged, 1 when something is, 2 when the broker cannot be read.")
    status.add_argument("--broker", metavar="HOST:PORT", help="default: the plan's brokers, the first that answers")
    status.add_argument("--plan", metavar="DIR", help="a plan directory (plan.json): expected gateways, config hashes")
    status.add_argument("--topic-prefix", metavar="PREFIX",
                        help="read statuses from PREFIX/gateway/+/status (default: the plan's status topics, "
                        "without a plan +/+/+/+, the default status topic's enterprise/site/area/line)")
    status.add_argument("--json", action="store_true", help="print JSON instead of the table")
    status.add_argument("--timeout", type=float, default=5.0, metavar="S",
                        help="longest wait for the broker's answer (default 5; with a plan the read ends as soon as "
                        "every planned gateway's status is in)")
    status.add_argument("--behind", type=float, default=60.0, metavar="S",
                        help="flag a gateway whose oldest undelivered sample is older (default 60 s)")
    status.add_argument("--username", help="broker login (the password from $EDGEGW_FLEET_PASSWORD)")
    status.add_argument("--ca-file", metavar="PEM", help="TLS to the broker, trusting this CA")
    status.set_defaults(handler=run_status)


def _fail(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return 2


# --- plan ---------------------------------------------------------------------------------------------


def run_plan(args: argparse.Namespace) -> int:
    if not re.fullmatch(GATEWAY_ID_PATTERN, f"{args.id_prefix}01"):
        return _fail(f"--id-prefix {args.id_prefix!r}: ids are lowercase letters, digits, - and _")
    if "{id}" not in args.data_dir:
        return _fail("--data-dir needs {id}: every gateway keeps its own data directory")
    plant = Path(args.plant)
    cfg = load_or_report(args.plant)
    if cfg is None:
        return 2
    if not cfg.sources:
        return _fail(f"{plant}: the plant config names no source: nothing to split")
    out = Path(args.output) if args.output else plant.with_name(f"{plant.stem}-fleet")
    try:
        previous = None if args.fresh else read_manifest(Path(args.previous) if args.previous else out)
        if args.previous and previous is None:
            return _fail(f"--previous {args.previous}: no plan.json there")
        units = units_of(cfg, args.by)
        plan = make_plan(units, gateway_ids(args.gateways, args.id_prefix), args.by,
                         previous.owner() if previous is not None else None)
        manifest = write_plan(plan, plant, out, data_dir=args.data_dir, previous=previous)
    except PlanError as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"cannot write the plan: {exc}")
    _print_plan(plan, manifest, plant, out, previous)
    return 0


def _print_plan(plan: Plan, manifest: Manifest, plant: Path, out: Path, previous: Manifest | None) -> None:
    total = sum(s.weight for s in plan.shards) or 1.0
    what = "lines" if plan.by == "line" else "devices"
    print(f"{plant} -> {out}/: {len(plan.shards)} gateways, {plan.devices} devices, by {plan.by}")
    rows = [["GATEWAY", "DEVICES", "TAGS", "VALUES/S", "READS/S", "LOAD", "CONFIG", what.upper()]]
    for s in plan.shards:
        units = ", ".join(u.key for u in s.units)
        rows.append([s.id, str(len(s.devices)), str(s.tags), f"{s.values_per_s:,.1f}", f"{s.reads_per_s:,.1f}",
                     f"{100 * s.weight / total:.0f} %", manifest.gateways[s.id]["config_hash"],
                     units if len(units) <= 60 else units[:57] + "..."])
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    right = {1, 2, 3, 4, 5}
    for r in rows:
        print("  ".join(cell.rjust(w) if i in right else cell.ljust(w)
                        for i, (cell, w) in enumerate(zip(r, widths, strict=True))).rstrip())
    if plan.moved is not None and previous is not None:
        before = len(previous.gateways)
        extra = "".join(f", {n} {w}" for n, w in ((plan.new, "new"), (plan.gone, "gone")) if n)
        print(f"moved {plan.moved} of {plan.kept} devices (re-planned from {before} to {len(plan.shards)} "
              f"gateways{extra})")
    print(f"each device is in exactly one shard; every shard validates; plan: {manifest.path}")


# --- check --------------------------------------------------------------------------------------------


def run_check(args: argparse.Namespace) -> int:
    paths: list[Path] = []
    for given in args.paths:
        p = Path(given)
        if p.is_dir():
            manifest = _manifest_or_none(p)
            files = [p / str(gw.get("config")) for gw in manifest.gateways.values()] if manifest else []
            paths += files or sorted(p.glob("*.yaml"))
        else:
            paths.append(p)
    if not paths:
        return _fail(f"no gateway configs in {' '.join(args.paths)}")
    try:
        devices = check_configs(paths)
    except PlanError as exc:
        return _fail(str(exc))
    total = sum(len(d) for d in devices.values())
    print(f"{len(devices)} gateways, {total} devices: each device is in exactly one config")
    return 0


def _manifest_or_none(directory: Path) -> Manifest | None:
    try:
        return read_manifest(directory)
    except PlanError:
        return None


# --- status -------------------------------------------------------------------------------------------

DEFAULT_PREFIX = "+/+/+/+"


def _status_filters(manifest: Manifest) -> list[str]:
    """One wildcard filter per status topic template of the plan (``…/gateway/+/status``), not one subscription
    per gateway: a broker looks retained messages up per filter, and a cluster's lookup is slow (nats-server:
    ~0.4 s each)."""
    out: list[str] = []
    for gid, gw in manifest.gateways.items():
        for topic in gw.get("status_topics", []):
            out.append("/".join("+" if level == gid else level for level in str(topic).split("/")))
    return list(dict.fromkeys(out))



def run_status(args: argparse.Namespace) -> int:
    from gateway.fleet.view import as_json, judge, table

    manifest = None
    if args.plan:
        try:
            manifest = read_manifest(Path(args.plan))
        except PlanError as exc:
            return _fail(str(exc))
        if manifest is None:
            return _fail(f"--plan {args.plan}: no plan.json there")
    brokers = [args.broker] if args.broker else (manifest.brokers() if manifest is not None else [])
    if not brokers:
        return _fail("--broker HOST:PORT is needed (or --plan DIR with a plan whose gateways publish to one)")
    endpoints = []
    for broker in brokers:
        host, sep, port = broker.rpartition(":")
        if not sep or not port.isdigit() or not host:
            return _fail(f"--broker {broker!r}: expected HOST:PORT")
        endpoints.append((host.strip("[]"), int(port)))
    planned_topics = [t for gw in (manifest.gateways.values() if manifest else []) for t in gw.get("status_topics", [])]
    filters = _status_filters(manifest) if manifest is not None else []
    if args.topic_prefix is not None or not filters:
        filters.append(f"{(args.topic_prefix or DEFAULT_PREFIX).rstrip('/')}/gateway/+/status")
    topics = tuple(dict.fromkeys(filters))
    try:
        plugin = sink_plugin("mqtt")
    except PluginError as exc:
        return _fail(f"reading status messages needs the mqtt sink plug-in: {exc}")
    if (missing := missing_requirement(plugin)) is not None:
        return _fail(missing)
    if plugin.read_status is None:
        return _fail("the installed mqtt plug-in cannot read status messages")
    messages: list[tuple[str, bytes]] | None = None
    for host, port in endpoints:  # a plan's cluster: the first node that answers
        query = StatusQuery(host, port, topics, timeout=args.timeout, expect=frozenset(planned_topics),
                            username=args.username, password=os.environ.get("EDGEGW_FLEET_PASSWORD"),
                            ca_file=args.ca_file)
        try:
            messages = plugin.read_status(query)
            break
        except GatewayError as exc:
            error = str(exc)
    if messages is None:
        return _fail(error + (f" (and the plan's {len(endpoints) - 1} other brokers)" if len(endpoints) > 1 else ""))
    now = time.time_ns()
    rows = judge(messages, manifest, now, behind_s=args.behind)
    if args.json:
        print(as_json(rows))
    elif not rows:
        print(f"no gateway status on {', '.join(topics)} at {host}:{port}")
    else:
        print(table(rows, now))
    return 1 if any(r.flags for r in rows) else 0
