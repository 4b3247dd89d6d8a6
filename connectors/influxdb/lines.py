"""Samples -> InfluxDB line protocol, built per batch with cached, pre-escaped series prefixes.

Line protocol has no arrays: an array or matrix value is written as a string field holding its JSON
text (``value="[1,2,3]"``). An OPC-UA server timestamp, when a tag carries one, is an integer field
``server_ts`` (nanoseconds since the epoch; ``<tag>_server_ts`` in the per-device layout). A point's
time outside what line protocol holds (before 1970, beyond 64 bits) is replaced by the gateway's
receive time, so one device clock cannot get a whole write refused.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from itertools import repeat
from typing import NamedTuple

from connectors.influxdb.config import InfluxSinkConfig
from gateway.config.site import SiteConfig
from gateway.model import Batch, Quality, Value
from gateway.values import array_json

_DIVISOR = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
_QUALITY = {Quality.GOOD: "good", Quality.UNCERTAIN: "uncertain", Quality.BAD: "bad"}
_isfinite = math.isfinite
_I64_MAX = 2**63 - 1
# the quality as an integer field: alone (no writable value), after a value, or as a per-tag field value
_QUALITY_INT = {q: f"{int(q)}i" for q in Quality}
_QUALITY_ONLY = {q: f" quality={int(q)}i" for q in Quality}
_QUALITY_SUFFIX = {q: f",quality={int(q)}i" for q in Quality}


def _escape_measurement(s: str) -> str:
    return s.replace("\\", "\\\\").replace(",", "\\,").replace(" ", "\\ ").replace("\n", "\\n")


def escape_key(s: str) -> str:
    """Tag keys, tag values and field keys: commas, equals signs and spaces are escaped."""
    return (s.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")
            .replace("\n", "\\n"))


def field_value(v: Value) -> str | None:
    """A line-protocol field value, or None when the value cannot be written (None, NaN, inf)."""
    t = type(v)
    if t is float:
        return repr(v) if _isfinite(v) else None  # type: ignore[arg-type]
    if t is bool:
        return "true" if v else "false"
    if t is int:
        return f"{v}i"
    if v is None:
        return None
    text = array_json(v) if type(v) is list else str(v)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _point_time(ts: int, gateway_ts: int) -> int:
    """``ts``, or the receive time (or now) when line protocol cannot hold it."""
    if 0 <= ts <= _I64_MAX:
        return ts
    return gateway_ts if 0 <= gateway_ts <= _I64_MAX else time.time_ns()


class Lines(NamedTuple):
    """The points of one write. Line ``k`` carries ``counts[k]`` consecutive samples of one batch, the
    first at position ``firsts[k]`` of the write's samples counted across its batches in order (what
    maps a point the server rejects back to the samples it came from)."""

    lines: list[str]
    counts: list[int]
    firsts: list[int]


class LineBuilder:
    """Builds the ``Lines`` of a write; every point is one line.

    The per-sample work is a few dict lookups and one string concatenation: series prefixes, ``key=``
    field prefixes and the last timestamp's text are cached, and floats (the common value) skip the
    generic ``field_value`` dispatch.
    """

    def __init__(self, config: InfluxSinkConfig, site: SiteConfig) -> None:
        self.config = config
        self._site = {"enterprise": site.enterprise, "site": site.site, "area": site.area, "line": site.line}
        self._div = _DIVISOR[config.precision]
        self._gateway_time = config.time_basis == "gateway"
        self._prefixes: dict[tuple[str, str, str, Quality], str] = {}
        self._quality_tag = config.quality == "tag"
        self._quality_field = config.quality == "field"
        self._fields: dict[str, str] = {}  # tag -> "escaped=" (and "<tag>_quality=")

    def _prefix(self, source: str, device: str, tag: str, quality: Quality) -> str:
        """``measurement,k=v,...`` with tags sorted by key (the server's fast path); cached per series."""
        key = (source, device, tag, quality)
        p = self._prefixes.get(key)
        if p is None:
            names = {**self._site, "source": source, "device": device, "tag": tag}
            parts = [_escape_measurement(self.config.measurement.format(**names))]
            tags = [(k, t.format(**names)) for k, t in self.config.tags.items()]
            if self.config.fields == "value":
                tags.append(("tag", tag))
            if self._quality_tag:
                tags.append(("quality", _QUALITY[quality]))
            # an empty tag value is invalid line protocol: leave the tag out
            parts.extend(f"{escape_key(k)}={escape_key(v)}" for k, v in sorted(tags) if v)
            p = ",".join(parts)
            if len(self._prefixes) < 1_000_000:
                self._prefixes[key] = p
        return p

    def _field(self, name: str) -> str:
        """``escaped_name=``, cached (bounded like the prefixes: tag names are configuration, not data)."""
        f = self._fields.get(name)
        if f is None:
            f = escape_key(name) + "="
            if len(self._fields) < 1_000_000:
                self._fields[name] = f
        return f

    def build(self, batches: Sequence[Batch]) -> Lines:
        out = Lines([], [], [])
        base = 0
        for b in batches:
            if self.config.fields == "value":
                self._per_sample(b, base, out)
            else:
                self._per_device(b, base, out)
            base += len(b.samples)
        return out

    def _per_sample(self, batch: Batch, base: int, out: Lines) -> None:
        add, first = out.lines.append, out.firsts.append  # bound once: the per-sample loop is the hot path
        before = len(out.lines)
        q_field, gateway_time, div = self._quality_field, self._gateway_time, self._div
        prefixes, source = self._prefixes, batch.source
        last_ts: tuple[int, int] | None = None
        ts = ""
        for i, s in enumerate(batch.samples, base):
            v = s[2]
            if type(v) is float:
                fv: str | None = repr(v) if _isfinite(v) else None
            else:
                fv = field_value(v)
            if fv is None and not q_field:
                continue
            q = s[3]
            p = prefixes.get((source, s[0], s[1], q)) or self._prefix(source, s[0], s[1], q)
            if (s[5], s[6]) != last_ts:  # samples of one poll share their timestamps: format them once
                last_ts = s[5], s[6]
                ts = " " + str(_point_time(s[6] if gateway_time else (s[5] or s[6]), s[6]) // div)
            srv = f",server_ts={s[8]}i" if s[8] else ""
            if fv is None:
                add(p + _QUALITY_ONLY[q] + srv + ts)
            elif q_field:
                add(p + " value=" + fv + _QUALITY_SUFFIX[q] + srv + ts)
            else:
                add(p + " value=" + fv + srv + ts)
            first(i)
        out.counts.extend(repeat(1, len(out.lines) - before))  # a point per sample

    def _per_device(self, batch: Batch, base: int, out: Lines) -> None:
        lines, counts, firsts = out
        split_q, q_field = self._quality_tag, self._quality_field
        samples = batch.samples
        n = len(samples)
        i = 0
        names, field = self._fields, self._field
        while i < n:
            first = samples[i]
            dev, q, sts, gts = first[0], first[3], first[5], first[6]
            fields: list[str] = []
            seen: set[str] = set()
            j = i
            while j < n:
                s = samples[j]
                tag = s[1]
                if s[0] != dev or s[5] != sts or s[6] != gts or tag in seen or (split_q and s[3] != q):
                    break
                seen.add(tag)
                v = s[2]
                if type(v) is float:
                    if _isfinite(v):
                        fields.append((names.get(tag) or field(tag)) + repr(v))
                else:
                    fv = field_value(v)
                    if fv is not None:
                        fields.append((names.get(tag) or field(tag)) + fv)
                if q_field:
                    qname = tag + "_quality"
                    fields.append((names.get(qname) or field(qname)) + _QUALITY_INT[s[3]])
                if s[8]:
                    fields.append(field(tag + "_server_ts") + f"{s[8]}i")
                j += 1
            if fields:
                p = self._prefixes.get((batch.source, dev, "", q)) or self._prefix(batch.source, dev, "", q)
                ts = _point_time(gts if self._gateway_time else (sts or gts), gts) // self._div
                lines.append(p + " " + ",".join(fields) + " " + str(ts))
                counts.append(j - i)
                firsts.append(base + i)
            i = j
