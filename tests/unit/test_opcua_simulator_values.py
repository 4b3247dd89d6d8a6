"""The OPC-UA simulator keeps a monitored item's scalar values by reference instead of asyncua's deep copy
(its CPU per changed value), and still copies what could be mutated behind its back."""

from __future__ import annotations

from datetime import UTC, datetime

from asyncua import ua
from asyncua.server.monitored_item_service import MonitoredItemValues

import simulators.opcua.server  # noqa: F401  # installs the simulator's copy rule


def _dv(value: object, vt: ua.VariantType) -> ua.DataValue:
    now = datetime.now(UTC)
    return ua.DataValue(ua.Variant(value, vt), SourceTimestamp=now, ServerTimestamp=now)  # type: ignore[arg-type]


def test_scalars_are_kept_by_reference_and_the_previous_value_is_remembered() -> None:
    values = MonitoredItemValues()
    first, second = _dv(21.5, ua.VariantType.Double), _dv("A-12", ua.VariantType.String)
    values.set_current_datavalue(first)
    values.set_current_datavalue(second)
    assert values.get_current_datavalue() is second
    assert values.get_old_datavalue() is first


def test_arrays_are_still_deep_copied() -> None:
    values = MonitoredItemValues()
    held = [1.0, 2.0]
    dv = _dv(held, ua.VariantType.Double)
    values.set_current_datavalue(dv)
    held.append(3.0)  # a writer reusing its list must not change what the item compares against
    current = values.get_current_datavalue()
    assert current is not dv
    assert current is not None and current.Value is not None and current.Value.Value == [1.0, 2.0]


def test_a_null_variant_is_handled_as_asyncua_does() -> None:
    values = MonitoredItemValues()
    dv = ua.DataValue(StatusCode=ua.StatusCode(0x80310000))  # type: ignore[arg-type]  # BadNoCommunication
    values.set_current_datavalue(dv)
    current = values.get_current_datavalue()
    assert current is not None and current.StatusCode == dv.StatusCode
