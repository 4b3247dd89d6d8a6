"""Configuration of the recording sink (``type: record``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from connectors.recording.files import RecordingError, check_recording_path
from gateway.config.base import Duration, SinkConfigBase


class RecordSinkConfig(SinkConfigBase):
    """Writes every sample it takes to a CSV or Parquet recording (``edge-gateway simulate --replay``)."""

    type: Literal["record"] = "record"
    path: str = Field(
        min_length=1,
        description=(
            "recording file; its extension picks the format: .csv, .csv.gz or .parquet (needs pyarrow). "
            "Relative to the current directory. An existing CSV recording is continued; an existing Parquet "
            "file is kept and the sink writes <name>.1.parquet (.2, ...) beside it"
        ),
    )
    flush_interval: Duration = Field(
        1.0, gt=0, description="how often written rows reach the file (CSV); a Parquet file is finished on stop"
    )

    @field_validator("path")
    @classmethod
    def _known_format(cls, value: str) -> str:
        try:
            check_recording_path(Path(value).expanduser())
        except RecordingError as exc:
            raise ValueError(exc.message) from None
        return value

    def resolve_path(self) -> Path:
        return Path(self.path).expanduser()
