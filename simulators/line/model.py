"""The line model: a scenario's machines stepped in whole ticks of sim time, one value per point.

Each tick (``scenario.tick`` seconds of sim time):

1. scheduled machine faults and frozen windows that start (or end) at this tick are applied;
2. every machine's random state machine advances (exponential holding times, weighted next states,
   one ``random.Random(derive_seed(seed, machine, "state"))`` per machine); a machine whose upstream
   was not running at the previous tick is ``starved`` (a machine in fault/maintenance stays there);
3. the signals follow the new state: analog targets (a generator while running, per-state values
   otherwise) through a first-order lag, plain generators at sim time ``t``, counters by ``rate * tick``
   products (the fraction carried exactly, rejects drawn from a seeded RNG) while running;
4. sums and integrals, in dependency order.

Values are stored as the protocols carry them (a float32 register's value is rounded to float32), so a
value read over Modbus equals the one published over OPC-UA. Frozen signals show the value they had
when the window began while the model underneath carries on. Everything random is seeded through
``derive_seed`` (CRC-32, not ``hash()``): same scenario, same ``step_to`` calls -> same ``values``.
"""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from connectors.modbus.codec import encode
from gateway.generators import GenValue, SignalModel, derive_seed
from simulators.line.points import Point, allocate, type_modulus
from simulators.line.scenario import (
    STATE_CODES,
    STATE_NAMES,
    AlarmCodeSignal,
    AlarmSignal,
    AnalogSignal,
    ExceptionEvent,
    FrozenEvent,
    GoodCount,
    IntegralSignal,
    LineScenario,
    MachineConfig,
    MachineFaultEvent,
    OfflineEvent,
    RejectCount,
    RestartEvent,
    SetpointSignal,
    SignalBase,
    SlowEvent,
    StateSignal,
    SumSignal,
    TextSignal,
    TotalCount,
)

Value = bool | int | float | str

RUNNING, IDLE, STARVED, FAULT, MAINTENANCE = (STATE_CODES[s] for s in ("running", "idle", "starved", "fault",
                                                                      "maintenance"))
_EPS = 1e-9
_F32 = struct.Struct("<f")


@dataclass(frozen=True, slots=True)
class ActiveFault:
    """A protocol-level fault active now; the server applies it (the model only keeps the schedule)."""

    kind: Literal["offline", "exception", "slow", "restart"]
    machine: str | None  # None for restart
    protocol: Literal["modbus", "opcua", "both"]
    code: int | None  # exception code
    delay: float  # slow: reply delay in seconds, else 0
    until: float  # sim time the window ends


def _to_int(v: float) -> Value:
    return round(v)


def _to_bool(v: float) -> Value:
    return bool(v)


def _to_float(v: float) -> Value:
    return float(v)


def _to_float32(v: float, pack: Callable[[float], bytes] = _F32.pack,
                unpack: Callable[[bytes], tuple[float]] = _F32.unpack) -> Value:
    return unpack(pack(v))[0]


def _converter(p: Point) -> Callable[[float], Value]:
    """How a computed number is stored for ``p``: rounded for integers, float32-exact for float32."""
    if p.kind == "int":
        return _to_int
    if p.kind == "bool":
        return _to_bool
    if p.mtype == "float32" or p.opcua_type == "Float":
        return _to_float32
    return _to_float


@dataclass(slots=True)
class _Scheduled:
    """An in-model fault (machine fault, freeze) and the sim time of its next occurrence."""

    next: float
    event: MachineFaultEvent | FrozenEvent


def _fraction(x: float) -> Fraction:
    return Fraction(x).limit_denominator(1_000_000)


class _Analog:
    """A state-driven analog signal: the target per state code, followed through a first-order lag."""

    __slots__ = ("alpha", "consts", "gens", "index", "target", "y")

    def __init__(self, index: int, gens: list[Callable[[float], GenValue] | None], consts: list[float | None],
                 alpha: float) -> None:
        self.index = index
        self.gens = gens  # by state code: a generator, or None ...
        self.consts = consts  # ... and then a fixed target, or None: hold the last target
        self.alpha = alpha
        self.target = 0.0
        self.y = 0.0


