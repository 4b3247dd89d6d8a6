"""Tags watched over time: stale detection (a frozen sensor) and alarm rules.

Both need the clock as much as the values: a value an OPC-UA server never changes sends no notification,
and a rule with a delay holds between two polls. So a source's ``TagWatch`` sees every value of its watched
tags (``see``, called by the processing stage before any deadband filtering, on engineering values) and is
ticked once a second by the runtime (``tick``); both return samples, which go through the spool like any:

- **stale**: a value unchanged for ``stale_after`` while the device answers becomes UNCERTAIN with
  ``UncertainLastUsableValue``: the tick emits the last value so marked the moment it turns stale (a
  subscription sends nothing then), and later readings of the same value carry the mark too. The first
  changed value is GOOD again. A BAD sample (no answer) ends the episode: a device that answers again
  starts a new one.
- **alarms**: each rule's condition is checked on every value (numbers and booleans, not BAD ones); a rule
  holds once its condition has been true for ``delay``. The tag's alarm is the highest severity among
  the rules that hold; every change of it is a sample of tag ``<tag>.alarm`` whose value is the severity
  rank (``gateway.config.base.SEVERITIES``: 1 low .. 4 critical, 0 cleared), stamped when it happened.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gateway.config.base import SEVERITIES, AlarmRule, TagBase
from gateway.model import Quality, Sample, Value
from gateway.samples import reading
from gateway.status_codes import UNCERTAIN_LAST_USABLE_VALUE

ALARM_SUFFIX = ".alarm"
ALARM_STATES: dict[int, str] = {0: "cleared", **{i + 1: s for i, s in enumerate(SEVERITIES)}}
"""The words of an alarm sample's value."""

_BAD = Quality.BAD
_UNCERTAIN = Quality.UNCERTAIN
_RANK = {s: i + 1 for i, s in enumerate(SEVERITIES)}


@dataclass(frozen=True, slots=True)
class ActiveAlarm:
    source: str
    device: str
    tag: str
    severity: str
    text: str
    """The message of the rule that holds, or the rule itself (``above 80 for 5 s``)."""
    since_ns: int
    value: Value


ValueMaps = dict[tuple[str, str], dict[int, str]]
"""``(device, tag) -> {number: word}`` of one source: the tags' ``states`` and their alarm tags' words."""


def value_maps(tags: Iterable[tuple[str, TagBase]]) -> ValueMaps:
    out: ValueMaps = {}
    for device, tag in tags:
        if tag.states:
            out[device, tag.name] = tag.states
        if tag.alarm:
            out[device, tag.name + ALARM_SUFFIX] = ALARM_STATES
    return out


def state_word(states: dict[int, str], value: Value) -> str | None:
    """The word for ``value`` (an integer, an integral float, a bool) in ``states``, if it has one."""
    if isinstance(value, bool):
        return states.get(int(value))
    if isinstance(value, int):
        return states.get(value)
    if isinstance(value, float) and value.is_integer():
        return states.get(int(value))
    return None


def _number(v: Value) -> float | None:
    t = type(v)
    if t is float or t is int or t is bool:
        return float(v)  # type: ignore[arg-type]  # a number, checked above
    return None


def _holds(rule: AlarmRule, x: float) -> bool:
    if rule.above is not None:
        return x > rule.above
    if rule.below is not None:
        return x < rule.below
    if rule.equals is not None:
        return x == rule.equals
    return x != rule.not_equals


class _Watched:
    __slots__ = ("alarm_since", "changed_at", "device", "last", "pending", "rank", "rules", "stale",
                 "stale_after", "tag")

    def __init__(self, device: str, tag: TagBase) -> None:
        self.device = device
        self.tag = tag.name
        self.rules = tag.alarm
        self.stale_after = tag.stale_after
        self.last: Sample | None = None
        """The last sample seen, as seen (engineering value)."""
        self.changed_at: float | None = None
        """Monotonic time the value last changed; None while the device does not answer."""
        self.stale = False
        self.pending: list[float | None] = [None] * len(tag.alarm)
        """Per rule: since when its condition has been true (monotonic), None when false."""
        self.rank = 0
        self.alarm_since = 0


