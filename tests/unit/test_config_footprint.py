"""Config models kept for the life of the gateway stay small: a config may hold 100,000 tags, so a tag is a
slotted dataclass (no per-instance ``__dict__``), and still frozen and validated."""

from __future__ import annotations

import dataclasses
import gc
import tracemalloc

import pydantic
import pytest

from connectors.modbus.config import ModbusSourceConfig, ModbusTag
from connectors.opcua.config import OpcUaSourceConfig


def modbus_config(tags: list[dict[str, object]]) -> ModbusSourceConfig:
    return ModbusSourceConfig.model_validate({"host": "h", "devices": {"d": {"unit": 1, "tags": tags}}})


def test_tags_have_no_instance_dict() -> None:
    modbus = modbus_config([{"name": "a", "address": 0}]).devices["d"].tags[0]
    opcua = OpcUaSourceConfig.model_validate(
        {"devices": {"d": {"endpoint": "opc.tcp://h:4840", "tags": [{"name": "a", "node": "i=1"}]}}}
    ).devices["d"].tags[0]
    for tag in (modbus, opcua):
        assert not hasattr(tag, "__dict__"), type(tag).__name__


def test_10000_modbus_tags_cost_under_350_bytes_each() -> None:
    # A BaseModel tag cost ~640 bytes here, the slotted dataclass ~290. The input is built inside the
    # trace and dropped, so what the config keeps of it (the name strings, the address ints) counts too.
    n = 10_000
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        raw = [{"name": f"tag_{i}", "address": i, "unit": "bar"} for i in range(n)]
        cfg = modbus_config(raw)
        del raw
        gc.collect()
        per_tag = (tracemalloc.get_traced_memory()[0] - before) / n
    finally:
        tracemalloc.stop()
    assert len(cfg.devices["d"].tags) == n
    assert per_tag < 350, f"{per_tag:.0f} bytes per tag"


def test_a_tag_cannot_be_changed_and_a_copy_is_validated() -> None:
    tag = modbus_config([{"name": "a", "address": 0}]).devices["d"].tags[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        tag.unit = "bar"  # type: ignore[misc]
    assert dataclasses.replace(tag, unit="bar") == ModbusTag(name="a", address=0, unit="bar")
    with pytest.raises(pydantic.ValidationError, match="greater than or equal to 0"):
        dataclasses.replace(tag, address=-1)