class _Machine:
    __slots__ = (
        "analogs", "base", "carry", "code", "codes", "counters", "den", "flats", "forced", "made", "means",
        "name", "next_state", "num", "reject_ratio", "reject_rng", "rejects", "rng", "state", "state_points",
        "until", "upstream", "weights",
    )

    def __init__(self, name: str, cfg: MachineConfig, seed: int, tick: float) -> None:
        self.name = name
        self.rng = random.Random(derive_seed(seed, name, "state"))
        self.reject_rng = random.Random(derive_seed(seed, name, "rejects"))
        self.reject_ratio = cfg.reject_ratio
        self.means = {STATE_CODES[s]: c.mean for s, c in cfg.states.items()}
        self.weights: dict[int, tuple[list[int], list[float]]] = {}
        for s, c in cfg.states.items():
            w = cfg.next_weights(s, c)
            self.weights[STATE_CODES[s]] = ([STATE_CODES[k] for k in w], list(w.values()))
        self.codes = cfg.fault_codes
        per_tick = _fraction(cfg.products_per_second) * _fraction(tick)
        self.num, self.den = per_tick.numerator, per_tick.denominator
        self.carry = 0
        self.made = 0
        self.rejects = 0
        self.upstream: _Machine | None = None
        self.forced = False
        self.base = STATE_CODES[cfg.initial]
        self.code = 0
        self.until = math.inf
        self.state = self.base
        self.next_state = self.base
        self.analogs: list[_Analog] = []
        self.flats: list[tuple[int, Callable[[float], GenValue]]] = []
        self.counters: list[tuple[int, str, int, int, int | None]] = []  # index, role, factor num/den, modulus
        self.state_points: list[tuple[int, str]] = []  # index, role (state, alarm, alarm_code)
        self._enter(self.base, 0.0)

    def _enter(self, state: int, t: float) -> None:
        self.base = state
        self.code = self.rng.choice(self.codes) if state == FAULT else 0
        mean = self.means.get(state)
        self.until = math.inf if mean is None else t + self.rng.expovariate(1.0 / mean)

    def force_fault(self, code: int, until: float) -> None:
        self.base, self.code, self.until, self.forced = FAULT, code, until, True

    def advance(self, t: float) -> None:
        """The random (or forced) state machine, one transition at most per tick."""
        if t + _EPS < self.until:
            return
        if self.forced:
            self.forced = False
            self._enter(RUNNING, t)
            return
        targets, weights = self.weights[self.base]
        nxt = targets[0] if len(targets) == 1 else self.rng.choices(targets, weights)[0]
        self._enter(nxt, t)

    def effective(self) -> int:
        """The state shown: starved while the upstream (at the previous tick) is not running."""
        b = self.base
        if b in (FAULT, MAINTENANCE) or self.upstream is None or self.upstream.state == RUNNING:
            return b
        return STARVED

    def produce(self) -> tuple[int, int]:
        """Products and rejects made in one running tick."""
        c = self.carry + self.num
        n = c // self.den
        self.carry = c - n * self.den
        if not n or not self.reject_ratio:
            return n, 0
        p = self.reject_ratio
        if p >= 1.0:
            return n, n
        if n <= 64:
            rnd = self.reject_rng.random
            return n, sum(1 for _ in range(n) if rnd() < p)
        r = round(self.reject_rng.gauss(n * p, math.sqrt(n * p * (1.0 - p))))  # normal approximation
        return n, min(max(r, 0), n)


class _Derived:
    __slots__ = ("acc", "index", "k", "refs")

    def __init__(self, index: int, refs: list[int], k: float | None) -> None:
        self.index = index
        self.refs = refs
        self.k = k  # integral: tick / per; None for a sum
        self.acc = 0.0


