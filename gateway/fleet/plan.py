"""Splitting one plant's devices into shards, one per gateway: what moves together, what it costs, and a
balance that keeps a previous plan's assignments where it can.

A *unit* is what moves as a whole: a line (every source naming that ``line``, or a source on its own) with
``--by line``; a device with ``--by device``, except that the devices of a source that cannot be split (a
serial line) stay one unit. Each unit weighs what collecting it costs, from the sources' own estimate
(``SourceConfigBase.device_loads``): values per second plus ``REQUEST_WEIGHT`` per request per second.

Balancing is deterministic (ties broken by name and gateway order). Without a previous plan: the heaviest
unit first, each onto the least loaded gateway. With one: every unit stays where it was if its gateway
still exists, units without a gateway are placed the same way, then single units move from the most to
the least loaded gateway, each move the one that evens that pair best, until every gateway is within
``TOLERANCE`` of the mean (or no move helps): so adding a gateway moves about a 1/N share of the
devices onto it and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from gateway.config.base import DeviceLoad
from gateway.config.loader import GatewayConfig

By = Literal["line", "device"]
REQUEST_WEIGHT = 8.0
"""A request costs about as much gateway CPU as 8 values: at 10,000 values/s to MQTT a value costs ~6.9 µs
all told and a Modbus request of 125 registers ~56 µs (bench/RESULTS.md, 2026-12-05 14:41, py-spy)."""
TOLERANCE = 0.10
"""Re-planning stops moving units once every gateway is within 10 % of the mean load."""


class PlanError(ValueError):
    """A plan that cannot be made as asked; the message is one line for the operator."""


def device_key(source: str, device: str) -> str:
    return f"{source}.{device}"


@dataclass(frozen=True, slots=True)
class Unit:
    key: str
    """The line's name (``--by line``), ``source.device``, or a source's name when it moves whole."""
    devices: tuple[tuple[str, str], ...]
    """``(source, device)`` of every device it holds."""
    tags: int
    values_per_s: float
    reads_per_s: float

    @property
    def weight(self) -> float:
        return self.values_per_s + REQUEST_WEIGHT * self.reads_per_s


@dataclass(slots=True)
class Shard:
    id: str
    units: list[Unit] = field(default_factory=list)

    @property
    def devices(self) -> list[tuple[str, str]]:
        return sorted(d for u in self.units for d in u.devices)

    @property
    def tags(self) -> int:
        return sum(u.tags for u in self.units)

    @property
    def values_per_s(self) -> float:
        return sum(u.values_per_s for u in self.units)

    @property
    def reads_per_s(self) -> float:
        return sum(u.reads_per_s for u in self.units)

    @property
    def weight(self) -> float:
        return sum(u.weight for u in self.units)


@dataclass(frozen=True, slots=True)
class Plan:
    by: By
    shards: list[Shard]
    moved: int | None
    """Devices whose gateway changed against the previous plan (None: there was none)."""
    kept: int = 0
    """Devices of the previous plan still in the plant (``moved`` of them changed gateway)."""
    new: int = 0
    """Devices the previous plan did not have."""
    gone: int = 0
    """Devices of the previous plan no longer in the plant."""

    @property
    def devices(self) -> int:
        return sum(len(s.devices) for s in self.shards)

    def owner(self) -> dict[str, str]:
        """``source.device`` -> gateway id."""
        return {device_key(*d): s.id for s in self.shards for d in s.devices}


def _unit(key: str, items: Iterable[tuple[str, str, DeviceLoad]]) -> Unit:
    items = list(items)
    return Unit(key, tuple((s, d) for s, d, _ in items), sum(x.tags for _, _, x in items),
                sum(x.values_per_s for _, _, x in items), sum(x.reads_per_s for _, _, x in items))


def units_of(cfg: GatewayConfig, by: By) -> list[Unit]:
    """The plant's units, in config order."""
    loads = {name: scfg.device_loads() for name, scfg in cfg.sources.items()}
    entries = {name: [(name, d, loads[name].get(d, DeviceLoad(0, 0.0, 0.0))) for d in scfg.device_names()]
               for name, scfg in cfg.sources.items()}
    if by == "line":
        lines: dict[str, list[tuple[str, str, DeviceLoad]]] = {}
        for name, scfg in cfg.sources.items():
            lines.setdefault(scfg.line or name, []).extend(entries[name])
        return [_unit(line, items) for line, items in lines.items()]
    out = []
    for name, scfg in cfg.sources.items():
        if scfg.devices_separable():
            out += [_unit(device_key(s, d), [(s, d, x)]) for s, d, x in entries[name]]
        else:
            out.append(_unit(name, entries[name]))
    return out


