"""Topics and JSON payloads built from samples, per batch, without json.dumps per sample.

Layout ``tag``: one message per sample on ``…/{device}/{tag}``::

    {"value": 21.5, "quality": "good", "ts": "2026-11-23T21:07:51.123Z", "unit": "degC"}

Layout ``device``: one message per device and scan (samples of one device sharing a timestamp)::

    {"ts": "2026-11-23T21:07:51.123Z", "source": "plc1", "device": "filler",
     "values": {"temperature": 21.5, "running": true, "state": "RUN"},
     "quality": {"pressure": "bad"},
     "units": {"temperature": "degC"}}

``values`` holds every tag of the scan (``null`` for a value that could not be read); ``quality`` lists
only the tags whose quality is not good (an empty object when all are good), so the common case stays
small; ``units`` is present when the sink's ``units`` option is on and some tag has one.
Timestamps are the device's (``source_ts``), else the gateway's receive time, in UTC with milliseconds.
Non-finite floats (NaN, inf) are not valid JSON and are sent as ``null``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence

from gateway.config.site import SiteConfig
from gateway.model import Batch, Quality, Sample, Value

_QUALITY = {Quality.GOOD: "good", Quality.UNCERTAIN: "uncertain", Quality.BAD: "bad"}
_isfinite = math.isfinite


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
    return json.dumps(v)


def _safe(segment: str) -> str:
    # a name must not turn into a wildcard of someone's subscription
    return segment.replace("+", "_").replace("#", "_")


class TimestampFormatter:
    """ns since the epoch -> ``2026-11-23T21:07:51.123Z``; a batch shares one timestamp, so cache it."""

    __slots__ = ("_last", "_last_ns")

    def __init__(self) -> None:
        self._last_ns = -1
        self._last = ""

    def __call__(self, ns: int) -> str:
        if ns == self._last_ns:
            return self._last
        ms = ns // 1_000_000
        s = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"
        self._last_ns, self._last = ns, s
        return s


class Encoder:
    """Turns batches into ``(topic, payload)`` pairs for one sink's layout and topic template."""

    def __init__(self, template: str, site: SiteConfig, *, layout: str, units: bool) -> None:
        self.layout = layout
        self.units = units
        self._template = template
        self._site = {"enterprise": site.enterprise, "site": site.site, "area": site.area, "line": site.line}
        self._topics: dict[tuple[str, str, str], str] = {}
        self._keys: dict[str, str] = {}
        self._ts = TimestampFormatter()

    def topic(self, source: str, device: str, tag: str = "") -> str:
        key = (source, device, tag)
        t = self._topics.get(key)
        if t is None:
            t = self._template.format(**self._site, source=_safe(source), device=_safe(device), tag=_safe(tag))
            if len(self._topics) < 1_000_000:
                self._topics[key] = t
        return t

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
        for s in batch.samples:
            unit = f',"unit":{json.dumps(s.unit)}' if units and s.unit is not None else ""
            payload = (f'{{"value":{json_value(s.value)},"quality":"{_QUALITY[s.quality]}",'
                       f'"ts":"{fmt(s.source_ts or s.gateway_ts)}"{unit}}}')
            out.append((topic(source, s.device, s.tag), payload.encode()))

    def _per_device(self, batch: Batch, out: list[tuple[str, bytes]]) -> None:
        samples = batch.samples
        n = len(samples)
        i = 0
        while i < n:
            first = samples[i]
            dev, ts = first.device, first.source_ts or first.gateway_ts
            j = i + 1
            seen = {first.tag}
            while j < n:
                s = samples[j]
                if s.device != dev or (s.source_ts or s.gateway_ts) != ts or s.tag in seen:
                    break
                seen.add(s.tag)
                j += 1
            out.append((self.topic(batch.source, dev), self._device_payload(batch.source, samples[i:j], ts)))
            i = j

    def _device_payload(self, source: str, group: list[Sample], ts: int) -> bytes:
        key = self._key
        values = ",".join([f"{key(s.tag)}:{json_value(s.value)}" for s in group])
        bad = ",".join([f'{key(s.tag)}:"{_QUALITY[s.quality]}"' for s in group if s.quality])
        units = ""
        if self.units:
            u = ",".join([f"{key(s.tag)}:{json.dumps(s.unit)}" for s in group if s.unit is not None])
            if u:
                units = f',"units":{{{u}}}'
        return (f'{{"ts":"{self._ts(ts)}","source":{key(source)},"device":{key(group[0].device)},'
                f'"values":{{{values}}},"quality":{{{bad}}}{units}}}').encode()
