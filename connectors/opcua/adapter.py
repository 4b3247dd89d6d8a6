"""The one module that imports asyncua. Everything it raises comes out as ``OpcUaError``.

Subscriptions bypass asyncua's ``Subscription`` class: in handler mode it starts one task per
notification and builds a ``Node`` per item. Here the session's publish loop calls ``_on_publish``
directly with the decoded ``PublishResult``, which turns each ``MonitoredItemNotification`` into a plain
row ``(client_handle, value, status, source_ns, server_ns)`` and hands the whole list on in one call.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.crypto import security_policies
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIdNames, ObjectIds
from asyncua.ua.uaerrors import UaStatusCodeError

from connectors.opcua.pki import Pki, describe
from gateway.writes import FLOAT32_MAX, WriteKind, int_kind, shown

Row = tuple[int, Any, int, int, int]
"""(client handle or index, value, raw StatusCode, source ts ns, server ts ns)."""

BAD_NODE_ID_UNKNOWN = 0x80340000
BAD_NODE_ID_INVALID = 0x80330000
BAD_NO_MATCH = 0x806F0000
BAD_TYPE_MISMATCH = 0x80740000
BAD_COMMUNICATION_ERROR = 0x80050000

_POLICIES: dict[str, type[security_policies.SecurityPolicy]] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128_Sha256_RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256_Sha256_RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
}
_MODES = {"Sign": ua.MessageSecurityMode.Sign, "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt}
_TRIGGERS = {
    "status": ua.DataChangeTrigger.Status,
    "status_value": ua.DataChangeTrigger.StatusValue,
    "status_value_timestamp": ua.DataChangeTrigger.StatusValueTimestamp,
}
_NUMERIC_IDS = frozenset(range(2, 12))  # SByte .. Double in the built-in type ids
# What each integer type holds, from the shared write rule (one table for the range and the message)
_INT_KINDS: dict[ua.VariantType, WriteKind] = {
    vt: int_kind(bits, signed, vt.name) for vt, bits, signed in (
        (ua.VariantType.SByte, 8, True), (ua.VariantType.Byte, 8, False),
        (ua.VariantType.Int16, 16, True), (ua.VariantType.UInt16, 16, False),
        (ua.VariantType.Int32, 32, True), (ua.VariantType.UInt32, 32, False),
        (ua.VariantType.Int64, 64, True), (ua.VariantType.UInt64, 64, False),
    )
}


class OpcUaError(Exception):
    """A failed OPC-UA operation; ``code`` is the StatusCode when the server gave one."""

    def __init__(self, message: str, code: int = BAD_COMMUNICATION_ERROR) -> None:
        super().__init__(message)
        self.code = code


class OpcUaSecurityError(OpcUaError):
    """Untrusted server certificate, URI mismatch, refused identity: retrying will not help by itself."""


def status_name(code: int) -> str:
    if code == 0:
        return "Good"
    try:
        return ua.status_codes.get_name_and_doc(code)[0]
    except Exception:
        return f"0x{code:08X}"


def _wrap(exc: BaseException, what: str) -> OpcUaError:
    if isinstance(exc, OpcUaError):
        return exc
    if isinstance(exc, UaStatusCodeError):
        code = int(exc.code)
        name = status_name(code)
        if name in ("BadUserAccessDenied", "BadIdentityTokenRejected", "BadIdentityTokenInvalid"):
            return OpcUaSecurityError(
                f"{what}: the server refused the identity ({name}): wrong user or password, or an identity "
                "certificate it does not accept?", code)
        if name.startswith("BadCertificate") or name.startswith("BadSecurity"):
            return OpcUaSecurityError(f"{what}: {name}: the server refused our certificate or policy", code)
        return OpcUaError(f"{what}: {name}", code)
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return OpcUaError(f"{what}: timed out", 0x800A0000)  # BadTimeout
    return OpcUaError(f"{what}: {type(exc).__name__}: {exc}")


_TIMESTAMPS = {"source": ua.TimestampsToReturn.Source, "server": ua.TimestampsToReturn.Server,
               "gateway": ua.TimestampsToReturn.Neither, "both": ua.TimestampsToReturn.Both}


def _nid(identifier: int) -> ua.NodeId:
    return ua.NodeId(identifier)  # type: ignore[arg-type]  # the stubs want ua.Int32; a plain int is what works


def _ns(dt: datetime | None) -> int:
    if dt is None:
        return 0
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1_000_000) * 1000


def _plain(v: Any) -> Any:
    """A Variant's Python value as a Sample value: float | int | bool | str | None, or a list of them for an
    array (nested lists for a matrix: asyncua reshapes a matrix by its Dimensions)."""
    t = type(v)
    if t is float or t is int or t is bool or t is str or v is None:
        return v
    if t is list:
        return [_plain(x) for x in v]
    if t is datetime:
        return v.isoformat()
    if isinstance(v, bytes | bytearray):
        return bytes(v).hex()
    if isinstance(v, ua.LocalizedText):
        return v.Text
    if isinstance(v, int | float | str):  # IntEnum and friends
        return v
    if isinstance(v, ua.NodeId):
        return v.to_string()
    if isinstance(v, ua.QualifiedName):
        return f"{v.NamespaceIndex}:{v.Name}"
    return str(v)


def _status(sc: Any) -> int:
    return 0 if sc is None else int(sc.value)


def _row(handle: int, dv: ua.DataValue) -> Row:
    var = dv.Value
    return (
        handle,
        None if var is None else _plain(var.Value),
        _status(dv.StatusCode),
        _ns(dv.SourceTimestamp),
        _ns(dv.ServerTimestamp),
    )


def _parse_nodeid(text: str, namespaces: Sequence[str]) -> ua.NodeId:
    if text.startswith("nsu="):
        uri, rest = text[4:].split(";", 1)
        if uri not in namespaces:
            raise OpcUaError(f"namespace {uri!r} is not in the server's namespace array", BAD_NODE_ID_UNKNOWN)
        text = f"ns={namespaces.index(uri)};{rest}"
    try:
        return ua.NodeId.from_string(text)
    except Exception as exc:
        raise OpcUaError(f"bad NodeId {text!r}: {exc}", BAD_NODE_ID_UNKNOWN) from exc


@dataclass(frozen=True)
class ItemSpec:
    handle: int
    node: ua.NodeId
    sampling_ms: float
    queue_size: int
    trigger: str | None
    """None: no DataChangeFilter at all (the server's default: a change of status or value reports)."""
    deadband: float | None
    deadband_percent: float | None


@dataclass(frozen=True)
class Limits:
    max_nodes_per_read: int
    max_items_per_call: int


@dataclass(frozen=True)
class SecuritySetup:
    policy: str
    mode: str
    pki: Pki
    application_uri: str
    username: str | None = None
    password: str | None = None
    identity_cert: str | None = None
    identity_key: str | None = None


def default_application_uri() -> str:
    return f"urn:{socket.gethostname()}:edge-gateway"


async def ensure_client_certificate(pki: Pki, application_uri: str) -> None:
    """Generate the client's key and certificate once; regenerated only if missing, invalid or the URI changed."""
    from asyncua.crypto.cert_gen import setup_self_signed_certificate
    from cryptography.x509.oid import ExtendedKeyUsageOID

    pki.ensure_dirs()
    await setup_self_signed_certificate(
        pki.key_path, pki.cert_path, application_uri, socket.gethostname(),
        [ExtendedKeyUsageOID.CLIENT_AUTH], {"commonName": "edge-gateway", "organizationName": "edge-gateway"},
    )


def _chunks(seq: Sequence[Any], size: int) -> list[Sequence[Any]]:
    size = size if size > 0 else max(len(seq), 1)
    return [seq[i : i + size] for i in range(0, len(seq), size)]


class Session:
    """One connected client session. Build with ``await Session.open(...)``; ``close()`` always."""

    def __init__(self, client: Client, timeout: float) -> None:
        self._client = client
        self._timeout = timeout
        self._types: dict[ua.NodeId, tuple[ua.VariantType, bool]] = {}
        self._sub_id: int | None = None
        self.limits_cache = Limits(0, 0)
        self.lost = asyncio.Event()
        """Set when asyncua's own link supervisor sees the connection die."""
        self.namespaces: list[str] = []

    @classmethod
    async def open(cls, endpoint: str, *, timeout: float, security: SecuritySetup | None = None,
                   watchdog_interval: float = 1.0) -> Session:
        client = Client(endpoint, timeout=timeout, watchdog_intervall=watchdog_interval)
        self = cls(client, timeout)

        async def lost(exc: Exception) -> None:
            self.lost.set()

        client.connection_lost_callback = lost
        try:
            if security is not None:
                await self._secure(endpoint, security)
            await asyncio.wait_for(client.connect(), timeout * 2)
        except BaseException as exc:
            await self.close()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise _wrap(exc, f"connect {endpoint}") from exc
        try:
            self.namespaces = await self._call(client.get_namespace_array(), "read namespace array")
            await self.limits()
        except BaseException:
            await self.close()
            raise
        return self

    async def _secure(self, endpoint: str, s: SecuritySetup) -> None:
        client = self._client
        client.application_uri = s.application_uri
        if s.username is not None:
            client.set_user(s.username)
            client.set_password(s.password or "")
        if s.identity_cert is not None and s.identity_key is not None:
            await client.load_client_certificate(s.identity_cert)
            await client.load_private_key(Path(s.identity_key))
        if s.policy == "None":
            return
        await ensure_client_certificate(s.pki, s.application_uri)
        policy = _POLICIES[s.policy]
        mode = _MODES[s.mode]
        endpoints = await asyncio.wait_for(client.connect_and_get_server_endpoints(), self._timeout * 2)
        match = [e for e in endpoints if e.SecurityPolicyUri == policy.URI and e.SecurityMode == mode]
        if not match:
            offered = sorted({f"{e.SecurityPolicyUri.rsplit('#', 1)[-1]}/{e.SecurityMode.name}" for e in endpoints})
            raise OpcUaSecurityError(f"{endpoint} offers no {s.policy}/{s.mode} endpoint; it offers "
                                     f"{', '.join(offered)}", 0x80550000)  # BadSecurityPolicyRejected
        ep = match[0]
        der = _first_cert(ep.ServerCertificate)
        info = describe(der)
        if not s.pki.is_trusted(der):
            path = s.pki.reject(der)
            raise OpcUaSecurityError(
                f"server certificate {info.subject!r} (thumbprint {info.thumbprint}) is not trusted; "
                f"kept as {path}; approve it with `edge-gateway pki trust {info.thumbprint[:16]}`",
                0x801A0000,  # BadCertificateUntrusted
            )
        server_uri = ep.Server.ApplicationUri
        if server_uri and info.uris and server_uri not in info.uris:
            raise OpcUaSecurityError(
                f"server certificate URI {', '.join(info.uris)} does not match the server's application URI "
                f"{server_uri}", 0x80170000,  # BadCertificateUriInvalid
            )
        try:
            await client.set_security(policy, str(s.pki.cert_path), str(s.pki.key_path),
                                      server_certificate=der, mode=mode)
        except Exception as exc:
            raise OpcUaSecurityError(f"security setup failed: {exc}") from exc

    async def _call(self, coro: Any, what: str) -> Any:
        try:
            return await asyncio.wait_for(coro, self._timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise _wrap(exc, what) from exc

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self._client.disconnect(), self._timeout)
        except asyncio.CancelledError:
            raise
        except Exception:  # the link may already be gone: nothing left to release on the server
            with contextlib.suppress(Exception):
                self._client.uaclient.disconnect_socket()  # not graceful, but frees the socket

    # --- addressing ------------------------------------------------------------------------------

    async def resolve(self, nodes: Sequence[str]) -> list[ua.NodeId | OpcUaError]:
        """Each NodeId string or browse path -> NodeId (against the current namespace array), or an error."""
        out: list[ua.NodeId | OpcUaError] = []
        paths: list[tuple[int, list[str]]] = []
        for text in nodes:
            if text.startswith("/"):
                paths.append((len(out), text.strip("/").split("/")))
                out.append(OpcUaError("unresolved", BAD_NO_MATCH))
                continue
            try:
                out.append(_parse_nodeid(text, self.namespaces))
            except OpcUaError as exc:
                out.append(exc)
        if paths:
            resolved = await self._translate([p for _, p in paths])
            for (i, _), r in zip(paths, resolved, strict=True):
                out[i] = r
        return out

    async def _translate(self, paths: list[list[str]]) -> list[ua.NodeId | OpcUaError]:
        requests = []
        for steps in paths:
            elements = []
            for step in steps:
                idx, _, name = step.rpartition(":")
                elements.append(ua.RelativePathElement(
                    ReferenceTypeId=_nid(ObjectIds.HierarchicalReferences),
                    IsInverse=False,  # type: ignore[arg-type]
                    IncludeSubtypes=True,  # type: ignore[arg-type]
                    TargetName=ua.QualifiedName(name, int(idx) if idx else 0)))
            requests.append(ua.BrowsePath(StartingNode=_nid(ObjectIds.RootFolder),
                                          RelativePath=ua.RelativePath(Elements=elements)))
        out: list[ua.NodeId | OpcUaError] = []
        for chunk in _chunks(requests, 500):
            results = await self._call(self._client.uaclient.translate_browsepaths_to_nodeids(list(chunk)),
                                       "translate browse paths")
            for r in results:
                code = _status(r.StatusCode)
                if code & 0x80000000 or not r.Targets:
                    out.append(OpcUaError(f"browse path not found: {status_name(code)}", code or BAD_NO_MATCH))
                else:
                    t = r.Targets[0].TargetId  # an ExpandedNodeId: keep the plain NodeId part
                    out.append(ua.NodeId(t.Identifier, t.NamespaceIndex, t.NodeIdType))
        return out

    async def limits(self) -> Limits:
        """The server's advertised operation limits (0: none), read one node per call: a limit of 1 is legal."""
        values = []
        for oid in (ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
                    ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall):
            dv = (await self._read_call([_nid(oid)], AttributeIds.Value))[0]
            v = dv.Value.Value if dv.Value is not None and _status(dv.StatusCode) == 0 else None
            values.append(int(v) if isinstance(v, int) else 0)
        self.limits_cache = Limits(values[0], values[1])
        return self.limits_cache

    # --- reads ---------------------------------------------------------------------------------

    async def _read_call(self, nodes: Sequence[ua.NodeId], attr: int) -> list[ua.DataValue]:
        params = ua.ReadParameters()
        params.TimestampsToReturn = ua.TimestampsToReturn.Both
        params.NodesToRead = [ua.ReadValueId(NodeId=n, AttributeId=attr) for n in nodes]
        result: list[ua.DataValue] = await self._call(self._client.uaclient.read(params), "read")
        return result

    async def _read_raw(self, nodes: Sequence[ua.NodeId], attr: int = AttributeIds.Value) -> list[ua.DataValue]:
        """Read in as many calls as the server's MaxNodesPerRead requires."""
        out: list[ua.DataValue] = []
        for chunk in _chunks(nodes, self.limits_cache.max_nodes_per_read):
            out.extend(await self._read_call(chunk, attr))
        return out

    async def read(self, nodes: Sequence[ua.NodeId]) -> list[Row]:
        """Values of ``nodes`` in as many Read calls as the server's ``MaxNodesPerRead`` requires."""
        return [_row(i, dv) for i, dv in enumerate(await self._read_raw(nodes))]

    # --- subscriptions --------------------------------------------------------------------------

    async def subscribe(
        self,
        publishing_interval: float,
        items: Sequence[ItemSpec],
        on_rows: Callable[[list[Row]], None],
        on_keepalive: Callable[[], None],
        on_status: Callable[[int], None],
        keepalive_count: int = 10,
        timestamps: str = "both",
    ) -> list[int]:
        """One subscription holding ``items``; returns each item's create StatusCode (0 = good).

        ``timestamps`` (source, server, gateway, both) says which the server sends with each value: only
        the one used saves decoding a DateTime per notification, a good part of the client's CPU.
        """

        def on_publish(result: ua.PublishResult) -> None:
            data = result.NotificationMessage.NotificationData
            if not data:
                on_keepalive()
                return
            for notif in data:
                if isinstance(notif, ua.DataChangeNotification):
                    on_rows([_row(m.ClientHandle, m.Value) for m in notif.MonitoredItems])
                elif isinstance(notif, ua.StatusChangeNotification):
                    on_status(_status(notif.Status))

        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=publishing_interval * 1000,
            RequestedLifetimeCount=max(10_000, 3 * keepalive_count), RequestedMaxKeepAliveCount=keepalive_count,
            MaxNotificationsPerPublish=0, PublishingEnabled=True, Priority=0,
        )
        res = await self._call(self._client.uaclient.create_subscription(params, on_publish), "create subscription")
        self._sub_id = res.SubscriptionId
        codes: list[int] = []
        for chunk in _chunks(items, self.limits_cache.max_items_per_call):
            req = ua.CreateMonitoredItemsParameters()
            req.SubscriptionId = self._sub_id
            req.TimestampsToReturn = _TIMESTAMPS[timestamps]
            req.ItemsToCreate = [self._item_request(it) for it in chunk]
            results = await self._call(self._client.uaclient.create_monitored_items(req), "create monitored items")
            codes.extend(_status(r.StatusCode) for r in results)
        return codes

    @staticmethod
    def _item_request(it: ItemSpec) -> ua.MonitoredItemCreateRequest:
        # A filter only when asked for: some servers (node-opcua) apply a StatusValue filter to a String,
        # Boolean or DateTime variable by reporting it once and never again.
        flt: ua.DataChangeFilter | None = None
        if it.trigger is not None or it.deadband is not None or it.deadband_percent is not None:
            flt = ua.DataChangeFilter(Trigger=_TRIGGERS[it.trigger or "status_value"])
            if it.deadband is not None:
                flt.DeadbandType, flt.DeadbandValue = ua.DeadbandType.Absolute, it.deadband
            elif it.deadband_percent is not None:
                flt.DeadbandType, flt.DeadbandValue = ua.DeadbandType.Percent, it.deadband_percent
        p = ua.MonitoringParameters(ClientHandle=it.handle, SamplingInterval=it.sampling_ms,
                                    QueueSize=it.queue_size, DiscardOldest=True, Filter=flt)
        return ua.MonitoredItemCreateRequest(
            ItemToMonitor=ua.ReadValueId(NodeId=it.node, AttributeId=AttributeIds.Value),
            MonitoringMode=ua.MonitoringMode.Reporting, RequestedParameters=p,
        )

    # --- writes ---------------------------------------------------------------------------------

    async def numeric(self, nodes: Sequence[ua.NodeId]) -> list[bool]:
        """Whether each node's DataType is a number (built-in numeric types and their subtypes such as
        Duration, by their current value otherwise), in as few reads as MaxNodesPerRead allows."""
        out = []
        types = await self._read_raw(nodes, AttributeIds.DataType)
        unsure = []
        for i, dv in enumerate(types):
            dt = dv.Value.Value if dv.Value is not None else None
            if isinstance(dt, ua.NodeId) and dt.NamespaceIndex == 0 and isinstance(dt.Identifier, int) \
                    and 1 <= dt.Identifier <= 25:
                out.append(dt.Identifier in _NUMERIC_IDS)
            else:
                out.append(False)
                unsure.append(i)
        if unsure:
            values = await self._read_raw([nodes[i] for i in unsure])
            for i, dv in zip(unsure, values, strict=True):
                v = dv.Value.Value if dv.Value is not None else None
                out[i] = isinstance(v, int | float) and not isinstance(v, bool)
        return out

    async def value_type(self, node: ua.NodeId) -> tuple[ua.VariantType, bool]:
        """The node's variant type and whether it holds an array (from DataType and ValueRank), cached."""
        cached = self._types.get(node)
        if cached is not None:
            return cached
        params = ua.ReadParameters()
        params.NodesToRead = [ua.ReadValueId(NodeId=node, AttributeId=AttributeIds.DataType),
                              ua.ReadValueId(NodeId=node, AttributeId=AttributeIds.ValueRank)]
        dtype, rank = await self._call(self._client.uaclient.read(params), "read data type")
        dt = dtype.Value.Value if dtype.Value is not None else None
        vr = rank.Value.Value if rank.Value is not None and _status(rank.StatusCode) == 0 else -1
        vt: ua.VariantType | None = None
        if isinstance(dt, ua.NodeId) and dt.NamespaceIndex == 0 and isinstance(dt.Identifier, int) \
                and 1 <= dt.Identifier <= 25:
            vt = ua.VariantType(dt.Identifier)
        array = isinstance(vr, int) and vr >= 0
        if vt is None or vr in (-2, -3):  # a subtype (UtcTime, an enumeration) or any rank: the value says
            cur = (await self._read_raw([node]))[0]
            if cur.Value is None or _status(cur.StatusCode) & 0x80000000:
                raise OpcUaError(f"cannot tell the data type of {node.to_string()}", BAD_TYPE_MISMATCH)
            vt = vt or cur.Value.VariantType
            array = array or isinstance(cur.Value.Value, list)
        self._types[node] = (vt, array)
        return vt, array

    async def write_kind(self, node: ua.NodeId) -> WriteKind:
        vt, array = await self.value_type(node)
        return write_kind_of(vt, array)

    async def write(self, node: ua.NodeId, value: Any) -> None:
        vt, array = await self.value_type(node)
        if array != isinstance(value, list):
            raise OpcUaError(f"{node.to_string()} holds {'an array' if array else 'one value'} of {vt.name}",
                             BAD_TYPE_MISMATCH)
        plain = [_coerce(v, vt) for v in value] if isinstance(value, list) else _coerce(value, vt)
        variant = ua.Variant(plain, vt, is_array=array)
        params = ua.WriteParameters()
        params.NodesToWrite = [ua.WriteValue(NodeId=node, AttributeId=AttributeIds.Value,
                                             Value=ua.DataValue(variant))]
        codes = await self._call(self._client.uaclient.write(params), "write")
        code = _status(codes[0])
        if code & 0x80000000:
            raise OpcUaError(f"write refused: {status_name(code)}", code)

    # --- browsing -------------------------------------------------------------------------------

    async def browse(self, node: ua.NodeId) -> list[BrowseEntry]:
        """Forward hierarchical children of ``node`` with class, browse name and (for variables) attributes."""
        desc = ua.BrowseDescription(NodeId=node, BrowseDirection=ua.BrowseDirection.Forward,
                                    ReferenceTypeId=_nid(ObjectIds.HierarchicalReferences),
                                    IncludeSubtypes=True, NodeClassMask=0, ResultMask=63)
        params = ua.BrowseParameters()
        params.NodesToBrowse = [desc]
        results = await self._call(self._client.uaclient.browse(params), "browse")
        code = _status(results[0].StatusCode)
        if code & 0x80000000:
            raise OpcUaError(f"browse {node.to_string()}: {status_name(code)}", code)
        refs = list(results[0].References or [])
        cont = results[0].ContinuationPoint
        while cont:
            nxt = ua.BrowseNextParameters()
            nxt.ContinuationPoints = [cont]
            more = await self._call(self._client.uaclient.browse_next(nxt), "browse next")
            refs.extend(more[0].References or [])
            cont = more[0].ContinuationPoint
        entries = []
        for r in refs:
            nid = ua.NodeId(r.NodeId.Identifier, r.NodeId.NamespaceIndex, r.NodeId.NodeIdType)
            prop = r.ReferenceTypeId == _nid(ObjectIds.HasProperty)
            entries.append(BrowseEntry(nid.to_string(), f"{r.BrowseName.NamespaceIndex}:{r.BrowseName.Name}",
                                       r.BrowseName.Name, r.NodeClass.name, nid, is_property=prop))
        variables = [e for e in entries if e.node_class == "Variable"]
        if variables:
            ids = [e.ref for e in variables]
            types = await self._read_raw(ids, AttributeIds.DataType)
            access = await self._read_raw(ids, AttributeIds.UserAccessLevel)
            values = await self._read_raw(ids)
            for e, t, a, v in zip(variables, types, access, values, strict=True):
                e.data_type = _type_name(t.Value.Value if t.Value is not None else None)
                e.access = _access(a.Value.Value if a.Value is not None else 0)
                raw = v.Value.Value if v.Value is not None else None
                e.value = raw.DisplayName.Text if isinstance(raw, ua.EUInformation) else _row(0, v)[1]
                e.status = _status(v.StatusCode)
        return entries

    def namespace_uri(self, index: int) -> str:
        return self.namespaces[index] if 0 <= index < len(self.namespaces) else ""


