"""An asyncua server serving the machines of an ``OpcUaSimConfig``, with injectable faults.

Node ids are string ids in the simulator's namespace: machine ``filler_1`` is ``ns=N;s=filler_1`` and its
variable ``Temperature`` is ``ns=N;s=filler_1.Temperature``; browse names are the plain names, so
``/Objects/N:Line1/N:filler_1/N:Temperature`` works too.

asyncua advertises operation limits but does not enforce them; the simulator records what clients
actually ask (``item_calls``: the size of every CreateMonitoredItems call) so tests can check a client
stays within them.
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.monitored_item_service import MonitoredItemValues
from asyncua.server.server import Server
from asyncua.ua.object_ids import ObjectIds

from gateway.generators import Constant, Generator, derive_seed
from simulators.opcua.config import OpcUaSimConfig, SimVariable, VarClock, VarText

_VT = {name: getattr(ua.VariantType, name) for name in (
    "Boolean", "SByte", "Byte", "Int16", "UInt16", "Int32", "UInt32", "Int64", "UInt64",
    "Float", "Double", "String", "DateTime",
)}
_INTS = {
    "SByte": (-(2**7), 2**7 - 1), "Byte": (0, 2**8 - 1), "Int16": (-(2**15), 2**15 - 1), "UInt16": (0, 2**16 - 1),
    "Int32": (-(2**31), 2**31 - 1), "UInt32": (0, 2**32 - 1), "Int64": (-(2**63), 2**63 - 1),
    "UInt64": (0, 2**64 - 1),
}
_POLICY_TYPES = {
    ("Basic256Sha256", "Sign"): ua.SecurityPolicyType.Basic256Sha256_Sign,
    ("Basic256Sha256", "SignAndEncrypt"): ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    ("Aes128_Sha256_RsaOaep", "Sign"): ua.SecurityPolicyType.Aes128Sha256RsaOaep_Sign,
    ("Aes128_Sha256_RsaOaep", "SignAndEncrypt"): ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt,
    ("Aes256_Sha256_RsaPss", "Sign"): ua.SecurityPolicyType.Aes256Sha256RsaPss_Sign,
    ("Aes256_Sha256_RsaPss", "SignAndEncrypt"): ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
}


_IMMUTABLE = frozenset({bool, int, float, str, datetime, type(None)})
_deep_copying_set = MonitoredItemValues.set_current_datavalue


def _set_current_datavalue(self: MonitoredItemValues, cur_val: ua.DataValue) -> None:
    """asyncua deep-copies every value a monitored item sees, in case the writer mutates it later: ~60 % of
    the simulator's CPU for a tick of thousands of Doubles (its publishing then runs hundreds of ms behind
    the values' timestamps). A scalar of an immutable type in a DataValue nobody mutates (the simulator
    builds a new one per write, as the Write service does) is kept by reference; anything else is copied."""
    var = cur_val.Value
    if var is not None and type(var.Value) in _IMMUTABLE and not var.is_array:
        self.old_dvalue = self.current_dvalue
        self.current_dvalue = cur_val
    else:
        _deep_copying_set(self, cur_val)


MonitoredItemValues.set_current_datavalue = _set_current_datavalue  # type: ignore[method-assign]


def _nid(identifier: str, ns: int) -> ua.NodeId:
    return ua.NodeId(identifier, ns)  # type: ignore[arg-type]  # the stubs want ua.String/ua.Int16


def _dv(value: Any, vt: ua.VariantType, now: datetime) -> ua.DataValue:
    return ua.DataValue(ua.Variant(value, vt), SourceTimestamp=now, ServerTimestamp=now)  # type: ignore[arg-type]


def convert(value: Any, type_name: str) -> Any:
    """A generator's output as the variable's type (ints rounded and clipped to the type's range)."""
    if type_name == "Boolean":
        return bool(value)
    if type_name in _INTS:
        lo, hi = _INTS[type_name]
        whole = value if isinstance(value, int) else round(float(value))  # big ints must not pass through float
        return min(max(int(whole), lo), hi)
    if type_name in ("Float", "Double"):
        return float(value)
    if type_name == "String":
        return str(value)
    return datetime.now(UTC)


class _Users:
    """Username/password and X509 identity check for the simulator (anonymous is refused when either is
    configured). ``certificate`` is the X509 token's DER, or the channel's client certificate otherwise."""

    def __init__(self, users: dict[str, str], certificates: set[bytes] | None = None) -> None:
        self._users = users
        self._certificates = certificates or set()

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        if username is None:
            if certificate is not None and bytes(certificate) in self._certificates:
                return User(role=UserRole.User, name="x509")
            return None if self._users or self._certificates else User(role=UserRole.User)
        if self._users.get(username) == password:
            return User(role=UserRole.User, name=username)
        return None


@dataclass
class _Var:
    node: ua.NodeId
    cfg: SimVariable
    vt: ua.VariantType
    gen: Generator | None


@dataclass
class Stats:
    item_calls: list[int] = field(default_factory=list)
    read_calls: list[int] = field(default_factory=list)
    starts: int = 0


class OpcUaSimulator:
    """``generate=False``: no update loop and no scheduled faults; the owner (a line scenario, a replay)
    sets every value through ``publish``."""

    def __init__(self, cfg: OpcUaSimConfig, *, host: str = "127.0.0.1", port: int = 4840,
                 generate: bool = True) -> None:
        self.cfg = cfg
        self.generate = generate
        self.host = host
        self.port = port
        self.stats = Stats()
        self.server: Server | None = None
        self.ns = 0
        self._vars: list[_Var] = []
        self._by_key: dict[str, _Var] = {}
        self._removed: set[str] = set()
        self._t0 = time.monotonic()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def url(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}{self.cfg.path}"

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        await self._start_server()
        if not self.generate:
            return
        self._tasks.append(asyncio.create_task(self._update_loop(), name="opcua-sim-update"))
        for fault in self.cfg.faults:
            self._tasks.append(asyncio.create_task(self._fault_at(fault), name=f"opcua-sim-{fault.kind}"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self._stop_server()

    async def _start_server(self) -> None:
        cfg = self.cfg
        certs = {await asyncio.to_thread(Path(p).read_bytes) for p in cfg.security.user_certificates}
        users = _Users(cfg.security.users, certs) if cfg.security.users or certs else None
        server = Server(user_manager=users)  # type: ignore[arg-type]  # duck-typed user manager
        await server.init()
        server.set_endpoint(self.url.replace(self.host, self.host, 1))
        server.set_server_name("edge-gateway OPC-UA simulator")
        await self._security(server)
        for uri in cfg.extra_namespaces:
            await server.register_namespace(uri)
        self.ns = await server.register_namespace(cfg.namespace)
        await self._limits(server)
        await self._build(server)
        self._count_calls(server)
        await server.start()
        self.server = server
        self.stats.starts += 1

    async def _stop_server(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            await server.stop()

    async def _security(self, server: Server) -> None:
        sec = self.cfg.security
        secure = [p for p in sec.policies if p != "None"]
        types = [ua.SecurityPolicyType.NoSecurity] if "None" in sec.policies else []
        types += [_POLICY_TYPES[(p, m)] for p in secure for m in sec.modes]
        if secure:
            from asyncua.crypto.cert_gen import setup_self_signed_certificate
            from cryptography.x509.oid import ExtendedKeyUsageOID

            pki = Path(sec.pki_dir)
            await asyncio.to_thread(pki.mkdir, parents=True, exist_ok=True)
            key, cert = pki / "server_key.pem", pki / "server_cert.der"
            await setup_self_signed_certificate(
                key, cert, sec.certificate_uri or sec.application_uri, socket.gethostname(),
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
                {"commonName": "edge-gateway-simulator", "organizationName": "edge-gateway"},
            )
            await server.set_application_uri(sec.application_uri)
            await server.load_certificate(str(cert))
            await server.load_private_key(str(key))
        server.set_security_policy(types)
        tokens: list[type] = [ua.UserNameIdentityToken] if sec.users else []
        tokens += [ua.X509IdentityToken] if sec.user_certificates else []
        if tokens:
            server.set_identity_tokens(tokens)

    async def _limits(self, server: Server) -> None:
        lim = self.cfg.limits
        for oid, value in (
            (ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead, lim.max_nodes_per_read),
            (ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall,
             lim.max_monitored_items_per_call),
        ):
            node = server.get_node(ua.NodeId(oid))  # type: ignore[arg-type]
            await node.write_value(ua.Variant(value, ua.VariantType.UInt32))

    def _count_calls(self, server: Server) -> None:
        svc = server.iserver.subscription_service
        create = svc.create_monitored_items
        stats = self.stats

        async def counted(params: ua.CreateMonitoredItemsParameters) -> list[ua.MonitoredItemCreateResult]:
            stats.item_calls.append(len(params.ItemsToCreate))
            return await create(params)

        svc.create_monitored_items = counted  # type: ignore[method-assign]
        attrs = server.iserver.attribute_service
        read = attrs.read

        def counted_read(params: ua.ReadParameters) -> list[ua.DataValue]:
            stats.read_calls.append(len(params.NodesToRead))
            return read(params)

        attrs.read = counted_read  # type: ignore[method-assign]

    async def _build(self, server: Server) -> None:
        ns = self.ns
        folders: dict[tuple[str, ...], Any] = {}
        self._vars = []
        now = 0.0
        for device, machine in self.cfg.devices.items():
            parent = server.nodes.objects
            for i in range(len(machine.path)):
                key = tuple(machine.path[: i + 1])
                if key not in folders:
                    folders[key] = await parent.add_folder(_nid(".".join(key), ns), f"{ns}:{key[-1]}")
                parent = folders[key]
            obj = await parent.add_object(_nid(device, ns), f"{ns}:{device}")
            for v in machine.variables:
                key_s = f"{device}.{v.name}"
                if key_s in self._removed:
                    continue
                gen = None if isinstance(v, VarText | VarClock) else v.build(derive_seed(self.cfg.seed, device, v.name))
                vt = _VT[v.type]
                initial = (v.text if isinstance(v, VarText) else convert(gen.value(now) if gen else 0, v.type))
                var = await obj.add_variable(_nid(key_s, ns), f"{ns}:{v.name}", ua.Variant(initial, vt))
                if v.writable:
                    await var.set_writable()
                if v.unit is not None:
                    eu = ua.EUInformation(NamespaceUri="http://www.opcfoundation.org/UA/units/un/cefact",
                                          UnitId=-1, DisplayName=ua.LocalizedText(v.unit),
                                          Description=ua.LocalizedText(v.unit))
                    await var.add_property(ns, "EngineeringUnits", eu)
                if v.eu_range is not None:
                    await var.add_property(ns, "EURange", ua.Range(Low=v.eu_range[0], High=v.eu_range[1]))
                self._vars.append(_Var(var.nodeid, v, vt, gen))
        self._by_key = {str(v.node.Identifier): v for v in self._vars}

    # --- values -------------------------------------------------------------------------------------

    async def _update_loop(self) -> None:
        interval = self.cfg.update_interval
        loop = asyncio.get_running_loop()
        start = loop.time()
        tick = 0
        while True:
            tick += 1
            await asyncio.sleep(max(start + tick * interval - loop.time(), 0.0))
            await self.update(tick * interval)

    async def update(self, t: float) -> None:
        """Write every generated (non-writable) variable's value at generator time ``t``."""
        server = self.server
        if server is None:
            return
        now = datetime.now(UTC)
        write = server.iserver.write_attribute_value
        for i, var in enumerate(self._vars):
            if var.cfg.writable or (var.gen is None and not isinstance(var.cfg, VarClock)):
                continue
            if i % 100 == 99:
                # Thousands of writes take a while: stamp each value when it really changed, and let the
                # publish loop send what has changed so far (a real server publishes while it updates).
                now = datetime.now(UTC)
                await asyncio.sleep(0)
            value = now if var.gen is None else convert(var.gen.value(t), var.cfg.type)
            await write(var.node, _dv(value, var.vt, now))

    async def publish(self, updates: list[tuple[str, Any, int]]) -> None:
        """Write ``(device.variable, value, status code)`` triples, stamped now (the owner's values)."""
        server = self.server
        if server is None:
            return
        now = datetime.now(UTC)
        write = server.iserver.write_attribute_value
        for key, value, status in updates:
            var = self._by_key.get(key)
            if var is None:
                continue
            held = value if var.cfg.type == "DateTime" else convert(value, var.cfg.type)
            dv = ua.DataValue(ua.Variant(held, var.vt), StatusCode=ua.StatusCode(status),  # type: ignore[arg-type]
                              SourceTimestamp=now, ServerTimestamp=now)  # type: ignore[arg-type]
            await write(var.node, dv)

    def current(self, key: str) -> Any:
        """The value a variable holds now (after a client's write, say); None while the server is down."""
        var = self._by_key.get(key)
        if self.server is None or var is None:
            return None
        return self.server.iserver.read_attribute_value(var.node).Value.Value  # type: ignore[union-attr]

    async def pause(self) -> None:
        """Stop the server (sessions drop, the port closes) until ``resume``: a restarting PLC."""
        await self._stop_server()

    async def resume(self) -> None:
        await self._start_server()

    async def set_value(self, device: str, variable: str, value: Any) -> None:
        """Set one variable and hold it there (its generator is replaced by the value, like a setpoint)."""
        assert self.server is not None
        for var in self._vars:
            if var.node.Identifier == f"{device}.{variable}":
                now = datetime.now(UTC)
                held = str(value) if var.cfg.type == "String" else convert(value, var.cfg.type)
                if var.gen is not None and not isinstance(held, str):
                    var.gen = Constant(held)
                dv = _dv(held, var.vt, now)
                await self.server.iserver.write_attribute_value(var.node, dv)
                return
        raise KeyError(f"{device}.{variable}")

    async def read_value(self, device: str, variable: str) -> Any:
        assert self.server is not None
        return await self.server.get_node(_nid(f"{device}.{variable}", self.ns)).read_value()

    # --- faults -------------------------------------------------------------------------------------

    def sessions(self) -> int:
        return 0 if self.server is None else len(self.server.iserver._external_sessions)

    def monitored_items(self) -> int:
        if self.server is None:
            return 0
        subs = self.server.iserver.subscription_service.subscriptions.values()
        return sum(len(s.monitored_item_srv._monitored_items) for s in subs)

    def stall(self, seconds: float) -> None:
        """Stop answering for ``seconds``: the event loop is blocked, sockets stay open, like a hung PLC."""
        time.sleep(seconds)

    async def restart(self, down: float) -> None:
        await self._stop_server()
        await asyncio.sleep(down)
        await self._start_server()

    async def remove_node(self, device: str, variable: str) -> None:
        assert self.server is not None
        key = f"{device}.{variable}"
        await self.server.delete_nodes([self.server.get_node(_nid(key, self.ns))])
        self._removed.add(key)
        self._vars = [v for v in self._vars if v.node.Identifier != key]

    async def apply(self, kind: str, args: list[str]) -> str:
        """One control command (stdin of ``simulate opcua``, or a scheduled fault)."""
        if kind == "stall":
            self.stall(float(args[0]) if args else 5.0)
        elif kind == "restart":
            await self.restart(float(args[0]) if args else 2.0)
        elif kind == "remove_node":
            await self.remove_node(args[0], args[1])
        elif kind == "set":
            await self.set_value(args[0], args[1], " ".join(args[2:]))
        elif kind == "stats":
            calls = ",".join(map(str, self.stats.item_calls))
            return (f"stats sessions={self.sessions()} items={self.monitored_items()} "
                    f"starts={self.stats.starts} item_calls={calls}")
        else:
            return f"error unknown command {kind!r}"
        return f"ok {kind}"

    async def _fault_at(self, fault: Any) -> None:
        await asyncio.sleep(max(0.0, self._t0 + fault.at - time.monotonic()))
        if fault.kind == "stall":
            self.stall(fault.duration)
        elif fault.kind == "restart":
            await self.restart(fault.down)
        else:
            await self.remove_node(fault.device, fault.variable)