class LineModel:
    """A scenario's line, stepped in whole ticks; ``values[i]`` is the current value of ``points[i]``."""

    def __init__(self, scenario: LineScenario) -> None:
        self.scenario = scenario
        self.points: tuple[Point, ...] = allocate(scenario)
        self._tick = scenario.tick
        self._k = 0
        self._by_name = {(p.machine, p.name): p for p in self.points}
        self._machines: dict[str, _Machine] = {}
        self._live: list[Value] = [0] * len(self.points)
        self._derived: list[_Derived] = []
        self._limits: dict[int, tuple[float | None, float | None]] = {}
        self._frozen: dict[int, tuple[Value, float]] = {}  # index -> (value shown, sim time it thaws)
        self._freezing: list[int] = []  # frozen at t=0: they show their first value
        self._events = [_Scheduled(f.at, f) for f in scenario.faults if isinstance(f, MachineFaultEvent | FrozenEvent)]
        for name, cfg in scenario.machines.items():
            self._machines[name] = self._build_machine(name, cfg)
        for name, cfg in scenario.machines.items():
            if cfg.upstream is not None:
                self._machines[name].upstream = self._machines[cfg.upstream]
        self._build_derived()
        # converters applied on publishing (not per tick): the model computes in full precision
        self._convs = [(p.index, _converter(p)) for p in self.points if p.kind in ("int", "float")]
        self._evaluate(0.0, settle=True)
        self.values: list[Value] = []
        self._publish()

    # --- construction ------------------------------------------------------------------------------

    def _build_machine(self, name: str, cfg: MachineConfig) -> _Machine:
        seed = self.scenario.seed
        m = _Machine(name, cfg, seed, self._tick)
        for s in cfg.signals:
            p = self._by_name[(name, s.name)]
            i = p.index
            if isinstance(s, AnalogSignal):
                m.analogs.append(self._analog(name, s, p))
            elif isinstance(s, GoodCount | RejectCount | TotalCount):
                factor = _fraction(s.factor) if isinstance(s, TotalCount) else Fraction(1)
                modulus = s.wrap if s.wrap is not None else type_modulus(p.mtype)
                m.counters.append((i, s.kind, factor.numerator, factor.denominator, modulus))
            elif isinstance(s, StateSignal | AlarmSignal | AlarmCodeSignal):
                m.state_points.append((i, s.kind))
            elif isinstance(s, SetpointSignal):
                self._live[i] = self._coerce(p, s.value)
                self._limits[i] = (s.min, s.max)
            elif isinstance(s, TextSignal):
                self._live[i] = s.text
            elif isinstance(s, SumSignal | IntegralSignal):
                pass  # _build_derived, once every machine's points exist
            elif isinstance(s, SignalModel):  # a plain generator
                m.flats.append((i, s.build(derive_seed(seed, name, s.name)).value))
            else:  # pragma: no cover - every scenario signal class is handled above
                raise TypeError(f"unhandled signal {type(s).__name__}")
        return m

    def _analog(self, machine: str, s: AnalogSignal, p: Point) -> _Analog:
        seed = self.scenario.seed
        n = len(STATE_NAMES)
        gens: list[Callable[[float], GenValue] | None] = [None] * n
        consts: list[float | None] = [None if s.stopped == "hold" else float(s.stopped)] * n
        per_state: dict[int, float | str | SignalModel] = {STATE_CODES[k]: v for k, v in s.states.items()}
        per_state[RUNNING] = s.running
        for code, v in per_state.items():
            if isinstance(v, SignalModel):
                state = STATE_NAMES[code]
                identity = (machine, s.name) if code == RUNNING else (machine, s.name, state)
                gens[code] = v.build(derive_seed(seed, *identity)).value
            else:
                consts[code] = None if v == "hold" else float(v)
        alpha = 1.0 - math.exp(-self._tick / s.lag) if s.lag > 0 else 1.0
        return _Analog(p.index, gens, consts, alpha)

    def _build_derived(self) -> None:
        order: list[tuple[str, SignalBase]] = []
        seen: set[tuple[str, str]] = set()

        def visit(machine: str, s: SignalBase) -> None:  # refs first (the scenario refused loops)
            if (machine, s.name) in seen:
                return
            seen.add((machine, s.name))
            for ref in s.refs():
                m, name = self.scenario.resolve(machine, ref)
                sig = self.scenario.machines[m].signal(name)
                assert sig is not None  # checked by the scenario
                visit(m, sig)
            if isinstance(s, SumSignal | IntegralSignal):
                order.append((machine, s))

        for machine, cfg in self.scenario.machines.items():
            for s in cfg.signals:
                visit(machine, s)
        for machine, d in order:
            p = self._by_name[(machine, d.name)]
            refs = [self._by_name[self.scenario.resolve(machine, r)].index for r in d.refs()]
            k = self._tick / d.per if isinstance(d, IntegralSignal) else None
            self._derived.append(_Derived(p.index, refs, k))

    # --- stepping ----------------------------------------------------------------------------------

    @property
    def time(self) -> float:
        """Sim seconds reached (a whole number of ticks)."""
        return self._k * self._tick

    @property
    def tick(self) -> float:
        return self._tick

    def next_time(self) -> float:
        """Sim time of the next tick, when values may next change."""
        return (self._k + 1) * self._tick

    def step_to(self, t: float) -> bool:
        """Apply ticks until ``floor(t / tick)`` have been applied in all; True if any value changed."""
        target = math.floor(t / self._tick + _EPS)
        if target <= self._k:
            return False
        before = list(self.values)
        while self._k < target:
            self._k += 1
            self._evaluate(self._k * self._tick, settle=False)
        self._publish()
        return self.values != before

    def _publish(self) -> None:
        """``values``: the live values as the protocols carry them, frozen ones as they were."""
        values = self.values
        values[:] = self._live
        for i, (v, _) in self._frozen.items():
            values[i] = v
        for i, conv in self._convs:
            values[i] = conv(values[i])  # type: ignore[arg-type]  # numeric points hold numbers

    def _evaluate(self, t: float, settle: bool) -> None:
        live = self._live
        if self._events:
            self._scheduled(t)
        machines = self._machines.values()
        if not settle:
            for m in machines:
                m.advance(t)
        for m in machines:
            m.next_state = m.effective()
        for m in machines:
            m.state = state = m.next_state
            alarm_code = m.code if state == FAULT else 0
            for i, role in m.state_points:
                live[i] = state if role == "state" else (state == FAULT if role == "alarm" else alarm_code)
            for a in m.analogs:  # inlined: this loop is most of the model's time
                gen = a.gens[state]
                if gen is not None:
                    a.target = target = float(gen(t))
                else:
                    c = a.consts[state]
                    if c is None and settle:  # hold, with nothing to hold yet: start where running would
                        run = a.gens[RUNNING]
                        c = float(run(t)) if run is not None else a.consts[RUNNING]
                    target = a.target if c is None else c
                    a.target = target
                    if a.y == target and not settle:
                        continue  # settled on a fixed target: nothing moves
                y = a.y
                if settle or abs(target - y) < 1e-9:
                    y = target
                else:
                    y += a.alpha * (target - y)
                a.y = y
                live[a.index] = y
            for i, gen in m.flats:
                live[i] = gen(t)
            if state == RUNNING and not settle and m.num:
                n, r = m.produce()
                if n:
                    m.made += n
                    m.rejects += r
                    self._counters(m)
        for d in self._derived:
            if d.k is None:
                total = 0.0
                for j in d.refs:
                    total += live[j]  # type: ignore[operator]  # refs are numeric (checked by the scenario)
                live[d.index] = total
            else:
                if not settle:
                    d.acc += live[d.refs[0]] * d.k  # type: ignore[operator]
                live[d.index] = d.acc
        if self._freezing:
            for i in self._freezing:
                self._frozen[i] = (live[i], self._frozen[i][1])
            self._freezing.clear()

    def _counters(self, m: _Machine) -> None:
        live = self._live
        for i, role, num, den, modulus in m.counters:
            if role == "good_count":
                v = m.made - m.rejects
            elif role == "reject_count":
                v = m.rejects
            else:
                v = m.made * num // den
            live[i] = v if modulus is None else v % modulus

    def _scheduled(self, t: float) -> None:
        """Start the machine faults and freezes due at ``t``; thaw frozen signals whose window ended."""
        if self._frozen:
            for i in [i for i, (_, until) in self._frozen.items() if t + _EPS >= until]:
                del self._frozen[i]
        for ev in self._events:
            start, f = ev.next, ev.event
            if t + _EPS < start:
                continue
            end = start + f.duration
            if isinstance(f, MachineFaultEvent):
                code = f.code if f.code is not None else self.scenario.machines[f.machine].fault_codes[0]
                self._machines[f.machine].force_fault(code, end)
            else:
                names = f.signals or [s.name for s in self.scenario.machines[f.machine].signals]
                for name in names:
                    i = self._by_name[(f.machine, name)].index
                    self._frozen[i] = (self._live[i], end)  # the value of the previous tick
                    if t == 0.0:
                        self._freezing.append(i)
            nxt = math.inf
            if f.every is not None:  # the next occurrence after t (ticks coarser than `every` skip some)
                nxt = f.at + (math.floor((t + _EPS - f.at) / f.every) + 1) * f.every
            ev.next = nxt

    # --- queries and writes ------------------------------------------------------------------------

    def state_of(self, machine: str) -> str:
        m = self._machines.get(machine)
        if m is None:
            raise KeyError(f"no machine {machine!r}")
        return STATE_NAMES[m.state]

    def point(self, machine: str, name: str) -> Point:
        p = self._by_name.get((machine, name))
        if p is None:
            raise KeyError(f"no signal {machine}.{name}")
        return p

    def active_faults(self) -> list[ActiveFault]:
        """Protocol-level faults (offline, exception, slow, restart) active at the current sim time."""
        now = self.time
        active: list[ActiveFault] = []
        for f in self.scenario.faults:
            if not isinstance(f, OfflineEvent | ExceptionEvent | SlowEvent | RestartEvent):
                continue
            window = f.window(now + _EPS)
            if window is None:
                continue
            if isinstance(f, RestartEvent):
                active.append(ActiveFault("restart", None, f.protocol, None, 0.0, window[1]))
            elif isinstance(f, OfflineEvent):
                active.append(ActiveFault("offline", f.machine, f.protocol, None, 0.0, window[1]))
            elif isinstance(f, ExceptionEvent):
                active.append(ActiveFault("exception", f.machine, f.protocol, f.code, 0.0, window[1]))
            else:
                active.append(ActiveFault("slow", f.machine, f.protocol, None, f.delay, window[1]))
        return active

    def write(self, index: int, value: Value) -> None:
        """Set a writable point (setpoints, writable text); it keeps the value. ValueError if refused."""
        if not 0 <= index < len(self.points):
            raise ValueError(f"no point {index}")
        p = self.points[index]
        if not p.writable:
            raise ValueError(f"{p.machine}.{p.name} is read-only")
        v = self._coerce(p, value)
        low, high = self._limits.get(index, (None, None))
        if isinstance(v, int | float) and not isinstance(v, bool):
            if low is not None and v < low:
                raise ValueError(f"{p.machine}.{p.name}: {v!r} is below the minimum {low:g}")
            if high is not None and v > high:
                raise ValueError(f"{p.machine}.{p.name}: {v!r} is above the maximum {high:g}")
        self._live[index] = v
        self.values[index] = v
        if index in self._frozen:  # a write goes through a frozen window
            self._frozen[index] = (v, self._frozen[index][1])

    def _coerce(self, p: Point, value: Value) -> Value:
        """``value`` as ``p`` stores it; ValueError if it has the wrong type or does not fit the register."""
        where = f"{p.machine}.{p.name}"
        if p.kind == "bool":
            if isinstance(value, bool) or value in (0, 1):
                return bool(value)
            raise ValueError(f"{where} takes true or false, not {value!r}")
        if p.kind == "str":
            if not isinstance(value, str):
                raise ValueError(f"{where} takes text, not {value!r}")
            encode(value, "string", p.order, p.length)  # raises if too long
            return value
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"{where} takes a number, not {value!r}")
        if p.kind == "int":
            if not float(value).is_integer():
                raise ValueError(f"{where} takes a whole number, not {value!r}")
            value = int(value)
        encode(value, p.mtype, p.order, p.length)  # raises ValueError when it does not fit the register
        return _converter(p)(value)
