"""What the gateway last reported for every tag, and a short history per tag for sparklines.

Fed by the pipeline after processing (so values are engineering values, as the sinks get them). The
per-batch cost is one dict store per sample; the history is sampled once a second by the runtime's
housekeeping, not per sample.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from gateway.model import Quality, Sample

HISTORY_POINTS = 60


@dataclass(frozen=True, slots=True)
class TagView:
    source: str
    device: str
    sample: Sample
    history: tuple[float, ...]


class LiveTags:
    def __init__(self, history_points: int = HISTORY_POINTS) -> None:
        self.by_source: dict[str, dict[tuple[str, str], Sample]] = {}
        self._history: dict[tuple[str, str, str], deque[float]] = {}
        self._points = history_points

    def record(self, source: str, samples: list[Sample]) -> None:
        last = self.by_source.get(source)
        if last is None:
            last = self.by_source[source] = {}
        for s in samples:
            last[s[0], s[1]] = s

    def forget_source(self, source: str) -> None:
        """A source removed by a reload: its tags leave the page and the API."""
        self.by_source.pop(source, None)
        for key in [k for k in self._history if k[0] == source]:
            del self._history[key]

    def sample_history(self) -> None:
        """Append every numeric tag's current value to its sparkline (called once a second)."""
        hist = self._history
        for source, tags in self.by_source.items():
            for (device, tag), s in tags.items():
                v = s[2]
                if s[3] is Quality.BAD or isinstance(v, str) or v is None:
                    continue
                key = (source, device, tag)
                d = hist.get(key)
                if d is None:
                    d = hist[key] = deque(maxlen=self._points)
                d.append(float(v))

    def count(self) -> int:
        return sum(len(t) for t in self.by_source.values())

    def select(self, text: str = "", offset: int = 0, limit: int | None = None,
               history: bool = False) -> tuple[int, list[TagView]]:
        """Tags whose ``source.device.tag`` contains ``text`` (case-insensitive), sorted, one page of them."""
        needle = text.lower()
        keys = sorted(
            (source, device, tag)
            for source, tags in self.by_source.items()
            for device, tag in tags
            if not needle or needle in f"{source}.{device}.{tag}".lower()
        )
        total = len(keys)
        page = keys[offset: None if limit is None else offset + limit]
        out = []
        for source, device, tag in page:
            h = tuple(self._history.get((source, device, tag), ())) if history else ()
            out.append(TagView(source, device, self.by_source[source][device, tag], h))
        return total, out
