"""What the gateway last reported for every tag, and a short history per tag for sparklines.

Fed by the pipeline after processing (so values are engineering values, as the sinks get them). The
per-batch cost is one dict store per sample; the history is sampled once a second by the runtime's
housekeeping, not per sample, and only when something shows it (``history_points=0`` keeps none).

The history is a ring of the last ``history_points`` seconds shared by every tag: per second and source,
one ``array('d')`` holding each tag's value at its position in ``by_source[source]`` (NaN: no numeric
value then). Positions are stable because a source's tags are only ever added, never removed one by one.
That is 8 bytes per tag and second instead of a deque of boxed floats per tag (~3 KB per tag), and a
sample is one C-level pass per source. Doubles, not floats: the API returns exactly the values reported.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from operator import itemgetter

from gateway.model import Quality, Sample

HISTORY_POINTS = 60

_NAN = math.nan
_BAD = Quality.BAD
_key = itemgetter(0, 1)  # (device, tag) of a sample


@dataclass(frozen=True, slots=True)
class TagView:
    source: str
    device: str
    sample: Sample
    history: tuple[float, ...]


def _point(s: Sample) -> float:
    """One tag's sparkline value, NaN when it has none; the slow path of ``sample_history``."""
    v = s[2]
    if s[3] is _BAD or v is None or isinstance(v, str | list):
        return _NAN
    try:
        return float(v)
    except OverflowError:  # an int beyond a double's range
        return _NAN


class LiveTags:
    def __init__(self, history_points: int = HISTORY_POINTS) -> None:
        self.by_source: dict[str, dict[tuple[str, str], Sample]] = {}
        # per source: its tag count when grouped, and each device's (device, tag) keys in recording order
        self._groups: dict[str, tuple[int, dict[str, list[tuple[str, str]]]]] = {}
        self._points = history_points
        self._ring: list[dict[str, array[float]]] = [{} for _ in range(history_points)]
        self._ticks = 0  # seconds sampled so far; the next goes to _ring[_ticks % _points]

    def record(self, source: str, samples: list[Sample]) -> None:
        last = self.by_source.get(source)
        if last is None:
            last = self.by_source[source] = {}
        last.update(zip(map(_key, samples), samples, strict=True))  # one C-level pass: runs for every sample

    def forget_source(self, source: str) -> None:
        """A source removed by a reload: its tags leave the page and the API."""
        self.by_source.pop(source, None)
        self._groups.pop(source, None)
        for second in self._ring:
            second.pop(source, None)  # its positions would be reused by a source of the same name

    def per_device(self, source: str) -> dict[str, list[Sample]]:
        """The last sample of each of ``source``'s tags, grouped by device. The grouping is kept and redone only
        when the source gained tags (they are never removed one by one), so a status check costs C-level
        lookups per tag instead of a Python step per tag: 10,000 tags in well under a millisecond."""
        tags = self.by_source.get(source)
        if not tags:
            return {}
        kept = self._groups.get(source)
        if kept is None or kept[0] != len(tags):
            groups: dict[str, list[tuple[str, str]]] = {}
            for key in tags:
                groups.setdefault(key[0], []).append(key)
            kept = self._groups[source] = (len(tags), groups)
        get = tags.__getitem__
        return {device: list(map(get, keys)) for device, keys in kept[1].items()}

    def sample_history(self) -> None:
        """Append every numeric tag's current value to its sparkline (called once a second)."""
        if not self._points:
            return
        second: dict[str, array[float]] = {}
        for source, tags in self.by_source.items():
            try:  # inline, not _point per tag: this is most of the housekeeping's work
                second[source] = array("d", [
                    _NAN if s[3] is _BAD or (v := s[2]) is None or isinstance(v, str | list) else v
                    for s in tags.values()])
            except OverflowError:
                second[source] = array("d", map(_point, tags.values()))
        self._ring[self._ticks % self._points] = second
        self._ticks += 1

    def _history(self, source: str, position: int) -> tuple[float, ...]:
        n, end = self._points, self._ticks
        out = []
        for t in range(max(0, end - n), end):  # oldest first
            values = self._ring[t % n].get(source)
            if values is not None and position < len(values):
                v = values[position]
                if v == v:  # NaN: no numeric value that second
                    out.append(v)
        return tuple(out)

    def count(self) -> int:
        return sum(len(t) for t in self.by_source.values())

    def select(self, text: str = "", offset: int = 0, limit: int | None = None,
               history: bool = False) -> tuple[int, list[TagView]]:
        """Tags whose ``source.device.tag`` contains ``text`` (case-insensitive), sorted, one page of them."""
        needle = text.lower()
        keys = sorted(
            (source, device, tag, position)  # position: where the tag's history is; never decides the order
            for source, tags in self.by_source.items()
            for position, (device, tag) in enumerate(tags)
            if not needle or needle in f"{source}.{device}.{tag}".lower()
        )
        total = len(keys)
        page = keys[offset: None if limit is None else offset + limit]
        out = []
        for source, device, tag, position in page:
            h = self._history(source, position) if history else ()
            out.append(TagView(source, device, self.by_source[source][device, tag], h))
        return total, out
