"""Configuration of the embedded time-series store sink (``type: sqlite``)."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import ByteSize, Field, field_validator

from gateway.config.base import Duration, SinkConfigBase

DEFAULT_FILE = "store.db"
_MIN_MAX_SIZE = 1024 * 1024


class SqliteStoreConfig(SinkConfigBase):
    """A local SQLite (WAL) time-series store: the gateway's default output and its on-box history."""

    type: Literal["sqlite"] = "sqlite"
    path: str | None = Field(
        None,
        description="database file; default <data_dir>/store.db, relative paths are relative to data_dir",
    )
    retention: Duration = Field(
        30 * 86400.0,
        description="points older than this (by their timestamp) are deleted, e.g. 30d; 0 keeps them forever",
    )
    max_size: ByteSize = Field(
        ByteSize(1024**3),
        description=(
            "hard bound on stored data, e.g. 1GiB; the oldest points are deleted to stay under 90% of it "
            "(the file keeps its size and reuses the freed pages); 0 means no bound"
        ),
    )
    min_free_disk: ByteSize = Field(
        ByteSize(64 * 1024 * 1024),
        description=(
            "keep this much disk space free, e.g. 64MiB: below it the store stops growing and overwrites "
            "its oldest points; 0 turns the check off"
        ),
    )
    retention_interval: Duration = Field(
        300.0, gt=0, description="how often the age and size retention runs, e.g. 5m"
    )
    time_basis: Literal["source", "gateway"] = Field(
        "source",
        description=(
            "which timestamp orders, filters and ages points: source (device time, falls back to the "
            "gateway's receive time when the device sends none) or gateway (use when device clocks are wrong)"
        ),
    )
    synchronous: Literal["normal", "full"] = Field(
        "normal",
        description="SQLite synchronous: normal survives a process crash, full also a power cut (more flash writes)",
    )
    cache_size: ByteSize = Field(
        ByteSize(16 * 1024 * 1024),
        description="SQLite page cache, e.g. 16MiB; more helps when many tags are written",
    )

    @field_validator("max_size")
    @classmethod
    def _max_size_floor(cls, value: ByteSize) -> ByteSize:
        # Below ~1 MiB the store would spend its time deleting; 0 is the explicit "unbounded".
        if 0 < value < _MIN_MAX_SIZE:
            raise ValueError("must be 0 (unbounded) or at least 1MiB")
        return value

    def resolve_path(self, data_dir: str) -> str:
        """The database file this sink writes, shared by the sink factory and the ``query`` command."""
        path = os.path.expanduser(self.path) if self.path else DEFAULT_FILE
        return os.path.join(data_dir, path)