def gateway_ids(n: int, prefix: str) -> list[str]:
    """``gw01`` .. ``gwNN``: the same id for the same position whatever N is (``gw100`` follows ``gw99``)."""
    return [f"{prefix}{i:02d}" for i in range(1, n + 1)]


def make_plan(units: list[Unit], ids: list[str], by: By, previous: Mapping[str, str] | None = None) -> Plan:
    """Assign ``units`` to the gateways ``ids``; ``previous`` maps ``source.device`` to its former gateway."""
    if not ids:
        raise PlanError("plan at least one gateway (--gateways 1 or more)")
    what = "lines" if by == "line" else "devices"
    if len(ids) > len(units):
        hint = "" if by == "device" else " (--by device splits the lines)"
        raise PlanError(f"{len(units)} {what} cannot keep {len(ids)} gateways busy: plan at most {len(units)}{hint}")
    shards = {gid: Shard(gid) for gid in ids}
    order = {gid: i for i, gid in enumerate(ids)}
    unplaced: list[Unit] = []
    for unit in units:
        home = _former(unit, previous) if previous else None
        if home in shards:
            shards[home].units.append(unit)
        else:
            unplaced.append(unit)
    loads = {gid: s.weight for gid, s in shards.items()}
    for unit in sorted(unplaced, key=lambda u: (-u.weight, u.key)):  # heaviest first onto the least loaded
        gid = min(ids, key=lambda g: (loads[g], order[g]))
        shards[gid].units.append(unit)
        loads[gid] += unit.weight
    _rebalance(shards, loads, order)
    for s in shards.values():
        s.units.sort(key=lambda u: u.key)
    plan_shards = [shards[g] for g in ids]
    if previous is None:
        return Plan(by, plan_shards, None)
    owner = {device_key(*d): s.id for s in plan_shards for d in s.devices}
    kept = [k for k in owner if k in previous]
    return Plan(by, plan_shards, moved=sum(1 for k in kept if previous[k] != owner[k]), kept=len(kept),
                new=len(owner) - len(kept), gone=sum(1 for k in previous if k not in owner))


def _former(unit: Unit, previous: Mapping[str, str]) -> str | None:
    """The gateway that held most of the unit's devices before (the first such in device order on a tie)."""
    votes: dict[str, int] = {}
    for d in unit.devices:
        gid = previous.get(device_key(*d))
        if gid is not None:
            votes[gid] = votes.get(gid, 0) + 1
    return max(votes, key=lambda g: votes[g]) if votes else None


def _rebalance(shards: dict[str, Shard], loads: dict[str, float], order: dict[str, int]) -> None:
    """Move one unit at a time from the most to the least loaded gateway while a gateway is outside the
    tolerance and a move evens that pair. Every move lowers the sum of squared loads, so this ends."""
    total = sum(loads.values())
    if total <= 0:
        return
    mean = total / len(loads)
    while True:
        hi = max(loads, key=lambda g: (loads[g], -order[g]))
        lo = min(loads, key=lambda g: (loads[g], order[g]))
        if loads[hi] <= mean * (1 + TOLERANCE) and loads[lo] >= mean * (1 - TOLERANCE):
            return
        gap = loads[hi] - loads[lo]
        movable = [u for u in shards[hi].units if 0 < u.weight < gap]
        if not movable:
            return
        # the unit that leaves the pair closest to even; the lighter one (fewer devices moved) on a tie
        unit = min(movable, key=lambda u: (abs(gap - 2 * u.weight), u.weight, u.key))
        shards[hi].units.remove(unit)
        shards[lo].units.append(unit)
        loads[hi] -= unit.weight
        loads[lo] += unit.weight
