"""``edge-gateway browse URL`` (address-space tree, ``--emit-config`` tag draft) and
``edge-gateway pki list|trust`` (the client's trust list for server certificates).

``browse`` walks down from the start node until it reaches the variables, however deep they sit, and
stops after ``--max-nodes`` nodes (``--depth`` limits the levels too, if given). It leaves out the
Server object (diagnostics, which some servers crash on when read in bulk) unless ``--include-server``.
Values print cut to one short line. When the connection drops mid-walk, what was walked so far is still
printed (or drafted) and the command says where it stopped. ``--emit-config`` drafts a whole config:
``nsu=`` NodeIds (the namespace URI survives a server that renumbers its namespaces), snake_case names
from the browse path, and ``writable: false`` on every tag: the integrator opts in per tag.

The descriptors import nothing from asyncua; the commands import the adapter when they run.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.cli.common import add_config_arg, load_or_report
from gateway.plugins import CommandPlugin

_DEFAULT_DATA_DIR = "data"
SERVER_OBJECT = "i=2253"
VALUE_WIDTH = 60


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
    parser.add_argument("--max-nodes", type=int, default=2000, help="stop after this many nodes (default 2000)")
    parser.add_argument("--depth", type=int, default=None, help="also stop this many levels below the start node")
    parser.add_argument("--include-server", action="store_true",
                        help="walk the Server object (diagnostics) too; left out by default")
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


def short(value: Any) -> str:
    """A value as one short line."""
    text = repr(value).replace("\n", " ").replace("\r", " ")
    return text if len(text) <= VALUE_WIDTH else text[:VALUE_WIDTH - 3] + "..."


def tag_name(path: str) -> str:
    """``Line1.Filler.Temperature`` -> ``filler_temperature``-style: the browse names, snake_case, joined."""
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", path.replace(".", "_"))
    return re.sub(r"[^a-z0-9]+", "_", words.lower()).strip("_") or "tag"


@dataclass
class _Walk:
    session: Any
    out: Any
    emit: bool
    max_nodes: int
    depth: int | None
    include_server: bool
    visited: int = 0
    tags: list[dict[str, Any]] = field(default_factory=list)
    names: set[str] = field(default_factory=set)

    async def walk(self, node: Any, level: int, prefix: str) -> None:
        from connectors.opcua import adapter

        if self.visited >= self.max_nodes or (self.depth is not None and level >= self.depth):
            return
        entries = await self.session.browse(node)
        units = {e.name: e.value for e in entries if e.is_property and e.name == "EngineeringUnits"}
        for e in entries:
            if self.visited >= self.max_nodes:
                return
            if e.node_id == SERVER_OBJECT and not self.include_server:
                continue
            self.visited += 1
            path = f"{prefix}.{e.name}" if prefix else e.name
            if not self.emit:
                line = f"{'  ' * level}{e.browse_name}  [{e.node_class}]  {e.node_id}"
                if e.node_class == "Variable":
                    value = short(e.value) if e.status == 0 else adapter.status_name(e.status)
                    line += f"  {e.data_type}  {e.access}  = {value}"
                self.out.write(line + "\n")
            elif e.node_class == "Variable" and not e.is_property:
                self._tag(e, path)
            elif e.is_property and e.name == "EngineeringUnits" and self.tags and isinstance(units.get(e.name), str):
                self.tags[-1]["unit"] = units[e.name]
            if e.node_class in ("Object", "Variable") and not e.is_property:
                await self.walk(e.ref, level + 1, path)

    def _tag(self, e: Any, path: str) -> None:
        uri = self.session.namespace_uri(e.ref.NamespaceIndex)
        nid = e.node_id.split(";", 1)[1] if e.node_id.startswith("ns=") else e.node_id
        name = base = tag_name(path)
        n = 2
        while name in self.names:
            name, n = f"{base}_{n}", n + 1
        self.names.add(name)
        self.tags.append({"name": name, "node": f"nsu={uri};{nid}" if e.ref.NamespaceIndex else e.node_id,
                          "writable": False})


async def _browse(args: argparse.Namespace, out: Any) -> int:
    from connectors.opcua import adapter

    session = await adapter.Session.open(args.url, timeout=args.timeout, security=_security(args))
    walk = _Walk(session, out, args.emit_config, args.max_nodes, args.depth, args.include_server)
    code = 0
    try:
        start = (await session.resolve([args.node]))[0]
        if isinstance(start, adapter.OpcUaError):
            print(f"browse: {args.node}: {start}", file=sys.stderr)
            return 1
        try:
            await walk.walk(start, 0, "")
        except adapter.OpcUaError as exc:  # a dropped link: keep what was walked
            print(f"browse: stopped after {walk.visited} nodes: {exc}", file=sys.stderr)
            code = 1
        if walk.visited >= args.max_nodes:
            print(f"browse: stopped at --max-nodes {args.max_nodes}; start lower (--node) or raise it",
                  file=sys.stderr)
        if args.emit_config:
            import yaml

            # a whole config, like scan's: `validate` and `run` take it as it is
            cfg = {"sources": {"browsed": {"type": "opcua", "devices": {
                args.device: {"endpoint": args.url, "tags": walk.tags}}}},
                "sinks": {"local_store": {"type": "sqlite"}}}
            out.write("# drafted by edge-gateway browse: review names and units, set `writable: true` only\n"
                      "# where writes are intended; add uplinks under `sinks:`.\n")
            out.write(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True, width=200))
        return code
    finally:
        await session.close()


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
    add_config_arg(parser)
    parser.add_argument("--data-dir", default=None,
                        help=f"the gateway's data_dir (holds pki/); default: from -c, else ./{_DEFAULT_DATA_DIR}")
    sub = parser.add_subparsers(dest="pki_cmd", metavar="list|trust")
    sub.required = True
    sub.add_parser("list", help="trusted and rejected server certificates")
    trust = sub.add_parser("trust", help="move a rejected server certificate to the trust list")
    trust.add_argument("cert", help="file name or thumbprint prefix (from `pki list`)")


def pki_folder(args: argparse.Namespace) -> Path | None:
    """The PKI folder: --data-dir, else the config's (an OPC-UA source's own data_dir first), else ./data."""
    if args.data_dir is not None:
        return Path(args.data_dir).expanduser() / "pki"
    if args.config is None:
        return Path(_DEFAULT_DATA_DIR) / "pki"
    cfg = load_or_report(args.config)
    if cfg is None:
        return None
    own = [str(d) for s in cfg.sources.values() if s.type == "opcua" and (d := getattr(s, "data_dir", None))]
    return Path(own[0] if own else cfg.data_dir).expanduser() / "pki"


def _run_pki(args: argparse.Namespace) -> int:
    from connectors.opcua.pki import Pki

    folder = pki_folder(args)
    if folder is None:
        return 2
    pki = Pki(folder)
    print(f"pki folder: {folder}")
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
        print(f"pki trust: {exc.args[0]} (looked in {folder})", file=sys.stderr)
        return 1
    print(f"trusted {dst}")
    return 0


BROWSE_COMMAND = CommandPlugin(
    name="browse",
    requires=("asyncua",),
    extra="opcua",
    help="print an OPC-UA server's address space as a tree; --emit-config drafts tag YAML",
    configure=_configure_browse,
    run=_run_browse,
)

PKI_COMMAND = CommandPlugin(
    name="pki",
    requires=("asyncua",),
    extra="opcua",
    help="OPC-UA certificates: list trusted/rejected server certificates, trust a rejected one",
    configure=_configure_pki,
    run=_run_pki,
)
