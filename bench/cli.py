"""``edge-gateway bench SCENARIO``: run benchmark scenarios and print a Markdown table."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

from bench.result import HEADER, BenchResult, machine, markdown_row
from bench.scenarios import SCENARIOS
from gateway.plugins import CommandPlugin


def configure(p: argparse.ArgumentParser) -> None:
    names = ", ".join(SCENARIOS)
    p.description = f"Scenarios: {names}; 'all' runs every engine scenario."
    p.add_argument("scenario", nargs="+", metavar="SCENARIO", help=f"one of: {names}, all")
    p.add_argument("--samples", type=int, help="samples per run (spool scenarios)")
    p.add_argument("--batch", type=int, help="samples per batch (spool scenarios; default 1000)")
    p.add_argument("--duration", type=float, help="seconds of steady load (pipeline scenarios)")
    p.add_argument("--rate", type=int, help="offered samples/s (pipeline scenarios)")
    p.add_argument("--param", "-p", action="append", default=[], metavar="KEY=VALUE",
                   help="any other scenario parameter, e.g. -p outage=10 (numbers are parsed)")
    p.add_argument("--output", "-o", metavar="FILE", help="also append the table to FILE (Markdown)")


def bench(args: argparse.Namespace) -> int:
    wanted = list(SCENARIOS) if args.scenario == ["all"] else args.scenario
    unknown = [s for s in wanted if s not in SCENARIOS]
    if unknown:
        print(f"edge-gateway bench: unknown scenario {unknown[0]!r}; known: {', '.join(SCENARIOS)}", file=sys.stderr)
        return 2
    given = (("samples", args.samples), ("batch", args.batch), ("duration", args.duration), ("rate", args.rate))
    params: dict[str, Any] = {k: v for k, v in given if v is not None}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"edge-gateway bench: --param wants KEY=VALUE, got {item!r}", file=sys.stderr)
            return 2
        try:
            params[key] = json.loads(value)
        except ValueError:
            params[key] = value
    rows = []
    where = f"Machine: {machine()}."
    print(where + "\n\n" + HEADER, flush=True)
    for name in wanted:
        result = run_in_child(name, params)
        row = markdown_row(result)
        rows.append(row)
        print(row, flush=True)
    workloads = "\n".join(f"- `{name}`: {SCENARIOS[name].description}" for name in wanted)
    print(f"\nWorkloads:\n{workloads}", flush=True)
    if args.output:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        with open(args.output, "a", encoding="utf-8") as f:
            f.write(f"\n### {stamp}: `edge-gateway bench {' '.join(args.scenario)}`"
                    f"{' ' + json.dumps(params) if params else ''}\n\n{where}\n\n{HEADER}\n" + "\n".join(rows)
                    + f"\n\nWorkloads:\n{workloads}\n")
    return 0


def run_in_child(name: str, params: dict[str, Any]) -> BenchResult:
    """Each scenario in a fresh interpreter, so CPU and peak RSS are that scenario's alone."""
    env = dict(os.environ, PYTHONHASHSEED="0")
    proc = subprocess.run(
        [sys.executable, "-m", "bench.worker", name, json.dumps(params)],
        capture_output=True, text=True, env=env, check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"edge-gateway bench: scenario {name} failed:\n{proc.stderr.strip()}")
    return BenchResult.from_json(proc.stdout.strip().splitlines()[-1])


# The harness drives every protocol (simulators, brokers, the store), so it needs the bench extra.
BENCH_COMMAND = CommandPlugin(
    name="bench", help="run a benchmark scenario and print a Markdown table", configure=configure, run=bench,
    requires=("pymodbus", "asyncua", "paho", "influxdb_client", "google.protobuf"), extra="bench",
)