@dataclass
class BrowseEntry:
    node_id: str
    browse_name: str
    name: str
    node_class: str
    ref: ua.NodeId
    is_property: bool = False
    data_type: str = ""
    access: str = ""
    value: Any = None
    status: int = 0


def _type_name(dt: Any) -> str:
    if isinstance(dt, ua.NodeId):
        if dt.NamespaceIndex == 0 and isinstance(dt.Identifier, int):
            return ObjectIdNames.get(dt.Identifier, dt.to_string())
        return str(dt.to_string())
    return ""


def _access(level: Any) -> str:
    level = int(level or 0)
    return ("r" if level & 1 else "-") + ("w" if level & 2 else "-")


def _first_cert(chain: bytes) -> bytes:
    """The leaf certificate of a DER chain (servers may send the chain concatenated)."""
    if len(chain) < 4 or chain[0] != 0x30:
        return chain
    if chain[1] & 0x80:
        n = chain[1] & 0x7F
        length = int.from_bytes(chain[2 : 2 + n], "big") + 2 + n
    else:
        length = chain[1] + 2
    return chain[:length]


def write_kind_of(vt: ua.VariantType, array: bool) -> WriteKind:
    """What a node of this variant type accepts, by ``gateway.writes``' rule."""
    if vt == ua.VariantType.Boolean:
        kind = WriteKind("bool", type_name="Boolean")
    elif vt in _INT_KINDS:
        kind = _INT_KINDS[vt]
    elif vt == ua.VariantType.Float:
        kind = WriteKind("float", -FLOAT32_MAX, FLOAT32_MAX, type_name="Float")
    elif vt == ua.VariantType.Double:
        kind = WriteKind("float", type_name="Double")
    elif vt in (ua.VariantType.String, ua.VariantType.XmlElement, ua.VariantType.LocalizedText,
                ua.VariantType.Guid):
        kind = WriteKind("string", type_name=vt.name)
    elif vt == ua.VariantType.DateTime:
        kind = WriteKind("datetime", type_name="DateTime")
    elif vt == ua.VariantType.ByteString:
        kind = WriteKind("bytes", type_name="ByteString")
    else:
        raise OpcUaError(f"writing {vt.name} values is not supported", BAD_TYPE_MISMATCH)
    return replace(kind, array=True, type_name=f"{kind.type_name}[]") if array else kind


