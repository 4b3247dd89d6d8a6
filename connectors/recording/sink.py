"""The ``record`` sink: the Sink protocol over a ``RecordingWriter``.

File work runs on one private thread, so a Parquet row group never stalls the event loop, and because
that thread runs jobs in order, a write abandoned by a cancelled delivery still finishes before the
close that follows it. A restarted sink never destroys what an earlier one wrote: a CSV recording is
continued; a finished Parquet file cannot grow, so it is kept and a new file is started beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import structlog

from connectors.recording.config import RecordSinkConfig
from connectors.recording.files import RecordingError, RecordingWriter, open_writer, recording_format
from gateway.errors import RetryableSinkError
from gateway.model import Batch
from gateway.threads import WorkerThread

_T = TypeVar("_T")


class RecordSink:
    def __init__(self, name: str, config: RecordSinkConfig, *, log: structlog.stdlib.BoundLogger | None = None) -> None:
        self.name = name
        self.config = config
        self.target = config.resolve_path()
        self.path: Path | None = None
        """The file being (or last) written: ``target``, or a new name beside a kept Parquet file."""
        self.samples = 0
        self._series: set[tuple[str, str, str]] = set()  # (source, device, tag)
        self._log: Any = log if log is not None else structlog.get_logger("record_sink").bind(sink=name)
        self._writer: RecordingWriter | None = None
        self._executor: WorkerThread | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._closing: asyncio.Future[None] | None = None
        self._dirty = False

    @property
    def tags(self) -> int:
        """Distinct (source, device, tag) recorded by this sink."""
        return len(self._series)

    @property
    def devices(self) -> int:
        """Distinct (source, device) recorded by this sink."""
        return len({(source, device) for source, device, _ in self._series})

    async def open(self) -> None:
        if self._writer is not None:
            return
        self._executor = WorkerThread(f"record-{self.name}")
        try:
            self._writer = await self._submit(self._open_writer)
        except (RecordingError, OSError) as exc:
            self._executor.close()
            self._executor = None
            raise RetryableSinkError(f"cannot open the recording: {exc}") from exc
        self.path = self._writer.path
        if self._writer.streaming:
            self._flusher = asyncio.create_task(self._flush_loop(), name=f"{self.name}-flush")

    async def write(self, batches: Sequence[Batch]) -> None:
        if self._writer is None:
            raise RetryableSinkError("the recording is not open")
        try:
            await self._submit(self._write, self._writer, list(batches))
        except OSError as exc:  # e.g. disk full: the batches stay spooled; rows written before it repeat
            raise RetryableSinkError(f"recording write failed: {exc}") from exc
        self._dirty = True

    def health_problems(self) -> list[str]:
        return []  # a local file: a failing write shows as the engine's "failing writes"

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        writer, self._writer = self._writer, None
        executor, self._executor = self._executor, None
        try:
            if writer is not None and executor is not None:
                self._closing = self._submit(writer.close, executor=executor)  # Parquet: the footer
                await asyncio.shield(self._closing)
        finally:
            if executor is not None:
                executor.close()

    async def wait_closed(self) -> None:
        """Return once the last ``close`` has finished the file, even if a stop deadline cancelled it
        (the file thread carries on); raises what closing raised."""
        if self._closing is not None:
            await asyncio.shield(self._closing)

    # --- on the file thread -------------------------------------------------------------------------

    def _open_writer(self) -> RecordingWriter:
        path = self.target
        if recording_format(path) != "parquet":
            try:
                return open_writer(path, append=True)
            except RecordingError:  # the file holds something else: keep it
                path = _free_name(path)
        elif path.exists() and path.stat().st_size > 0:
            path = _free_name(path)
        if path != self.target:
            self._log.warning("recording file exists and cannot be continued; keeping it", kept=str(self.target),
                              writing=str(path))
        return open_writer(path)

    def _write(self, writer: RecordingWriter, batches: list[Batch]) -> None:
        for b in batches:
            writer.write(b.samples, source=b.source)
            self.samples += len(b.samples)
            self._series.update((b.source, s.device, s.tag) for s in b.samples)

    # --- helpers --------------------------------------------------------------------------------------

    def _submit(
        self, fn: Callable[..., _T], *args: Any, executor: WorkerThread | None = None
    ) -> asyncio.Future[_T]:
        pool = executor or self._executor
        if pool is None:
            raise RetryableSinkError("the recording is not open")
        return pool.submit(fn, *args)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.flush_interval)
            writer = self._writer
            if writer is None or not self._dirty:
                continue
            self._dirty = False
            try:
                await self._submit(writer.flush)
            except OSError as exc:
                self._dirty = True
                self._log.warning("recording flush failed", error=str(exc))


def _free_name(path: Path) -> Path:
    """``rec.csv.gz`` -> the first of ``rec.1.csv.gz``, ``rec.2.csv.gz``, ... that does not exist."""
    ext = {"csv": 4, "csv.gz": 7, "parquet": 8}[recording_format(path)]
    stem, suffix = path.name[:-ext], path.name[-ext:]
    n = 1
    while (candidate := path.with_name(f"{stem}.{n}{suffix}")).exists():
        n += 1
    return candidate
