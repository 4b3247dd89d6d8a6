from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys
from typing import Any

import pytest
from pydantic import ValidationError

from simulators.line.model import ActiveFault, LineModel
from simulators.line.scenario import LineScenario, load_scenario
from simulators.scenarios import BUILTIN, scenario_path


def scenario(machines: dict[str, Any], faults: list[dict[str, Any]] | None = None, **top: Any) -> LineScenario:
    return LineScenario.model_validate({"name": "test", "seed": 1, "tick": "500ms", "machines": machines,
                                        "faults": faults or [], **top})


def value(model: LineModel, machine: str, name: str) -> bool | int | float | str:
    return model.values[model.point(machine, name).index]


def run(model: LineModel, until: float) -> list[list[bool | int | float | str]]:
    """The values after every tick up to ``until``."""
    out = []
    while model.time < until:
        model.step_to(model.time + model.scenario.tick)
        out.append(list(model.values))
    return out


# --- reproducibility ---------------------------------------------------------------------------------


def test_same_seed_same_values_different_seed_different() -> None:
    line = load_scenario(scenario_path("bottling-line"))
    a, b = run(LineModel(line), 1000.0), run(LineModel(line), 1000.0)
    assert len(a) == 2000
    assert a == b
    c = run(LineModel(line.model_copy(update={"seed": 8})), 100.0)
    assert c != a[:200]
    differing = {i for snap_a, snap_c in zip(a, c, strict=False)
                 for i, (x, y) in enumerate(zip(snap_a, snap_c, strict=True)) if x != y}
    assert len(differing) > 20  # analog values move differently, not just one counter


def test_step_size_does_not_change_values() -> None:
    line = load_scenario(scenario_path("cnc-cell"))
    fine = LineModel(line)
    run(fine, 900.0)
    coarse = LineModel(line)
    assert coarse.step_to(900.0) is True
    assert coarse.time == fine.time == 900.0
    assert coarse.values == fine.values
    assert coarse.step_to(900.2) is False  # no whole tick yet
    assert coarse.time == 900.0


_CHILD = """
from simulators.line.model import LineModel
from simulators.line.scenario import load_scenario
from simulators.scenarios import scenario_path
m = LineModel(load_scenario(scenario_path("bottling-line")))
m.step_to(300.0)
print(repr(m.values))
"""


def test_same_values_in_another_process() -> None:
    m = LineModel(load_scenario(scenario_path("bottling-line")))
    m.step_to(300.0)
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == repr(m.values)


def test_one_hour_steps_quickly() -> None:
    import time

    m = LineModel(load_scenario(scenario_path("bottling-line")))
    start = time.perf_counter()
    m.step_to(3600.0)
    assert time.perf_counter() - start < 2.0  # ~0.5 s here; generous for slow CI machines
    assert m.time == 3600.0


# --- states, counters, alarms ------------------------------------------------------------------------

_STATE_SIGNALS = [
    {"name": "good", "kind": "good_count"},
    {"name": "rejects", "kind": "reject_count"},
    {"name": "state", "kind": "state"},
    {"name": "alarm", "kind": "alarm"},
    {"name": "alarm_code", "kind": "alarm_code"},
]


def _two_machines() -> LineScenario:
    return scenario(
        {
            "a": {"unit": 1, "rate": 2, "signals": _STATE_SIGNALS},
            "b": {"unit": 2, "rate": 2, "upstream": "a", "signals": _STATE_SIGNALS},
        },
        faults=[{"at": "10s", "kind": "machine_fault", "machine": "a", "duration": "5s", "code": 42, "every": "1m"}],
    )