def _coerce(value: Any, vt: ua.VariantType) -> Any:
    """A raw value (already checked by ``gateway.writes.coerce``) as the node's own Python type; refuses what
    is not exactly right rather than converting it (no ``bool()`` of text, no wrap-around)."""
    try:
        if vt == ua.VariantType.Boolean:
            if type(value) is not bool:
                raise ValueError("expected true or false")
            return value
        if vt in _INT_KINDS:
            if type(value) is bool or not isinstance(value, int | float) or \
                    (isinstance(value, float) and not value.is_integer()):
                raise ValueError("expected a whole number")
            kind = _INT_KINDS[vt]
            if not kind.fits(value):
                raise ValueError(f"outside {vt.name} [{kind.lo}, {kind.hi}]")
            return int(value)
        if vt in (ua.VariantType.Float, ua.VariantType.Double):
            if type(value) is bool or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError("expected a finite number")
            if vt == ua.VariantType.Float and abs(value) > FLOAT32_MAX:
                raise ValueError("outside the Float range")
            return float(value)
        if not isinstance(value, str):
            raise ValueError("expected text")
        if vt in (ua.VariantType.String, ua.VariantType.XmlElement):
            return value
        if vt == ua.VariantType.LocalizedText:
            return ua.LocalizedText(value)
        if vt == ua.VariantType.DateTime:
            dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
            if dt.tzinfo is None:
                raise ValueError("a time needs its zone")
            return dt
        if vt == ua.VariantType.ByteString:
            return bytes.fromhex(value)
        if vt == ua.VariantType.Guid:
            return uuid.UUID(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise OpcUaError(f"cannot write {shown(value)} as {vt.name}: {exc}", BAD_TYPE_MISMATCH) from exc
    raise OpcUaError(f"writing {vt.name} values is not supported", BAD_TYPE_MISMATCH)
