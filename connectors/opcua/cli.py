"""``edge-gateway browse URL`` (address-space tree, ``--emit-config`` tag draft) and
``edge-gateway pki list|trust`` (the client's trust list for server certificates).

The descriptors import nothing from asyncua; the commands import the adapter when they run.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from gateway.plugins import CommandPlugin

_DEFAULT_DATA_DIR = "data"


def _security_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", default="None",
                        choices=["None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"])
    parser.add_argument("--mode", default=None, choices=["Sign", "SignAndEncrypt"],
                        help="message security mode (default SignAndEncrypt with a secure policy)")
    parser.add_argument("--user", default=None)
    parser.add_argument("--password", default=None, help="or the EDGEGW_OPCUA_PASSWORD environment variable")
    parser.add_argument("--data-dir", default=_DEFAULT_DATA_DIR, help="the gateway's data_dir (holds pki/)")


def _configure_browse(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="opc.tcp://host:port/path")
    parser.add_argument("--node", default="i=85", help="start node: NodeId, nsu= form or browse path (default Objects)")
    parser.add_argument("--depth", type=int, default=3, help="levels below the start node (default 3)")
    parser.add_argument("--emit-config", action="store_true", help="print a draft OPC-UA source config (YAML)")
    parser.add_argument("--device", default="device_1", help="device name in the emitted config")
    parser.add_argument("--timeout", type=float, default=5.0)
    _security_args(parser)


def _security(args: argparse.Namespace) -> Any:
    import os

    from connectors.opcua import adapter
    from connectors.opcua.pki import Pki

    password = args.password or os.environ.get("EDGEGW_OPCUA_PASSWORD")
    if args.policy == "None" and args.user is None:
        return None
    return adapter.SecuritySetup(
        policy=args.policy, mode=args.mode or ("None" if args.policy == "None" else "SignAndEncrypt"),
        pki=Pki(Path(args.data_dir) / "pki"), application_uri=adapter.default_application_uri(),
        username=args.user, password=password,
    )


async def _browse(args: argparse.Namespace, out: Any) -> int:
    from connectors.opcua import adapter

    session = await adapter.Session.open(args.url, timeout=args.timeout, security=_security(args))
    try:
        start = (await session.resolve([args.node]))[0]
        if isinstance(start, adapter.OpcUaError):
            print(f"browse: {args.node}: {start}", file=sys.stderr)
            return 1
        tags: list[dict[str, Any]] = []
        await _walk(session, start, args.depth, 0, "", out, tags, emit=args.emit_config)
        if args.emit_config:
            import yaml

            cfg = {"type": "opcua", "devices": {args.device: {"endpoint": args.url, "tags": tags}}}
            out.write("# Draft OPC-UA source config from `edge-gateway browse --emit-config`: review names,\n"
                      "# units and writable flags, then put it under `sources.<name>:` of the gateway config.\n")
            out.write(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True, width=200))
        return 0
    finally:
        await session.close()


async def _walk(session: Any, node: Any, depth: int, level: int, prefix: str, out: Any,
                tags: list[dict[str, Any]], *, emit: bool) -> None:
    from connectors.opcua import adapter

    if depth <= 0:
        return
    entries = await session.browse(node)
    units = {e.name: e.value for e in entries if e.is_property and e.name == "EngineeringUnits"}
    for e in entries:
        path = f"{prefix}.{e.name}" if prefix else e.name
        if not emit:
            line = f"{'  ' * level}{e.browse_name}  [{e.node_class}]  {e.node_id}"
            if e.node_class == "Variable":
                value = e.value if e.status == 0 else adapter.status_name(e.status)
                line += f"  {e.data_type}  {e.access}  = {value!r}"
            out.write(line + "\n")
        elif e.node_class == "Variable" and not e.is_property:
            uri = session.namespace_uri(e.ref.NamespaceIndex)
            nid = e.node_id.split(";", 1)[1] if e.node_id.startswith("ns=") else e.node_id
            tag: dict[str, Any] = {"name": path, "node": f"nsu={uri};{nid}" if e.ref.NamespaceIndex else e.node_id}
            if "w" in e.access:
                tag["writable"] = True
            tags.append(tag)
        elif e.is_property and e.name == "EngineeringUnits" and emit and tags and isinstance(units.get(e.name), str):
            tags[-1]["unit"] = units[e.name]
        if e.node_class in ("Object", "Variable") and not e.is_property and level + 1 < depth:
            await _walk(session, e.ref, depth, level + 1, path, out, tags, emit=emit)


def _run_browse(args: argparse.Namespace) -> int:
    import logging

    from connectors.opcua.adapter import OpcUaError

    logging.getLogger("asyncua").setLevel(logging.ERROR)
    try:
        return asyncio.run(_browse(args, sys.stdout))
    except OpcUaError as exc:
        print(f"browse: {exc}", file=sys.stderr)
        return 1


def _configure_pki(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=_DEFAULT_DATA_DIR, help="the gateway's data_dir (holds pki/)")
    sub = parser.add_subparsers(dest="pki_cmd", metavar="list|trust")
    sub.required = True
    sub.add_parser("list", help="trusted and rejected server certificates")
    trust = sub.add_parser("trust", help="move a rejected server certificate to the trust list")
    trust.add_argument("cert", help="file name or thumbprint prefix (from `pki list`)")


def _run_pki(args: argparse.Namespace) -> int:
    from connectors.opcua.pki import Pki

    pki = Pki(Path(args.data_dir) / "pki")
    if args.pki_cmd == "list":
        for which in ("trusted", "rejected"):
            certs = pki.list(which) if (pki.root / which).is_dir() else []
            print(f"{which}: {len(certs)}")
            for c in certs:
                print(f"  {c.thumbprint[:16]}  {c.subject}  {' '.join(c.uris)}  valid to {c.not_after}  {c.path.name}")
        if pki.cert_path.exists():
            own = pki.list_own()
            print(f"own: {own.thumbprint[:16]}  {own.subject}  {' '.join(own.uris)}  ({pki.cert_path})")
        return 0
    try:
        dst = pki.trust(args.cert)
    except LookupError as exc:
        print(f"pki trust: {exc.args[0]}", file=sys.stderr)
        return 1
    print(f"trusted {dst}")
    return 0


BROWSE_COMMAND = CommandPlugin(
    name="browse",
    help="print an OPC-UA server's address space as a tree; --emit-config drafts tag YAML",
    configure=_configure_browse,
    run=_run_browse,
)

PKI_COMMAND = CommandPlugin(
    name="pki",
    help="OPC-UA certificates: list trusted/rejected server certificates, trust a rejected one",
    configure=_configure_pki,
    run=_run_pki,
)
