"""Config models kept for the life of the gateway stay small: tags that set the same fields share the set
pydantic keeps of them, and nothing can change it behind another tag's back."""

from __future__ import annotations

import pydantic
import pytest

from connectors.modbus.config import ModbusSourceConfig


def tags_of(*tags: dict[str, object]) -> list[object]:
    cfg = ModbusSourceConfig.model_validate({"host": "h", "devices": {"d": {"unit": 1, "tags": list(tags)}}})
    return list(cfg.devices["d"].tags)


def test_tags_that_set_the_same_fields_share_one_set() -> None:
    a, b, c = tags_of({"name": "a", "address": 0}, {"name": "b", "address": 1},
                      {"name": "c", "address": 2, "unit": "bar"})
    assert a.__pydantic_fields_set__ is b.__pydantic_fields_set__  # type: ignore[attr-defined]
    assert c.model_fields_set == {"name", "address", "unit"}  # type: ignore[attr-defined]
    assert b.model_dump(exclude_unset=True) == {"name": "b", "address": 1}  # type: ignore[attr-defined]


def test_a_copy_or_a_refused_assignment_leaves_the_shared_set_alone() -> None:
    a, b = tags_of({"name": "a", "address": 0}, {"name": "b", "address": 1})
    changed = a.model_copy(update={"unit": "bar"})  # type: ignore[attr-defined]
    assert changed.model_fields_set == {"name", "address", "unit"}
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        b.unit = "bar"  # type: ignore[attr-defined]
    assert a.model_fields_set == b.model_fields_set == {"name", "address"}  # type: ignore[attr-defined]
