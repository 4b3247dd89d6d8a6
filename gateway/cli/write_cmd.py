"""``edge-gateway write -c FILE SOURCE.DEVICE TAG VALUE``: one write to a device, through the source's
own ``write`` (so type, byte order and scale/offset are exactly those of collection)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from gateway.cli.common import add_config_arg, load_or_report
from gateway.config.base import TagBase
from gateway.contracts import WritableSource
from gateway.errors import DeviceNotConnected, WriteError
from gateway.logs import configure_logging, get_logger
from gateway.metrics import Metrics
from gateway.model import Batch, Value
from gateway.plugins import BuildContext, source_plugin
from gateway.writes import WriteKind, coerce, parse_cli, shown

CONNECT_DEADLINE = 15.0  # s: how long the command waits for a device that does not answer yet
STOP_WAIT = 5.0  # s: how long the command lets the source wind down after the write


def register(sub: Any) -> None:
    p = sub.add_parser("write", help="write one value to a writable tag",
                       description="Write VALUE (engineering units) to TAG of SOURCE.DEVICE. Only tags marked "
                       "`writable: true` accept writes; min/max limits apply. The value is checked against the tag's "
                       "type (for OPC-UA, the node's) before anything reaches the device; every write, executed or "
                       "refused, is audit-logged (logger gateway.audit).")
    add_config_arg(p, required=True)
    p.add_argument("--timeout", type=float, default=CONNECT_DEADLINE, metavar="SECONDS",
                   help=f"how long to wait for the device to connect (default {CONNECT_DEADLINE:g})")
    p.add_argument("target", metavar="SOURCE.DEVICE")
    p.add_argument("tag", metavar="TAG")
    p.add_argument("value", metavar="VALUE", help="what the tag accepts: true/false/1/0 for a bool, a number, "
                   "text, or a JSON array such as [1,2,3] for an array node")
    p.set_defaults(handler=write)


def write(args: argparse.Namespace) -> int:
    cfg = load_or_report(args.config)
    if cfg is None:
        return 2
    configure_logging(cfg.log.level, cfg.log.format)
    audit = get_logger("gateway.audit", via="cli")
    target = f"{args.target}.{args.tag}"

    def refuse(message: str, code: int) -> int:
        audit.warning("write refused", target=target, value=shown(args.value), error=message)
        print(f"edge-gateway write: {message}", file=sys.stderr)
        return code

    source_name, _, device = args.target.partition(".")
    if not device:
        return refuse(f"expected SOURCE.DEVICE, got {args.target!r}", 2)
    if not args.timeout > 0:
        return refuse(f"--timeout must be positive, got {args.timeout:g}", 2)
    scfg = cfg.sources.get(source_name)
    if scfg is None:
        return refuse(f"no source {source_name!r} in {cfg.path}; sources: {', '.join(sorted(cfg.sources)) or 'none'}",
                      2)
    tags = {(d, t.name): t for d, t in scfg.iter_tags()}
    tag = tags.get((device, args.tag))
    if tag is None:
        return refuse(f"no tag {args.tag!r} on {source_name}.{device}", 2)
    if not tag.writable:
        return refuse(f"{target} is not writable (set `writable: true` on the tag)", 2)
    data_dir = str(Path(cfg.data_dir).expanduser())
    try:
        value = asyncio.run(_write(data_dir, cfg, source_name, device, tag, args.value, args.timeout))
    except WriteError as exc:
        return refuse(f"{target}: {exc}", 1)
    audit.info("write executed", target=target, value=shown(value))
    print(f"{target} <- {shown(value)}")
    return 0


async def _discard(batch: Batch) -> None:
    return None


async def _write(data_dir: str, cfg: Any, source_name: str, device: str, tag: TagBase, text: str,
                 timeout: float) -> Value:
    """Run the source (an OPC-UA device connects in its run loop), write once, stop it; returns the value."""
    scfg = cfg.sources[source_name]
    ctx = BuildContext(metrics=Metrics(), site=cfg.site, data_dir=data_dir, log=get_logger("gateway.write"))
    source = source_plugin(scfg.type).factory(source_name, scfg, ctx)
    if not isinstance(source, WritableSource):
        raise WriteError(f"source type {scfg.type!r} does not support writes")
    runner = asyncio.create_task(source.run(_discard), name=f"write:{source_name}")
    try:
        kind = await _until_connected(source, device, tag.name, runner, timeout)
        value = parse_cli(kind, text)
        raw = coerce(tag, kind, value)
        await source.write(device, tag.name, raw)
        return value
    finally:
        runner.cancel()
        # bounded: the write is done (or refused); a source slow to wind down must not hold the command
        await asyncio.wait({runner}, timeout=STOP_WAIT)
        close = getattr(source, "close", None)
        if close is not None:
            await close()


async def _until_connected(source: WritableSource, device: str, tag: str, runner: asyncio.Task[None],
                           timeout: float) -> WriteKind:
    """What the tag accepts, asked until the device answers or ``timeout`` passes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    why = ""  # the source's last reason (connection refused, certificate not trusted, ...)
    while True:
        if runner.done() and not runner.cancelled() and runner.exception() is not None:
            raise WriteError(f"the source stopped: {runner.exception()}")
        try:
            return await asyncio.wait_for(source.write_kind(device, tag), max(deadline - loop.time(), 0.0))
        except (DeviceNotConnected, TimeoutError) as exc:
            if isinstance(exc, DeviceNotConnected):
                why = f"; {exc}"
            if loop.time() >= deadline:
                raise DeviceNotConnected(f"device {device!r} did not connect within {timeout:g}s "
                                         f"(--timeout){why}") from None
        await asyncio.sleep(0.05)  # a source that refuses at once must not spin the loop
