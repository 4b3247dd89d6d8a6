"""Request planning and config checks."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from connectors.modbus.config import ModbusSourceConfig
from connectors.modbus.planner import plan_source


def cfg(tags: list[dict[str, Any]], **device: Any) -> ModbusSourceConfig:
    return ModbusSourceConfig.model_validate(
        {"host": "127.0.0.1", "poll_groups": {"slow": "10s"}, "devices": {"d": {"unit": 1, "tags": tags, **device}}}
    )


def floats(n: int, start: int = 0, step: int = 2) -> list[dict[str, Any]]:
    return [{"name": f"f{i}", "address": start + i * step, "type": "float32"} for i in range(n)]


def test_contiguous_floats_fill_125_register_reads() -> None:
    plan = plan_source(cfg(floats(1000)))
    reqs = plan["default"]
    assert len(reqs) == 17  # 62 float32 per read (124 registers), 1000 / 62 -> 17
    assert [r.count for r in reqs[:2]] == [124, 124]
    assert sum(len(r.tags) for r in reqs) == 1000
    assert all(r.count <= 125 for r in reqs)


def test_gaps_within_max_gap_merge_and_larger_ones_split() -> None:
    tags = [{"name": "a", "address": 0}, {"name": "b", "address": 5}, {"name": "c", "address": 30}]
    reqs = plan_source(cfg(tags))["default"]
    assert [(r.address, r.count) for r in reqs] == [(0, 6), (30, 1)]  # default max_gap 10
    reqs = plan_source(cfg(tags, max_gap=0))["default"]
    assert len(reqs) == 3


def test_device_limit_of_16_registers_is_respected_and_values_never_split() -> None:
    reqs = plan_source(cfg(floats(20), max_registers_per_request=16))["default"]
    assert all(r.count <= 16 for r in reqs)
    assert [len(r.tags) for r in reqs] == [8, 8, 4]  # 8 float32 per 16-register read
    for r in reqs:
        for addr, tag in zip(r.addresses, r.tags, strict=True):
            assert r.address <= addr and addr + tag.registers <= r.address + r.count


def test_tables_and_poll_groups_plan_separately() -> None:
    tags = [{"name": "a", "address": 0}, {"name": "b", "address": 1, "table": "input"},
            {"name": "c", "address": 2, "poll_group": "slow"}, {"name": "d", "address": 0, "table": "coil",
                                                               "type": "bool"}]
    plan = plan_source(cfg(tags))
    assert sorted((r.table, r.address) for r in plan["default"]) == [("coil", 0), ("holding", 0), ("input", 1)]
    assert [(r.table, r.address) for r in plan["slow"]] == [("holding", 2)]


def test_decoder_handles_mixed_orders_gaps_bits_and_strings() -> None:
    tags = [
        {"name": "f", "address": 0, "type": "float32", "order": "CDAB"},
        {"name": "i", "address": 4, "type": "int16"},
        {"name": "b", "address": 5, "type": "bit", "bit": 3},
        {"name": "s", "address": 6, "type": "string", "length": 1},
    ]
    (req,) = plan_source(cfg(tags))["default"]
    assert req.decode([0x0000, 0x4060, 0, 0, 0xFFFF, 0x0008, 0x4F4B]) == [3.5, -1, True, "OK"]


@pytest.mark.parametrize(("tags", "message"), [
    ([{"name": "a", "address": 0, "type": "float32"}, {"name": "b", "address": 1}], "overlap"),
    ([{"name": "a", "address": 65535, "type": "float32"}], "exceed 65535"),
    ([{"name": "a", "address": 0, "type": "float32", "count": 1}], "count 1 does not match"),
    ([{"name": "a", "address": 0, "table": "coil", "type": "int16"}], "single bits"),
    ([{"name": "a", "address": 0, "table": "input", "writable": True}], "read-only"),
    ([{"name": "a", "address": 0, "type": "string"}], "length"),
    ([{"name": "a", "address": 0, "poll_group": "fast"}], "unknown poll_group"),
])
def test_config_checks(tags: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        cfg(tags)


def test_datasheet_addresses_with_an_address_base() -> None:
    c = cfg([{"name": "a", "address": 40001}, {"name": "b", "address": 30005, "table": "input",
                                               "address_base": 30001}], address_base=40001)
    plan = plan_source(c)["default"]
    assert sorted((r.table, r.address) for r in plan) == [("holding", 0), ("input", 4)]
    with pytest.raises(ValidationError, match="below its address_base"):
        cfg([{"name": "a", "address": 1}], address_base=40001)


def test_bits_sharing_a_register_are_not_an_overlap() -> None:
    c = cfg([{"name": "a", "address": 3, "type": "bit", "bit": 0},
             {"name": "b", "address": 3, "type": "bit", "bit": 1}])
    (req,) = plan_source(c)["default"]
    assert req.decode([0b10]) == [False, True]
