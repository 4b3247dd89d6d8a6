"""``edge-gateway write -c FILE SOURCE.DEVICE TAG VALUE``: one write to a device, through the source's
own ``write`` (so type, byte order and scale/offset are exactly those of collection)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from gateway.cli.common import add_config_arg, load_or_report
from gateway.contracts import WritableSource
from gateway.errors import WriteError
from gateway.logs import configure_logging, get_logger
from gateway.metrics import Metrics
from gateway.model import Value
from gateway.plugins import BuildContext, source_plugin
from gateway.writes import to_raw


def register(sub: Any) -> None:
    p = sub.add_parser("write", help="write one value to a writable tag",
                       description="Write VALUE (engineering units) to TAG of SOURCE.DEVICE. Only tags marked "
                       "`writable: true` accept writes; min/max limits apply.")
    add_config_arg(p, required=True)
    p.add_argument("target", metavar="SOURCE.DEVICE")
    p.add_argument("tag", metavar="TAG")
    p.add_argument("value", metavar="VALUE", help="true/false, a number, or text")
    p.set_defaults(handler=write)


def parse_value(text: str) -> Value:
    low = text.strip().lower()
    if low in ("true", "on"):
        return True
    if low in ("false", "off"):
        return False
    try:
        return int(text, 0)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def write(args: argparse.Namespace) -> int:
    cfg = load_or_report(args.config)
    if cfg is None:
        return 2
    source_name, _, device = args.target.partition(".")
    if not device:
        print(f"edge-gateway write: expected SOURCE.DEVICE, got {args.target!r}", file=sys.stderr)
        return 2
    scfg = cfg.sources.get(source_name)
    if scfg is None:
        print(f"edge-gateway write: no source {source_name!r} in {cfg.path}; sources: "
              f"{', '.join(sorted(cfg.sources)) or 'none'}", file=sys.stderr)
        return 2
    tags = {(d, t.name): t for d, t in scfg.iter_tags()}
    tag = tags.get((device, args.tag))
    if tag is None:
        print(f"edge-gateway write: no tag {args.tag!r} on {source_name}.{device}", file=sys.stderr)
        return 2
    if not tag.writable:
        print(f"edge-gateway write: {source_name}.{device}.{args.tag} is not writable "
              "(set `writable: true` on the tag)", file=sys.stderr)
        return 2
    configure_logging(cfg.log.level, cfg.log.format)
    value = parse_value(args.value)
    try:
        raw = to_raw(tag, value)
        asyncio.run(_write(str(Path(cfg.data_dir).expanduser()), cfg, source_name, device, args.tag, raw))
    except WriteError as exc:
        print(f"edge-gateway write: {source_name}.{device}.{args.tag}: {exc}", file=sys.stderr)
        return 1
    print(f"{source_name}.{device}.{args.tag} <- {value!r}")
    return 0


async def _write(data_dir: str, cfg: Any, source_name: str, device: str, tag: str, value: Value) -> None:
    scfg = cfg.sources[source_name]
    ctx = BuildContext(metrics=Metrics(), site=cfg.site, data_dir=data_dir,
                       log=get_logger("gateway.write"))
    source = source_plugin(scfg.type).factory(source_name, scfg, ctx)
    if not isinstance(source, WritableSource):
        raise WriteError(f"source type {scfg.type!r} does not support writes")
    await source.write(device, tag, value)