def test_machine_fault_shows_in_state_alarm_and_counters() -> None:
    m = LineModel(_two_machines())
    assert (value(m, "a", "state"), value(m, "a", "alarm"), value(m, "a", "good")) == (1, False, 0)
    m.step_to(9.5)
    assert m.state_of("a") == "running"
    assert value(m, "a", "good") == 19  # 2 per second = 1 per tick, 19 ticks
    m.step_to(10.0)
    assert m.state_of("a") == "fault"
    assert (value(m, "a", "state"), value(m, "a", "alarm"), value(m, "a", "alarm_code")) == (4, True, 42)
    assert value(m, "a", "good") == 19  # no production in the fault tick
    assert value(m, "b", "state") == 1  # b sees a's previous state: starves one tick later
    good_b = value(m, "b", "good")
    m.step_to(10.5)
    assert (value(m, "b", "state"), m.state_of("b")) == (3, "starved")
    assert value(m, "b", "alarm") is False and value(m, "b", "alarm_code") == 0
    m.step_to(14.5)
    assert value(m, "a", "state") == 4 and value(m, "a", "good") == 19
    assert value(m, "b", "state") == 3 and value(m, "b", "good") == good_b  # b last counted at 10.0
    m.step_to(15.0)
    assert (value(m, "a", "state"), value(m, "a", "alarm"), value(m, "a", "alarm_code")) == (1, False, 0)
    assert value(m, "a", "good") == 20  # resumed
    assert value(m, "b", "state") == 3  # a was still in fault at the previous tick
    m.step_to(15.5)
    assert value(m, "b", "state") == 1
    m.step_to(70.0)  # `every: 1m` repeats it
    assert value(m, "a", "state") == 4 and value(m, "a", "alarm_code") == 42
    assert value(m, "a", "rejects") == 0


def test_random_states_stay_consistent_with_alarms_and_counters() -> None:
    sc = scenario({
        "a": {
            "unit": 1, "rate": 4, "reject_ratio": 0.1, "fault_codes": [7, 8],
            "states": {"running": {"mean": "30s", "next": {"idle": 1, "fault": 1, "maintenance": 0.5}},
                       "idle": {"mean": "10s"}, "fault": {"mean": "10s"}, "maintenance": {"mean": "20s"}},
            "signals": _STATE_SIGNALS,
        },
        "b": {"unit": 2, "rate": 4, "upstream": "a", "signals": _STATE_SIGNALS},
    })
    m = LineModel(sc)
    seen: dict[str, set[int]] = {"a": set(), "b": set()}
    codes = set()
    prev = {name: (0, 0) for name in seen}
    for _ in range(4000):
        m.step_to(m.time + 0.5)
        for name in seen:
            state, good, rejects = (value(m, name, "state"), value(m, name, "good"), value(m, name, "rejects"))
            assert isinstance(good, int) and isinstance(rejects, int)
            seen[name].add(int(state))
            assert value(m, name, "alarm") is (state == 4)
            code = value(m, name, "alarm_code")
            if state == 4:
                codes.add(code)
            else:
                assert code == 0
            if state == 1:
                assert good + rejects == sum(prev[name]) + 2  # 4 per second, 2 per tick
            else:
                assert (good, rejects) == prev[name]
            prev[name] = (good, rejects)
    assert seen["a"] == {1, 2, 4, 5}
    assert seen["b"] == {1, 3}  # b has no states of its own: it only starves
    assert codes == {7, 8}
    good, rejects = prev["a"]
    assert 0.05 < rejects / (good + rejects) < 0.15


def test_fractional_rate_carries_exactly() -> None:
    m = LineModel(scenario({"a": {"unit": 1, "cycle_time": "90s", "signals": [
        {"name": "parts", "kind": "good_count"},
        {"name": "tool_changes", "kind": "total_count", "factor": 4},
        {"name": "wrapped", "kind": "total_count", "factor": 4, "wrap": 10},
    ]}}))
    m.step_to(899.5)
    assert (value(m, "a", "parts"), value(m, "a", "tool_changes"), value(m, "a", "wrapped")) == (9, 36, 6)
    m.step_to(900.0)
    assert (value(m, "a", "parts"), value(m, "a", "tool_changes"), value(m, "a", "wrapped")) == (10, 40, 0)


# --- analog signals ----------------------------------------------------------------------------------


