"""Topics and JSON payloads built from samples, per batch, without json.dumps per sample.

Layout ``tag``: one message per sample on ``…/{device}/{tag}``::

    {"value": 21.5, "quality": "good", "ts": "2026-11-23T21:07:51.123Z", "unit": "degC"}

Layout ``device``: one message per device and timestamp in a batch (a scan)::

    {"ts": "2026-11-23T21:07:51.123Z", "source": "plc1", "device": "filler",
     "values": {"temperature": 21.5, "running": true, "state": "RUN"},
     "quality": {"pressure": "bad"},
     "units": {"temperature": "degC"}}

A tag with a value map (``states: {1: running, ...}``, and every ``<tag>.alarm``) also gets its value's word:
``"state": "running"`` in the ``tag`` layout, and ``"states": {"state": "running"}`` (tag -> word, only for
tags that have one) in the ``device`` layout.

``values`` holds every tag of the scan (``null`` for a value that could not be read); ``quality`` lists
only the tags whose quality is not good (an empty object when all are good), so the common case stays
small; ``units`` is present when the sink's ``units`` option is on and some tag has one. Two more
objects appear only when some tag of the message needs them: ``status`` (tag -> the status code's name,
e.g. ``"IllegalDataAddress"``, ``"BadTimeout"``, for tags with a non-zero status) and ``server_ts``
(tag -> the OPC-UA server timestamp, for tags configured with ``server_timestamp``). In the ``tag``
layout the same appear as ``"status"`` and ``"server_ts"`` fields of the message.

Arrays and matrices (OPC-UA) are JSON arrays (nested for a matrix).
Timestamps are the device's (``source_ts``), else the gateway's receive time, in UTC with milliseconds.
Non-finite floats (NaN, inf) are not valid JSON and are sent as ``null``.

Samples are grouped by (device, timestamp) over the whole batch, whatever their order: an OPC-UA
notification with queue size > 1 interleaves timestamps item by item. A device's messages go out in
time order. A tag seen twice for one device and timestamp is not dropped: the repeat goes into a further
message with that timestamp.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from itertools import groupby
from operator import itemgetter

import orjson

from gateway.config.site import SiteConfig
from gateway.model import Batch, Quality, Sample, Value
from gateway.status_codes import status_name
from gateway.values import array_json, finite
from gateway.watch import ValueMaps, state_word

_QUALITY = {Quality.GOOD: "good", Quality.UNCERTAIN: "uncertain", Quality.BAD: "bad"}
_isfinite = math.isfinite
# Sample fields by index, applied with map() so the per-sample loop stays in C
_device, _tag, _value, _quality, _status, _source_ts, _unit, _server = (
    itemgetter(i) for i in (0, 1, 2, 3, 4, 5, 7, 8))
# orjson writes a float in ~30 ns where the standard library's repr takes ~500 (on a message of 62 values:
# 2 against 31 µs), compact, and NaN/inf as null. The standard encoder (which raises on NaN/inf instead
# of emitting invalid JSON) stays for what orjson refuses: an int beyond 64 bits, say.
_std_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False, check_circular=False).encode
# Below this many samples a message is concatenated in Python: the json encoder costs a few µs per call,
# which only pays off when its C loop replaces enough per-sample Python work.
SMALL_GROUP = 16
_YEAR_10000_NS = 253_402_300_800 * 10**9


def json_value(v: Value) -> str:
    t = type(v)
    if t is float:
        return repr(v) if _isfinite(v) else "null"  # type: ignore[arg-type]
    if t is bool:
        return "true" if v else "false"
    if t is int:
        return str(v)
    if v is None:
        return "null"
    if t is list:
        return array_json(v)  # type: ignore[arg-type]
    return json.dumps(v)


def _safe(segment: str) -> str:
    # a name must not turn into a wildcard of someone's subscription
    return segment.replace("+", "_").replace("#", "_")


class TimestampFormatter:
    """ns since the epoch -> ``2026-11-23T21:07:51.123Z``; a batch shares one timestamp, so cache it,
    and OPC-UA timestamps differ by milliseconds, so cache the seconds too."""

    __slots__ = ("_last", "_last_ns", "_prefix", "_sec")

    def __init__(self) -> None:
        self._last_ns = -1
        self._last = ""
        self._sec = -1
        self._prefix = ""

    def __call__(self, ns: int) -> str:
        if ns == self._last_ns:
            return self._last
        if not 0 <= ns < _YEAR_10000_NS:  # no sink may jam on a device's clock: such a time reads as now
            ns = time.time_ns()
        sec, ms = divmod(ns // 1_000_000, 1000)
        if sec != self._sec:
            self._sec, self._prefix = sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        s = f"{self._prefix}.{ms:03d}Z"
        self._last_ns, self._last = ns, s
        return s


class Encoder:
    """Turns batches into ``(topic, payload)`` pairs for one sink's layout and topic template."""

    def __init__(self, template: str, site: SiteConfig, *, layout: str, units: bool,
                 value_maps: Mapping[str, ValueMaps] | None = None) -> None:
        self.layout = layout
        self._maps = value_maps if value_maps is not None else {}
        self.units = units
        self._template = template
        self._site = {"enterprise": site.enterprise, "site": site.site, "area": site.area, "line": site.line}
        self._topics: dict[tuple[str, str, str], str] = {}
        self._keys: dict[str, str] = {}
        self._devices: dict[tuple[str, str], tuple[str, str]] = {}
        self._ts = TimestampFormatter()
        self._server_ts = TimestampFormatter()

    def topic(self, source: str, device: str, tag: str = "") -> str:
        key = (source, device, tag)
        t = self._topics.get(key)
        if t is None:
            t = self._template.format(**self._site, source=_safe(source), device=_safe(device), tag=_safe(tag))
            if len(self._topics) < 1_000_000:
                self._topics[key] = t
        return t

    def _device_parts(self, source: str, device: str) -> tuple[str, str]:
        """The topic of a device's messages and their ``"source":…,"device":…`` part, built once."""
        d = self._devices.get((source, device))
        if d is None:
            d = (self.topic(source, device), f'"source":{self._key(source)},"device":{self._key(device)}')
            if len(self._devices) < 1_000_000:
                self._devices[source, device] = d
        return d

    def _key(self, tag: str) -> str:
        k = self._keys.get(tag)
        if k is None:
            k = self._keys[tag] = json.dumps(tag)
        return k

    def encode(self, batches: Sequence[Batch]) -> list[tuple[str, bytes]]:
        out: list[tuple[str, bytes]] = []
        if self.layout == "tag":
            for b in batches:
                self._per_tag(b, out)
        else:
            for b in batches:
                self._per_device(b, out)
        return out

    def _per_tag(self, batch: Batch, out: list[tuple[str, bytes]]) -> None:
        topic, fmt, source = self.topic, self._ts, batch.source
        units = self.units
        maps = self._maps.get(source)
        for s in batch.samples:
            unit = f',"unit":{json.dumps(s.unit)}' if units and s.unit is not None else ""
            if maps and (m := maps.get((s[0], s[1]))) is not None and (word := state_word(m, s[2])) is not None:
                unit += f',"state":{json.dumps(word)}'
            if s[4] or s[8]:  # a status code, or the server timestamp: rare, so looked at only then
                unit += f',"status":"{status_name(s[4])}"' if s[4] else ""
                unit += f',"server_ts":"{self._server_ts(s[8])}"' if s[8] else ""
            payload = (f'{{"value":{json_value(s.value)},"quality":"{_QUALITY[s.quality]}",'
                       f'"ts":"{fmt(s.source_ts or s.gateway_ts)}"{unit}}}')
            out.append((topic(source, s.device, s.tag), payload.encode()))

    def _per_device(self, batch: Batch, out: list[tuple[str, bytes]]) -> None:
        source, samples = batch.source, batch.samples
        groups: dict[tuple[str, int], list[Sample]] = {}
        tss = list(map(_source_ts, samples))
        if tss and 0 not in tss and tss.count(tss[0]) == len(tss):
            # one timestamp (a scan, the common case): group by device alone, its runs found in C
            ts = tss[0]
            for device, run in groupby(samples, _device):
                group = groups.get((device, ts))
                if group is None:
                    groups[device, ts] = list(run)
                else:
                    group.extend(run)
            items = list(groups.items())
        else:
            # Several timestamps (each read of a scan stamped when it was answered, a queue of notifications):
            # runs of one device and timestamp found in C, Python works per run. No device timestamp: the
            # gateway's receive time.
            for key, run in groupby(samples, _device_ts if 0 not in tss else _device_ts_or_received):
                group = groups.get(key)
                if group is None:
                    groups[key] = list(run)
                else:
                    group.extend(run)
            items = list(groups.items())
            last: dict[str, int] = {}
            for device, ts in groups:
                if last.setdefault(device, ts) > ts:  # a device's timestamps out of order: sort
                    rank = {d: i for i, d in enumerate(dict.fromkeys(map(_first, groups)))}
                    items.sort(key=lambda item: (rank[item[0][0]], item[0][1]))  # stable
                    break
                last[device] = ts
        payload = self._device_payload
        maps = self._maps.get(source)
        for (device, ts), group in items:
            t = self._device_parts(source, device)[0]
            words = _words(maps, group) if maps else None
            if len(group) > 1 and len(set(map(_tag, group))) < len(group):
                out.extend([(t, payload(source, device, ts, part, _words(maps, part) if words else None))
                            for part in _split_repeats(group)])
            else:
                out.append((t, payload(source, device, ts, group, words)))

    def _device_payload(self, source: str, device: str, ts: int, group: list[Sample],
                        words: dict[str, str] | None = None) -> bytes:
        if len(group) < SMALL_GROUP:
            return self._small_device_payload(self._device_parts(source, device)[1], ts, group, words)
        # Per sample only C runs here (map, zip, dict, the json encoder's loop); Python works per message.
        tags = list(map(_tag, group))
        values = dict(zip(tags, map(_value, group), strict=True))
        doc: dict[str, object] = {"ts": self._ts(ts), "source": source, "device": device, "values": values}
        qualities = list(map(_quality, group))
        doc["quality"] = {t: _QUALITY[q] for t, q in zip(tags, qualities, strict=True) if q} if any(qualities) else {}
        if self.units:
            units = list(map(_unit, group))
            if None not in units:
                doc["units"] = dict(zip(tags, units, strict=True))
            elif u := {t: unit for t, unit in zip(tags, units, strict=True) if unit is not None}:
                doc["units"] = u
        if any(map(_status, group)):
            doc["status"] = {s[1]: status_name(s[4]) for s in group if s[4]}
        if any(map(_server, group)):
            doc["server_ts"] = {s[1]: self._server_ts(s[8]) for s in group if s[8]}
        if words:
            doc["states"] = words
        try:
            return orjson.dumps(doc)
        except orjson.JSONEncodeError:
            doc["values"] = {t: finite(v) for t, v in values.items()}
            return _std_encode(doc).encode()

    def _small_device_payload(self, header: str, ts: int, group: list[Sample],
                              words: dict[str, str] | None = None) -> bytes:
        keys, key = self._keys.get, self._key  # a JSON string is never empty: `or` only on a miss
        values = ",".join([f"{keys(s[1]) or key(s[1])}:{json_value(s[2])}" for s in group])
        bad = ",".join([f'{keys(s[1]) or key(s[1])}:"{_QUALITY[s[3]]}"' for s in group if s[3]])
        units = ""
        if self.units:
            u = ",".join([f"{keys(s[1]) or key(s[1])}:{keys(s[7]) or key(s[7])}" for s in group if s[7] is not None])
            if u:
                units = f',"units":{{{u}}}'
        if any(map(_status, group)):
            u = ",".join([f'{keys(s[1]) or key(s[1])}:"{status_name(s[4])}"' for s in group if s[4]])
            units += f',"status":{{{u}}}'
        if any(map(_server, group)):
            u = ",".join([f'{keys(s[1]) or key(s[1])}:"{self._server_ts(s[8])}"' for s in group if s[8]])
            units += f',"server_ts":{{{u}}}'
        if words:
            units += f',"states":{_std_encode(words)}'
        return f'{{"ts":"{self._ts(ts)}",{header},"values":{{{values}}},"quality":{{{bad}}}{units}}}'.encode()


def _words(maps: ValueMaps | None, group: list[Sample]) -> dict[str, str] | None:
    """tag -> its value's word, for the tags of ``group`` that have one (None when none has)."""
    if not maps:
        return None
    out = {}
    for s in group:
        m = maps.get((s[0], s[1]))
        if m is not None and (word := state_word(m, s[2])) is not None:
            out[s[1]] = word
    return out or None


_device_ts = itemgetter(0, 5)


def _device_ts_or_received(s: Sample) -> tuple[str, int]:
    return s[0], s[5] or s[6]


def _first(pair: tuple[str, int]) -> str:
    return pair[0]


def _split_repeats(group: list[Sample]) -> list[list[Sample]]:
    """The first occurrence of each tag in the first part, the second in the next one, and so on."""
    parts: list[list[Sample]] = []
    seen: list[set[str]] = []
    for s in group:
        k = 0
        while k < len(parts) and s[1] in seen[k]:
            k += 1
        if k == len(parts):
            parts.append([])
            seen.append(set())
        parts[k].append(s)
        seen[k].add(s[1])
    return parts
