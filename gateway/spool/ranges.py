"""Inclusive seq ranges ([lo, hi], ascending, disjoint): what a full sink skipped, what may be deleted."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from operator import itemgetter
from typing import Final

Gaps = list[list[int]]
"""Ascending, disjoint [lo, hi] seq ranges (inclusive) one sink skipped; mutated in place."""
_lo: Final = itemgetter(0)


def in_gaps(gaps: Sequence[Sequence[int]], seq: int) -> bool:
    i = bisect_right(gaps, seq, key=_lo) - 1
    return i >= 0 and seq <= gaps[i][1]


def outside(lo: int, hi: int, gaps: Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    """[lo, hi] minus ``gaps``, as inclusive ranges."""
    out: list[tuple[int, int]] = []
    at = lo
    for g_lo, g_hi in gaps:
        if g_hi < at:
            continue
        if g_lo > hi:
            break
        if g_lo > at:
            out.append((at, g_lo - 1))
        at = g_hi + 1
    if at <= hi:
        out.append((at, hi))
    return out


def intersect(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Intersection of two ascending lists of disjoint inclusive ranges."""
    out: list[tuple[int, int]] = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out