def test_lag_moves_towards_stopped_value_monotonically() -> None:
    m = LineModel(scenario(
        {"a": {"unit": 1, "signals": [
            {"name": "temp", "running": 60, "stopped": 20, "lag": "10s", "modbus": {"type": "float64"}},
            {"name": "speed", "running": 30, "states": {"fault": 2}},
        ]}},
        faults=[{"at": "10s", "kind": "machine_fault", "machine": "a", "duration": "60s"}],
    ))
    assert value(m, "a", "temp") == 60.0  # starts settled
    m.step_to(9.5)
    assert value(m, "a", "temp") == 60.0
    temps = [v[m.point("a", "temp").index] for v in run(m, 69.5)]
    assert all(later < earlier for earlier, later in itertools.pairwise(temps))
    assert all(t > 20.0 for t in temps)
    assert temps[0] == pytest.approx(20.0 + 40.0 * math.exp(-0.05))  # one tick of a 10 s time constant
    assert temps[-1] == pytest.approx(20.0 + 40.0 * math.exp(-6.0))
    assert value(m, "a", "speed") == 2.0  # no lag: the fault value at once
    m.step_to(70.0)
    assert value(m, "a", "speed") == 30.0
    assert temps[-1] < value(m, "a", "temp") < 60.0  # warming up again


def test_running_generator_and_hold() -> None:
    m = LineModel(scenario(
        {"a": {"unit": 1, "signals": [
            {"name": "ramp", "running": {"signal": "ramp", "start": 0, "end": 100, "period": "100s"},
             "stopped": "hold", "modbus": {"type": "float64"}},
            {"name": "level", "running": {"signal": "ramp", "start": 0, "end": 100, "period": "100s"},
             "states": {"fault": 5}, "modbus": {"type": "int16"}},
            {"name": "plain", "signal": "ramp", "start": 0, "end": 100, "period": "100s",
             "modbus": {"type": "float64"}},
        ]}},
        faults=[{"at": "10s", "kind": "machine_fault", "machine": "a", "duration": "5s"}],
    ))
    m.step_to(9.5)
    assert value(m, "a", "ramp") == pytest.approx(9.5)
    assert value(m, "a", "level") == 10  # an int16 override makes it an integer: rounded
    m.step_to(12.0)
    assert value(m, "a", "ramp") == pytest.approx(9.5)  # held during the fault
    assert value(m, "a", "level") == 5
    assert value(m, "a", "plain") == pytest.approx(12.0)  # a plain generator ignores the state
    m.step_to(15.0)
    assert value(m, "a", "ramp") == pytest.approx(15.0)


def test_float32_values_are_stored_as_modbus_carries_them() -> None:
    m = LineModel(scenario({"a": {"unit": 1, "signals": [{"name": "x", "running": 0.1}]}}))
    x = value(m, "a", "x")
    assert x != 0.1 and x == pytest.approx(0.1)
    import struct

    assert x == struct.unpack(">f", struct.pack(">f", 0.1))[0]


def test_sum_and_integral() -> None:
    m = LineModel(scenario(
        {
            "a": {"unit": 1, "signals": [{"name": "power", "signal": "constant", "value": 2.0}]},
            "b": {"unit": 2, "signals": [{"name": "power", "running": 3, "states": {"fault": 1}}]},
            "meter": {"unit": 3, "signals": [
                {"name": "energy", "kind": "integral", "of": "power", "modbus": {"type": "float64"}},
                {"name": "power", "kind": "sum", "of": ["a.power", "b.power"]},
                {"name": "minutes", "kind": "integral", "of": "a.power", "per": "1m", "modbus": {"type": "float64"}},
            ]},
        },
        faults=[{"at": "3600s", "kind": "machine_fault", "machine": "b", "duration": "1800s"}],
    ))
    assert value(m, "meter", "power") == 5.0
    assert value(m, "meter", "energy") == 0.0
    m.step_to(3599.5)
    assert value(m, "meter", "energy") == pytest.approx(5.0 * 3599.5 / 3600)
    assert value(m, "meter", "minutes") == pytest.approx(2.0 * 3599.5 / 60)
    m.step_to(5399.5)
    assert value(m, "meter", "power") == 3.0  # b in fault: 2 + 1
    assert value(m, "meter", "energy") == pytest.approx(5.0 * 3599.5 / 3600 + 3.0 * 1800 / 3600)
    m.step_to(5400.0)
    assert value(m, "meter", "power") == 5.0


