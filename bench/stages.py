"""The gateway's stage histogram (``edgegw_stage_seconds``, ``gateway.stages``) as the bench reports it."""

from __future__ import annotations

import math
from typing import Any

from gateway.stages import STAGES


def snapshot(registry: Any) -> dict[str, list[tuple[float, float]]]:
    """Cumulative (upper bound, count) buckets per stage, as the registry holds them now."""
    out: dict[str, list[tuple[float, float]]] = {s: [] for s in STAGES}
    for family in registry.collect():
        if family.name != "edgegw_stage_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket") and sample.labels.get("stage") in out:
                out[sample.labels["stage"]].append((float(sample.labels["le"]), sample.value))
    return out


def since(after: dict[str, list[tuple[float, float]]], before: dict[str, list[tuple[float, float]]] | None,
          ) -> dict[str, list[tuple[float, float]]]:
    """What was observed between two snapshots (``before`` None: since the start)."""
    if before is None:
        return after
    return {s: [(le, n - dict(before.get(s, [])).get(le, 0.0)) for le, n in buckets] for s, buckets in after.items()}


def quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """The q-quantile (s) by linear interpolation within its bucket, as Prometheus' histogram_quantile."""
    total = buckets[-1][1] if buckets else 0.0
    if not total:
        return math.nan
    rank, lo, below = q * total, 0.0, 0.0
    for le, n in buckets:
        if n >= rank:
            if math.isinf(le):
                return lo
            return lo + (le - lo) * ((rank - below) / (n - below) if n > below else 1.0)
        lo, below = le, n
    return lo


def summary(stages: dict[str, list[tuple[float, float]]]) -> str:
    """``stage p50/p99 ms (count)`` for each stage that was observed, one string for a notes column."""
    parts = []
    for name in STAGES:
        buckets = stages.get(name) or []
        n = buckets[-1][1] if buckets else 0
        if n:
            parts.append(f"{name} {quantile(buckets, 0.5) * 1000:.1f}/{quantile(buckets, 0.99) * 1000:.1f} ms"
                         f" ({n:.0f})")
    return "; ".join(parts) or "none observed"
