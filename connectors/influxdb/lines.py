"""Samples -> InfluxDB line protocol, built per batch with cached, pre-escaped series prefixes."""

from __future__ import annotations

import math
from collections.abc import Sequence

from connectors.influxdb.config import InfluxSinkConfig
from gateway.config.site import SiteConfig
from gateway.model import Batch, Quality, Value

_DIVISOR = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
_QUALITY = {Quality.GOOD: "good", Quality.UNCERTAIN: "uncertain", Quality.BAD: "bad"}
_isfinite = math.isfinite


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
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class LineBuilder:
    """Builds ``(lines, samples_per_line)`` for a write; every point is one line."""

    def __init__(self, config: InfluxSinkConfig, site: SiteConfig) -> None:
        self.config = config
        self._site = {"enterprise": site.enterprise, "site": site.site, "area": site.area, "line": site.line}
        self._div = _DIVISOR[config.precision]
        self._gateway_time = config.time_basis == "gateway"
        self._prefixes: dict[tuple[str, str, str, Quality], str] = {}
        self._quality_tag = config.quality == "tag"
        self._fields: dict[str, str] = {}

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

    def _field(self, tag: str) -> str:
        f = self._fields.get(tag)
        if f is None:
            f = self._fields[tag] = escape_key(tag)
        return f

    def build(self, batches: Sequence[Batch]) -> tuple[list[str], list[int]]:
        lines: list[str] = []
        counts: list[int] = []
        for b in batches:
            if self.config.fields == "value":
                self._per_sample(b, lines, counts)
            else:
                self._per_device(b, lines, counts)
        return lines, counts

    def _ts(self, source_ts: int, gateway_ts: int) -> int:
        return (gateway_ts if self._gateway_time else (source_ts or gateway_ts)) // self._div

    def _per_sample(self, batch: Batch, lines: list[str], counts: list[int]) -> None:
        q_mode = self.config.quality
        prefix, source = self._prefix, batch.source
        for s in batch.samples:
            v = field_value(s.value)
            fields = [] if v is None else [f"value={v}"]
            p = prefix(source, s.device, s.tag, s.quality)
            if q_mode == "field":
                fields.append(f"quality={int(s.quality)}i")
            if fields:
                lines.append(f"{p} {','.join(fields)} {self._ts(s.source_ts, s.gateway_ts)}")
                counts.append(1)

    def _per_device(self, batch: Batch, lines: list[str], counts: list[int]) -> None:
        q_mode = self.config.quality
        samples = batch.samples
        n = len(samples)
        i = 0
        field = self._field
        while i < n:
            first = samples[i]
            dev, sts, gts = first.device, first.source_ts, first.gateway_ts
            q = first.quality
            fields: list[str] = []
            seen: set[str] = set()
            j = i
            while j < n:
                s = samples[j]
                if s.device != dev or s.source_ts != sts or s.gateway_ts != gts or s.tag in seen or (
                        q_mode == "tag" and s.quality != q):
                    break
                seen.add(s.tag)
                v = field_value(s.value)
                if v is not None:
                    fields.append(f"{field(s.tag)}={v}")
                if q_mode == "field":
                    fields.append(f"{field(s.tag + '_quality')}={int(s.quality)}i")
                j += 1
            if fields:
                p = self._prefix(batch.source, dev, "", q)
                lines.append(f"{p} {','.join(fields)} {self._ts(sts, gts)}")
                counts.append(j - i)
            i = j