def test_frozen_signals_hold_their_value() -> None:
    ramp = {"signal": "ramp", "start": 0, "end": 100, "period": "100s", "modbus": {"type": "float64"}}
    m = LineModel(scenario(
        {"a": {"unit": 1, "signals": [{"name": "x", **ramp}, {"name": "y", **ramp}]},
         "b": {"unit": 2, "signals": [{"name": "x", **ramp}, {"name": "y", **ramp}]}},
        faults=[
            {"at": "10s", "kind": "frozen", "machine": "a", "signals": ["x"], "duration": "5s", "every": "30s"},
            {"at": "20s", "kind": "frozen", "machine": "b", "duration": "2s"},
        ],
    ))
    m.step_to(9.5)
    for t in (10.0, 12.0, 14.5):
        m.step_to(t)
        assert value(m, "a", "x") == pytest.approx(9.5)  # the value of the tick before the window
        assert value(m, "a", "y") == pytest.approx(t)
    m.step_to(15.0)
    assert value(m, "a", "x") == pytest.approx(15.0)
    m.step_to(21.5)
    assert (value(m, "b", "x"), value(m, "b", "y")) == (pytest.approx(19.5), pytest.approx(19.5))  # all signals
    m.step_to(22.0)
    assert (value(m, "b", "x"), value(m, "b", "y")) == (pytest.approx(22.0), pytest.approx(22.0))
    m.step_to(41.0)  # every: 30s
    assert value(m, "a", "x") == pytest.approx(39.5)


# --- protocol-level faults ---------------------------------------------------------------------------


def test_active_faults_windows_and_repeats() -> None:
    m = LineModel(scenario(
        {"a": {"unit": 1}, "b": {"unit": 2}},
        faults=[
            {"at": "10s", "kind": "offline", "machine": "a", "duration": "5s", "every": "1m"},
            {"at": "20s", "kind": "exception", "machine": "b", "code": 4, "duration": "3s", "protocol": "modbus"},
            {"at": "30s", "kind": "slow", "machine": "a", "delay": "1500ms", "duration": "2s", "protocol": "opcua"},
            {"at": "40s", "kind": "restart", "protocol": "opcua", "down": "5s"},
        ],
    ))
    assert m.active_faults() == []
    m.step_to(9.5)
    assert m.active_faults() == []
    m.step_to(10.0)
    assert m.active_faults() == [ActiveFault("offline", "a", "both", None, 0.0, 15.0)]
    m.step_to(14.5)
    assert [f.kind for f in m.active_faults()] == ["offline"]
    m.step_to(15.0)
    assert m.active_faults() == []
    m.step_to(21.0)
    assert m.active_faults() == [ActiveFault("exception", "b", "modbus", 4, 0.0, 23.0)]
    m.step_to(31.0)
    assert m.active_faults() == [ActiveFault("slow", "a", "opcua", None, 1.5, 32.0)]
    m.step_to(44.5)
    assert m.active_faults() == [ActiveFault("restart", None, "opcua", None, 0.0, 45.0)]
    m.step_to(45.0)
    assert m.active_faults() == []
    m.step_to(72.0)
    assert m.active_faults() == [ActiveFault("offline", "a", "both", None, 0.0, 75.0)]  # `every` repeats
    m.step_to(80.0)
    assert m.active_faults() == []  # the others do not repeat


# --- writes ------------------------------------------------------------------------------------------


def test_writes() -> None:
    m = LineModel(scenario({"a": {"unit": 1, "signals": [
        {"name": "speed_setpoint", "kind": "setpoint", "value": 30, "min": 0, "max": 60},
        {"name": "count_setpoint", "kind": "setpoint", "type": "int", "value": 5, "max": 10},
        {"name": "enable", "kind": "setpoint", "type": "bool", "value": False},
        {"name": "recipe", "kind": "text", "text": "A-1", "writable": True},
        {"name": "speed", "running": 1.0},
    ]}}))
    i = m.point("a", "speed_setpoint").index
    assert m.values[i] == 30.0
    m.write(i, 45.5)
    m.step_to(100.0)
    assert m.values[i] == 45.5  # stays
    with pytest.raises(ValueError, match="above the maximum 60"):
        m.write(i, 61)
    with pytest.raises(ValueError, match="below the minimum 0"):
        m.write(i, -1)
    with pytest.raises(ValueError, match="takes a number"):
        m.write(i, "fast")
    assert m.values[i] == 45.5
    j = m.point("a", "count_setpoint").index
    m.write(j, 7.0)
    assert m.values[j] == 7 and isinstance(m.values[j], int)
    with pytest.raises(ValueError, match="whole number"):
        m.write(j, 7.5)
    k = m.point("a", "enable").index
    m.write(k, True)
    assert m.values[k] is True
    r = m.point("a", "recipe").index
    m.write(r, "B-2")
    assert m.values[r] == "B-2"
    with pytest.raises(ValueError):
        m.write(r, "too long for two registers")
    with pytest.raises(ValueError, match="read-only"):
        m.write(m.point("a", "speed").index, 2.0)


