"""The Sparkplug B edge node's state: what it knows of each device and what it publishes for a write.

One ``EdgeNode`` per sink, for the life of the process. It knows every device it has seen (one Sparkplug
device per gateway device) with every metric it has seen (alias, datatype, unit), the last value of each
that was delivered, and whether its link is down. It turns spooled batches into Sparkplug messages:

- a device is born (DBIRTH, every metric it has, each with its current value) when it first shows up in
  the current session, when its link comes back, and when it brings a metric or a datatype its last
  DBIRTH did not have (the DBIRTH then lists everything again: a birth holds every metric the device
  will report within it);
- a device whose samples in a batch are all BAD for a link reason (``BadNotConnected``, ``BadTimeout``,
  an OPC-UA server saying it cannot reach the machine, ...) dies (DDEATH) and is not heard of until a
  reading comes back;
- everything else is DDATA by exception: one message per device and write, aliases only, the metrics whose
  value, quality or status changed, each with its source timestamp, in chronological order.

A write's effect on the state (last values, dead devices) is kept aside and applied only when the broker
acknowledged the write (``Encoded.commit``): a write that failed is encoded again from the same state.
Births come from that committed state. ``seq`` counts every message of a session from its NBIRTH (0) and
wraps after 255; the sink ends the session (``reset``) whenever a write fails or its connection ends, and
the next births start a new one.

Datatypes come from the values (``codec.infer``), widened when a later value needs it (an Int64 metric
that sees 2.5 becomes a Double, and its device is born again), unless the config names a metric's
datatype (``datatypes:``); a metric seen only without a value so far is born a Double and takes the type
of its first value.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import structlog

from connectors.sparkplug import codec
from connectors.sparkplug.codec import Payload
from gateway.model import Batch, Quality, Sample, Value
from gateway.status_codes import BAD_COMMUNICATION_ERROR, BAD_DECODING_ERROR, BAD_NOT_CONNECTED, BAD_TIMEOUT

# Samples are indexed by position on the hot path (``gateway.samples.FIELDS``): 0 device, 1 tag, 2 value,
# 3 quality, 4 status, 5 source_ts, 6 gateway_ts, 7 unit.

LINK_DOWN = frozenset({
    BAD_TIMEOUT, BAD_NOT_CONNECTED, BAD_COMMUNICATION_ERROR, BAD_DECODING_ERROR,
    # what an OPC-UA server (or a gateway in front of the machine) says of a machine it cannot reach:
    0x80310000, 0x800D0000, 0x808D0000, 0x80320000,  # BadNoCommunication, BadServerNotConnected,
})  # BadOutOfService, BadWaitingForInitialData
"""Status codes of a BAD sample that mean the device is unreachable, not that it answered badly."""

BAD_TYPE_MISMATCH = 0x80740000
_GOOD = Quality.GOOD
_BAD = Quality.BAD

Last = tuple[Value, int, int, int]
"""What was last delivered of a metric: value, quality, status, timestamp (ms)."""
Message = tuple[str, bytes]
Item = tuple[int, int, Value, int, bool, "MetricDef"]
"""A DDATA value on its way: timestamp (ms), quality, value, status, back to GOOD after a bad spell, metric."""


class DeviceIdTaken(ValueError):
    """Two gateway devices whose ``device_id`` template gives the same Sparkplug device id."""


@dataclass(slots=True)
class MetricDef:
    name: str
    alias: int
    datatype: int
    fixed: bool
    """The config named its datatype: it never changes, and a value it cannot hold is sent BAD."""
    provisional: bool
    """No value seen yet: born a Double until the first value says what it is."""
    unit: str | None


class Device:
    __slots__ = ("born_version", "dead", "device_id", "key", "last", "metrics", "topics", "version")

    def __init__(self, key: tuple[str, str], device_id: str, topics: dict[str, str]) -> None:
        self.key = key
        self.device_id = device_id
        self.topics = topics
        self.metrics: dict[str, MetricDef] = {}
        self.version = 0  # bumped whenever a metric or a datatype is added
        self.born_version = -1  # the version its DBIRTH of the current session carried; -1: not born
        self.last: dict[str, Last] = {}
        self.dead = False


@dataclass(slots=True)
class Encoded:
    """The messages of one write, and how the state changes once the broker acknowledged them."""

    messages: list[Message]
    metrics: int
    """Metric values in DBIRTH and DDATA messages."""
    rejected: list[tuple[int, list[Sample], str]]
    """(batch position, samples, reason): samples of a device the node cannot publish (its id is taken)."""
    _last: dict[Device, dict[str, Last]] = field(default_factory=dict)
    _dead: dict[Device, bool] = field(default_factory=dict)

    def commit(self) -> None:
        for dev, last in self._last.items():
            dev.last.update(last)
        for dev, dead in self._dead.items():
            dev.dead = dead


class EdgeNode:
    def __init__(
        self,
        group_id: str,
        edge_node_id: str,
        device_id: Callable[[str, str], str],
        *,
        datatypes: Mapping[str, int] | None = None,
        report_by_exception: bool = True,
        log: structlog.stdlib.BoundLogger | None = None,
    ) -> None:
        self.group_id = group_id
        self.edge_node_id = edge_node_id
        base = f"spBv1.0/{group_id}"
        self.nbirth_topic = f"{base}/NBIRTH/{edge_node_id}"
        self.ndeath_topic = f"{base}/NDEATH/{edge_node_id}"
        self.ncmd_topic = f"{base}/NCMD/{edge_node_id}"
        self.dcmd_prefix = f"{base}/DCMD/{edge_node_id}/"
        self._base = base
        self._device_id = device_id
        self._datatypes = list((datatypes or {}).items())
        self.rbe = report_by_exception
        self.log = log
        self.devices: dict[tuple[str, str], Device] = {}
        self.by_id: dict[str, Device] = {}
        self.by_alias: dict[int, tuple[Device, MetricDef]] = {}
        self._next_alias = 1
        self.seq = 0
        self.born = False
        self._warned: set[tuple[str, str]] = set()

    # --- session -----------------------------------------------------------------------------------

    def reset(self) -> None:
        """The session ended (its connection did, or a write failed): the next messages are births."""
        self.born = False
        for dev in self.devices.values():
            dev.born_version = -1

    def _seq(self) -> int:
        s = self.seq
        self.seq = (s + 1) & 0xFF
        return s

    def births(self, bdseq: int, now_ms: int) -> list[Message]:
        """NBIRTH (seq 0, the will's bdSeq) and a DBIRTH for every device known and reachable, from the
        delivered state: what a new session, or a rebirth request, starts with."""
        self.seq = 0
        out: list[Message] = [(self.nbirth_topic, codec.nbirth(bdseq, self._seq(), now_ms))]
        for dev in self.devices.values():
            dev.born_version = -1
            if not dev.dead and dev.metrics:
                out.append((dev.topics["DBIRTH"], self._dbirth(dev, {}, now_ms)))
                dev.born_version = dev.version
        self.born = True
        return out

    def ndeath(self, bdseq: int, now_ms: int) -> Message:
        return self.ndeath_topic, codec.ndeath(bdseq, now_ms)

    # --- devices and metrics -----------------------------------------------------------------------

    def device(self, source: str, device: str) -> Device:
        key = (source, device)
        dev = self.devices.get(key)
        if dev is not None:
            return dev
        device_id = self._device_id(source, device)
        other = self.by_id.get(device_id)
        if other is not None:
            raise DeviceIdTaken(
                f"Sparkplug device id {device_id!r} of {source}.{device} is already {other.key[0]}.{other.key[1]}'s; "
                "make device_id tell them apart (e.g. {source}_{device})")
        topics = {kind: f"{self._base}/{kind}/{self.edge_node_id}/{device_id}" for kind in ("DBIRTH", "DDATA",
                                                                                               "DDEATH")}
        dev = self.devices[key] = self.by_id[device_id] = Device(key, device_id, topics)
        return dev

    def _fixed(self, dev: Device, tag: str) -> int | None:
        if self._datatypes:
            path = f"{dev.key[1]}/{tag}"
            for pattern, dt in self._datatypes:
                if fnmatch.fnmatchcase(path, pattern):
                    return dt
        return None

    def _learn(self, dev: Device, samples: Sequence[Sample]) -> None:
        """Add the metrics and datatypes ``samples`` bring to ``dev``'s (a new version when any)."""
        defs = dev.metrics
        grew = False
        for s in samples:
            tag, v = s[1], s[2]
            d = defs.get(tag)
            if d is None:
                fixed = self._fixed(dev, tag)
                dt = codec.infer(v) if fixed is None else fixed
                d = defs[tag] = MetricDef(tag, self._next_alias, dt or codec.DOUBLE, fixed is not None,
                                          dt == codec.UNKNOWN, s[7])
                self.by_alias[self._next_alias] = (dev, d)
                self._next_alias += 1
                grew = True
            elif v is None or d.fixed:
                continue
            elif d.provisional:
                dt = codec.infer(v)
                d.provisional = False
                if dt != d.datatype:
                    d.datatype, grew = dt, True
            elif codec.SCALAR_TYPES.get(type(v)) != d.datatype:
                wider = codec.widen(d.datatype, codec.infer(v))
                if wider != d.datatype:
                    d.datatype, grew = wider, True
            if d.unit is None and s[7] is not None:
                d.unit = s[7]
        if grew:
            dev.version += 1

    # --- encoding a write ---------------------------------------------------------------------------

    def encode(self, batches: Sequence[Batch], now_ms: int) -> Encoded:
        """The messages that deliver ``batches``, in order; the state moves on only by ``commit``."""
        assert self.born, "encode before births"
        out: list[Message] = []
        enc = Encoded(out, 0, [])
        pending: dict[Device, list[Item]] = {}
        unsorted: set[Device] = set()  # devices whose pending values are not in chronological order
        ov_last = enc._last
        ov_dead = enc._dead
        rbe = self.rbe

        def flush(dev: Device) -> None:
            items = pending.pop(dev, None)
            if items:
                if dev in unsorted:
                    unsorted.discard(dev)
                    items.sort(key=itemgetter(0))  # chronological, as the specification wants (stable per metric)
                out.append((dev.topics["DDATA"], self._ddata(dev, items, now_ms)))
                enc.metrics += len(items)

        for bi, batch in enumerate(batches):
            groups: dict[str, list[Sample]] = {}
            for s in batch.samples:
                g = groups.get(s[0])
                if g is None:
                    groups[s[0]] = [s]
                else:
                    g.append(s)
            for name, samples in groups.items():
                try:
                    dev = self.device(batch.source, name)
                except DeviceIdTaken as exc:
                    enc.rejected.append((bi, samples, str(exc)))
                    continue
                last = ov_last.get(dev)
                if last is None:
                    last = ov_last[dev] = {}
                dead = ov_dead.get(dev, dev.dead)
                if _link_down(samples):
                    if not dead and dev.born_version >= 0:
                        flush(dev)
                        # when the link was found down (a host marks the device offline at the DDEATH's
                        # timestamp): the same as the publishing time, unless the spool held it meanwhile
                        ts = max(_ms(s) for s in samples)
                        out.append((dev.topics["DDEATH"], codec.ddeath(self._seq(), ts)))
                        dev.born_version = -1
                    ov_dead[dev] = True
                    for s in samples:
                        last[s[1]] = (None, _BAD, s[4], _ms(s))
                    continue
                self._learn(dev, samples)
                if dead or dev.born_version != dev.version:
                    # born here, with each metric's first value of this group (the rest follow as DDATA)
                    flush(dev)
                    firsts = _firsts(samples)
                    for i in firsts:
                        s = samples[i]
                        last[s[1]] = (s[2], s[3], s[4], _ms(s))
                    out.append((dev.topics["DBIRTH"], self._dbirth(dev, last, now_ms)))
                    enc.metrics += len(dev.metrics)
                    dev.born_version = dev.version
                    ov_dead[dev] = False
                    samples = [s for i, s in enumerate(samples) if i not in firsts]
                items = pending.get(dev)
                if items is None:
                    items = pending[dev] = []
                    prev_ts = 0
                else:
                    prev_ts = items[-1][0]
                defs = dev.metrics
                committed = dev.last
                for s in samples:
                    tag, v, q, st = s[1], s[2], s[3], s[4]
                    prev = last.get(tag) or committed.get(tag)
                    recovered = False
                    if prev is not None:
                        if rbe and prev[0] == v and prev[1] == q and prev[2] == st and type(prev[0]) is type(v):
                            continue
                        recovered = prev[1] != _GOOD or prev[2] != 0
                    ts = _ms(s)
                    if ts < prev_ts:
                        unsorted.add(dev)
                    prev_ts = ts
                    last[tag] = (v, q, st, ts)
                    items.append((ts, q, v, st, recovered, defs[tag]))
        for dev in list(pending):
            flush(dev)
        return enc

    # --- payloads ------------------------------------------------------------------------------------

    def _dbirth(self, dev: Device, overlay: Mapping[str, Last], now_ms: int) -> bytes:
        p = Payload(timestamp=now_ms, seq=self._seq())
        add = p.metrics.add
        committed = dev.last
        for tag, d in dev.metrics.items():
            last = overlay.get(tag) or committed.get(tag)
            m = add(name=d.name, alias=d.alias, datatype=d.datatype)
            if last is None:
                m.timestamp = now_ms
                m.is_null = True
            else:
                v, q, st, ts = last
                m.timestamp = ts
                self._put(dev, d, m, v, q, st, False)
            if d.unit is not None:
                codec.unit_property(m, d.unit)
        return p.SerializeToString()

    def _ddata(self, dev: Device, items: list[Item], now_ms: int) -> bytes:
        p = Payload(timestamp=now_ms, seq=self._seq())
        add = p.metrics.add
        put = self._put
        for ts, q, v, st, recovered, d in items:
            m = add(alias=d.alias, timestamp=ts)
            dt = d.datatype
            if q == _GOOD and st == 0 and not recovered and v is not None:
                # the common case inline: a good number
                if dt == codec.DOUBLE and type(v) is float:
                    m.double_value = v
                    continue
                if dt == codec.INT64 and type(v) is int and -(2**63) <= v < 2**63:
                    m.long_value = v & 0xFFFFFFFFFFFFFFFF
                    continue
            put(dev, d, m, v, q, st, recovered)
        return p.SerializeToString()

    def _put(self, dev: Device, d: MetricDef, m: Any, v: Value, q: int, st: int, recovered: bool) -> None:
        try:
            codec.put(m, d.datatype, v)
        except codec.DoesNotFit as exc:
            m.ClearField("value")
            m.is_null = True
            q, st = _BAD, BAD_TYPE_MISMATCH
            key = (dev.device_id, d.name)
            if key not in self._warned and self.log is not None:
                self._warned.add(key)
                self.log.warning("sparkplug metric value does not fit its datatype; sent BAD", device=dev.device_id,
                                 metric=d.name, error=str(exc))
        if q != _GOOD or st != 0 or recovered:
            codec.quality_properties(m, q, st)


def _ms(s: Sample) -> int:
    return (s[5] or s[6]) // 1_000_000


def _link_down(samples: Sequence[Sample]) -> bool:
    return all(s[3] == _BAD and s[4] in LINK_DOWN for s in samples)


def _firsts(samples: Sequence[Sample]) -> set[int]:
    """Positions of each tag's first sample in ``samples``."""
    seen: dict[str, int] = {}
    for i, s in enumerate(samples):
        seen.setdefault(s[1], i)
    return set(seen.values())
