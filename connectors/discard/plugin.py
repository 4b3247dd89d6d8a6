"""The ``discard`` sink: accepts and counts, like Telegraf's ``outputs.discard``.

Useful to dry-run a source config without an uplink, and as the sink of the engine benchmarks so
they measure the engine rather than an uplink.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from gateway.config.base import SinkConfigBase
from gateway.model import Batch
from gateway.plugins import BuildContext, SinkPlugin


class DiscardSinkConfig(SinkConfigBase):
    type: Literal["discard"]


class DiscardSink:
    def __init__(self, name: str) -> None:
        self.name = name
        self.samples = 0
        self.batches = 0

    async def open(self) -> None:
        return None

    async def write(self, batches: Sequence[Batch]) -> None:
        self.batches += len(batches)
        self.samples += sum(len(b.samples) for b in batches)

    def health_problems(self) -> list[str]:
        return []  # no uplink

    async def close(self) -> None:
        return None


def _factory(name: str, config: DiscardSinkConfig, ctx: BuildContext) -> DiscardSink:
    return DiscardSink(name)


PLUGIN = SinkPlugin(kind="discard", config_model=DiscardSinkConfig, factory=_factory,
                    description="accepts and drops everything (dry runs, benchmarks)")
