"""The processing stage: per-tag scale/offset, clamp, deadband and report-on-change, applied per batch.

Built once per source from its tag configs. Each tag that needs work gets a closure specialised to
exactly what it needs (no per-sample branching on settings it does not use); the per-sample cost of
a configured tag is two dict lookups and one call, of any other tag one or two lookups. A source
with nothing to process gets no ``Processor`` at all (``for_source`` returns None).

Rules, in order, for each configured tag:

* ``BAD`` samples pass unchanged (their value is whatever the device left there) and are never
  filtered; they count as reported, so the next good sample is a quality change.
* Numeric (int/float, not bool) values become ``raw * scale + offset``, then are clamped into
  [min, max] when ``clamp`` is set. Other values are left alone.
* With ``deadband``, ``deadband_percent`` or ``on_change``, a sample is reported when it is the first,
  when its quality differs from the last reported one, when ``max_silence`` has passed since the last
  report, or when its value moved by more than the deadband from the last *reported* value (equal
  values count as no move). With both deadbands the larger threshold applies. Non-numeric values are
  reported when they differ. Silence is timed on the monotonic clock: wall time may jump.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

from gateway.config.base import SourceConfigBase, TagBase
from gateway.model import Batch, Quality, Sample, Value
from gateway.samples import reading, with_value
from gateway.watch import TagWatch

TagFn = Callable[[Sample, float], Sample | None]
"""``fn(sample, monotonic_now)``: the processed sample, ``sample`` itself when untouched, None if filtered."""

_BAD = Quality.BAD


def _transform_fn(scale: float, offset: float, lo: float | None, hi: float | None) -> TagFn:
    """Scale/offset and/or clamp, no filtering."""
    linear = scale != 1.0 or offset != 0.0
    if lo is None:
        lo = -math.inf
    if hi is None:
        hi = math.inf

    if not linear:

        def clamp_only(s: Sample, now: float) -> Sample | None:
            v = s[2]
            tv = type(v)
            if (tv is float or tv is int) and s[3] != _BAD:
                if v < lo:  # type: ignore[operator]  # int/float checked above
                    return with_value(s, lo)
                if v > hi:  # type: ignore[operator]
                    return with_value(s, hi)
            return s

        return clamp_only

    def scaled(s: Sample, now: float) -> Sample | None:
        d, t, v, q, st, sts, gts, u, srv = s
        tv = type(v)
        if (tv is float or tv is int) and q != _BAD:
            v = v * scale + offset  # type: ignore[operator]
            if v < lo:
                v = lo
            elif v > hi:
                v = hi
            return reading(d, t, v, q, st, sts, gts, u, srv)
        return s

    return scaled


def _filter_fn(
    scale: float,
    offset: float,
    lo: float | None,
    hi: float | None,
    deadband: float,
    percent: float,
    silence: float,
) -> TagFn:
    """Optional scale/offset/clamp, then deadband / report-on-change against the last reported value."""
    linear = scale != 1.0 or offset != 0.0
    bounded = lo is not None or hi is not None
    low = -math.inf if lo is None else lo
    high = math.inf if hi is None else hi
    ratio = percent / 100.0
    # state of the last *reported* sample; last_q None means nothing reported yet
    last_v: Value = None
    last_num = False
    last_q: Quality | None = None
    last_t = 0.0

    def filtered(s: Sample, now: float) -> Sample | None:
        nonlocal last_v, last_num, last_q, last_t
        q = s[3]
        if q == _BAD:
            last_q = q  # so the next good sample is reported as a quality change
            return s
        raw = v = s[2]
        tv = type(v)
        num = tv is float or tv is int
        if num and (linear or bounded):
            if linear:
                v = v * scale + offset  # type: ignore[operator]  # int/float checked above
            if v < low:  # type: ignore[operator]
                v = low
            elif v > high:  # type: ignore[operator]
                v = high
        if q == last_q and now - last_t < silence:
            if num and last_num:
                threshold = deadband
                if ratio:
                    rel = abs(last_v) * ratio  # type: ignore[arg-type]  # last_num: int/float
                    if rel > threshold:
                        threshold = rel
                # suppressed only on a true "<=": a NaN compares false with everything, so it is reported
                if abs(v - last_v) <= threshold:  # type: ignore[operator]
                    return None
            elif v == last_v and type(v) is type(last_v):
                return None
        last_v = v
        last_num = num
        last_q = q
        last_t = now
        # the new Sample is built only once the value is known to be reported
        return s if v is raw else with_value(s, v)

    return filtered


def tag_fn(tag: TagBase, watch: TagWatch | None = None) -> TagFn | None:
    """The per-sample function for ``tag``, or None when it passes untouched. A watched tag's engineering
    value goes to ``watch`` before any filtering: alarms and stale detection see every reading."""
    if not tag.needs_processing:
        return None
    lo, hi = (tag.min, tag.max) if tag.clamp else (None, None)
    filtering = tag.deadband is not None or tag.deadband_percent is not None or tag.on_change
    silence = math.inf if tag.max_silence is None else tag.max_silence
    if watch is None or not tag.watched:
        if not filtering:
            return _transform_fn(tag.scale, tag.offset, lo, hi)
        return _filter_fn(tag.scale, tag.offset, lo, hi, tag.deadband or 0.0, tag.deadband_percent or 0.0, silence)
    transform = (_transform_fn(tag.scale, tag.offset, lo, hi)
                 if tag.scale != 1.0 or tag.offset != 0.0 or tag.clamp else None)
    filt = (_filter_fn(1.0, 0.0, None, None, tag.deadband or 0.0, tag.deadband_percent or 0.0, silence)
            if filtering else None)
    see = watch.see

    def watched(s: Sample, now: float) -> Sample | None:
        if transform is not None:
            s = transform(s, now) or s  # a transform never filters
        s = see(s, now)
        return s if filt is None else filt(s, now)

    return watched


class Processor:
    """Applies one source's per-tag processing to its batches. Not thread-safe: one per source task."""

    def __init__(
        self, tags: Iterable[tuple[str, TagBase]], *, clock: Callable[[], float] = time.monotonic, source: str = ""
    ) -> None:
        self._clock = clock
        tags = list(tags)
        watch = TagWatch(source, tags)
        self.watch: TagWatch | None = watch if len(watch) else None
        """Alarms and stale detection of the watched tags; ticked by the runtime once a second."""
        # device -> tag -> fn; devices without any processed tag are absent, so they cost one lookup
        self._fns: dict[str, dict[str, TagFn]] = {}
        for device, tag in tags:
            fn = tag_fn(tag, self.watch)
            if fn is not None:
                self._fns.setdefault(device, {})[tag.name] = fn
        self.filtered = 0

    @classmethod
    def for_source(
        cls, config: SourceConfigBase, *, clock: Callable[[], float] = time.monotonic, source: str = ""
    ) -> Processor | None:
        """A processor for ``config``'s tags, or None when none of them needs processing."""
        tags = list(config.iter_tags())
        if not any(tag.needs_processing for _, tag in tags):
            return None
        return cls(tags, clock=clock, source=source)

    def apply(self, batch: Batch) -> Batch | None:
        """``batch`` processed: the same object if nothing changed, None if every sample was filtered."""
        fns = self._fns
        now = self._clock()
        out: list[Sample] = []
        append = out.append
        changed = False
        for s in batch.samples:
            device_fns = fns.get(s[0])
            if device_fns is not None:
                fn = device_fns.get(s[1])
                if fn is not None:
                    r = fn(s, now)
                    if r is not s:
                        changed = True
                        if r is None:
                            continue
                        s = r
            append(s)
        self.filtered += len(batch.samples) - len(out)
        watch = self.watch
        if watch is not None and watch.out:  # alarms raised or cleared by these values
            out += watch.out
            watch.out = []
            changed = True
        if not changed:
            return batch
        return Batch(batch.source, out) if out else None