class TagWatch:
    """Stale detection and alarms for one source's watched tags. Not thread-safe: the source's task and
    the runtime's housekeeping share the event loop."""

    def __init__(self, source: str, tags: Iterable[tuple[str, TagBase]]) -> None:
        self.source = source
        self._tags: dict[tuple[str, str], _Watched] = {
            (device, tag.name): _Watched(device, tag) for device, tag in tags if tag.watched}
        self.out: list[Sample] = []
        """Alarm samples ``see`` produced; the processing stage appends them to the batch and clears it."""

    def __len__(self) -> int:
        return len(self._tags)

    def see(self, s: Sample, now: float) -> Sample:
        """``s`` (an engineering value of a watched tag), marked UNCERTAIN when it is stale."""
        w = self._tags.get((s[0], s[1]))
        if w is None:
            return s
        q, v = s[3], s[2]
        if q is _BAD:
            w.changed_at, w.stale, w.last = None, False, s
            return s
        prev = w.last
        if prev is None or prev[3] is _BAD or prev[2] != v or type(prev[2]) is not type(v):
            w.changed_at, w.stale = now, False
        elif w.stale_after is not None and w.changed_at is not None and now - w.changed_at >= w.stale_after:
            w.stale = True
        if w.stale and q is not _UNCERTAIN:
            s = reading(s[0], s[1], v, _UNCERTAIN, UNCERTAIN_LAST_USABLE_VALUE, s[5], s[6], s[7], s[8])
        w.last = s
        if w.rules:
            x = _number(v)
            if x is not None:
                for i, rule in enumerate(w.rules):
                    if _holds(rule, x):
                        if w.pending[i] is None:
                            w.pending[i] = now
                    else:
                        w.pending[i] = None
                self._alarm(w, now, s[5] or s[6])
        return s

    def _alarm(self, w: _Watched, now: float, ts: int) -> Sample | None:
        rank = 0
        for rule, since in zip(w.rules, w.pending, strict=True):
            if since is not None and now - since >= rule.delay:
                rank = max(rank, _RANK[rule.severity])
        if rank == w.rank:
            return None
        if w.rank == 0:
            w.alarm_since = ts
        w.rank = rank
        alarm = reading(w.device, w.tag + ALARM_SUFFIX, rank, Quality.GOOD, 0, ts, ts, None)
        self.out.append(alarm)
        return alarm

    def tick(self, now: float, now_ns: int) -> list[Sample]:
        """What time alone decided since the last tick: values turned stale, delayed alarms raised."""
        out: list[Sample] = []
        for w in self._tags.values():
            last = w.last
            if last is None or last[3] is _BAD:
                continue
            if (w.stale_after is not None and not w.stale and w.changed_at is not None
                    and now - w.changed_at >= w.stale_after):
                w.stale = True
                w.last = reading(last[0], last[1], last[2], _UNCERTAIN, UNCERTAIN_LAST_USABLE_VALUE, now_ns, now_ns,
                                 last[7], last[8])
                out.append(w.last)
            if w.rules and any(p is not None for p in w.pending):
                self._alarm(w, now, now_ns)
        if self.out:
            out += self.out
            self.out = []
        return out

    def is_stale(self, device: str, tag: str) -> bool:
        w = self._tags.get((device, tag))
        return w is not None and w.stale

    def active(self) -> list[ActiveAlarm]:
        """Every alarm active now, highest severity first, then oldest."""
        out = []
        for w in self._tags.values():
            if w.rank:
                holding = [r for r, p in zip(w.rules, w.pending, strict=True) if p is not None]
                top = max(holding, key=lambda r: _RANK[r.severity]) if holding else w.rules[0]
                out.append(ActiveAlarm(self.source, w.device, w.tag, SEVERITIES[w.rank - 1], top.message or top.text,
                                       w.alarm_since, w.last[2] if w.last is not None else None))
        out.sort(key=lambda a: (-_RANK[a.severity], a.since_ns))
        return out