# --- validation --------------------------------------------------------------------------------------


def _error(machines: dict[str, Any], faults: list[dict[str, Any]] | None = None) -> str:
    with pytest.raises(ValidationError) as info:
        scenario(machines, faults)
    return str(info.value)


def test_validation_errors_name_the_problem() -> None:
    ok = {"unit": 1, "signals": [{"name": "power", "running": 1}]}
    assert "no machine 'nope'" in _error(
        {"a": ok}, [{"at": 0, "kind": "offline", "machine": "nope", "duration": 1}]
    )
    assert "'b.power' names no signal" in _error({"a": {"unit": 1, "signals": [
        {"name": "total", "kind": "sum", "of": ["b.power"]}]}})
    assert "'volts' names no signal" in _error({"a": {"unit": 1, "signals": [
        {"name": "energy", "kind": "integral", "of": "volts"}]}})
    assert "unit ids must be unique: 1 is used by a and b" in _error({"a": ok, "b": ok})
    assert "no signal(s) temp" in _error({"a": ok}, [
        {"at": 0, "kind": "frozen", "machine": "a", "signals": ["temp"], "duration": 1}])
    assert "duplicate signal name(s): power" in _error({"a": {"unit": 1, "signals": [
        {"name": "power", "running": 1}, {"name": "power", "kind": "state"}]}})
    assert "unknown signal" in _error({"a": {"unit": 1, "signals": [{"name": "x", "kind": "bogus"}]}})
    assert "String should match pattern" in _error({"a": {"unit": 1, "signals": [{"name": "Bad Name", "running": 1}]}})
    assert "loops back" in _error({"a": {"unit": 1, "upstream": "b"}, "b": {"unit": 2, "upstream": "a"}})
    assert "'fault' has no entry in states" in _error({"a": {"unit": 1, "states": {
        "running": {"mean": "1m", "next": {"fault": 1}}}}})
    assert "the default next state 'idle'" in _error({"a": {"unit": 1, "states": {"running": {"mean": "1m"}}}})
    assert "must be longer than one occurrence" in _error({"a": ok}, [
        {"at": 0, "kind": "offline", "machine": "a", "duration": "2m", "every": "1m"}])
    assert "lies outside [min, max]" in _error({"a": {"unit": 1, "signals": [
        {"name": "sp", "kind": "setpoint", "value": 70, "max": 60}]}})
    assert "is not numeric" in _error({"a": {"unit": 1, "signals": [
        {"name": "t", "kind": "text", "text": "x"}, {"name": "s", "kind": "sum", "of": ["t"]}]}})
    assert "Extra inputs are not permitted" in _error({"a": {"unit": 1, "colour": "red"}})
    assert "Input should be 'running', 'idle', 'fault' or 'maintenance'" in _error(
        {"a": {"unit": 1, "states": {"starved": {"mean": "1m"}}}})


@pytest.mark.parametrize("name", BUILTIN)
def test_shipped_scenarios_load(name: str) -> None:
    path = scenario_path(name)
    assert path.is_file()
    line = load_scenario(path)
    assert line.name == name
    m = LineModel(line)
    m.step_to(200.0)
    assert all(v is not None for v in m.values)
    assert m.active_faults() == [] or all(isinstance(f, ActiveFault) for f in m.active_faults())


def test_scenario_path_passes_other_paths_through(tmp_path: Any) -> None:
    assert scenario_path("bottling-line").name == "bottling-line.yaml"
    assert str(scenario_path(str(tmp_path / "mine.yaml"))) == str(tmp_path / "mine.yaml")
