"""Recording files: samples as rows of CSV (``.csv``, ``.csv.gz``) or Parquet (``.parquet``), read back exactly.

The extension picks the format. Both have the columns ``time, source, device, tag, value, type, quality,
status, unit``; ``time`` is the sample's ``source_ts``, or ``gateway_ts`` when the device sent none.

CSV is text, so ``type`` (``bool``/``int``/``float``/``str``/``null``) says how to read ``value`` back:
booleans are ``true``/``false`` and floats are written with ``repr``, which round-trips every float,
``nan`` and ``inf`` included. An empty ``unit`` reads back as None.

Parquet keeps one numeric ``value`` column (float64: what pandas and polars plot and aggregate directly)
plus a ``text`` column (string) beside it: the value of ``str`` samples, and the decimal digits of an
``int`` beyond 2**53 that float64 cannot hold exactly (``value`` then holds its nearest float). So every
bool, int and float comes back exactly. ``time`` is ``timestamp[ns, tz=UTC]``; the string columns are
dictionary-encoded in the file but plain strings in Arrow, so a DataFrame gets ordinary string columns.
pyarrow is imported only when a Parquet file is opened (it is the ``parquet`` extra).
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType, TracebackType
from typing import IO, Any, Literal

from gateway.model import Quality, Sample, Value

Format = Literal["csv", "csv.gz", "parquet"]

COLUMNS = ("time", "source", "device", "tag", "value", "type", "quality", "status", "unit")
PARQUET_COLUMNS = ("time", "source", "device", "tag", "value", "text", "type", "quality", "status", "unit")

ROW_GROUP_ROWS = 50_000
"""Parquet rows buffered before a row group is written (a group holds at least this many, plus at most one
write call's rows): large enough to compress well, small enough for an edge box."""

PYARROW_MISSING = "Parquet needs pyarrow: pip install 'shopfloor-edge-gateway[parquet]'"

_EXACT_INT = 2**53  # beyond it float64 skips integers
_QUALITIES = {q.label: q for q in Quality}
_TYPES = frozenset({"bool", "int", "float", "str", "null"})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_GZ_TEXT_MODES: dict[str, Literal["rt", "wt", "at"]] = {"r": "rt", "w": "wt", "a": "at"}
_TIME = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?Z")


class RecordingError(Exception):
    """A recording that cannot be read or written: an unknown extension, no pyarrow, a malformed row."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


@dataclass(frozen=True, slots=True)
class RecordedSample:
    time_ns: int
    source: str
    device: str
    tag: str
    value: Value
    quality: Quality
    status: int
    unit: str | None


# --- formats and helpers ---------------------------------------------------------------------------


def recording_format(path: Path) -> Format:
    """The format ``path``'s extension names; RecordingError for any other extension."""
    name = path.name.lower()
    if name.endswith(".csv.gz"):
        return "csv.gz"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".parquet"):
        return "parquet"
    raise RecordingError(path, "unknown recording format: the file name must end in .csv, .csv.gz or .parquet")


def check_recording_path(path: Path) -> Format:
    """``recording_format`` plus, for Parquet, that pyarrow is installed (found, not imported)."""
    fmt = recording_format(path)
    if fmt == "parquet" and importlib.util.find_spec("pyarrow") is None:
        raise RecordingError(path, PYARROW_MISSING)
    return fmt


def _pyarrow(path: Path) -> tuple[ModuleType, ModuleType]:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise RecordingError(path, PYARROW_MISSING) from None
    return pyarrow, pyarrow.parquet


def format_time(ns: int) -> str:
    """UTC ISO 8601 with nanoseconds: ``2026-11-23T10:00:00.123456789Z``."""
    seconds, frac = divmod(ns, 1_000_000_000)
    return (_EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


def parse_time(text: str) -> int:
    """The inverse of ``format_time``; fewer fractional digits (or none) are accepted."""
    m = _TIME.fullmatch(text)
    if m is None:
        raise ValueError(f"time {text!r} is not UTC ISO 8601 like 2026-11-23T10:00:00.123456789Z")
    y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
    try:
        when = datetime(y, mo, d, h, mi, s, tzinfo=UTC)
    except ValueError as exc:
        raise ValueError(f"time {text!r}: {exc}") from None
    seconds = (when - _EPOCH) // timedelta(seconds=1)
    return seconds * 1_000_000_000 + int((m.group(7) or "0").ljust(9, "0"))


def _time_of(s: Sample) -> int:
    return s.source_ts or s.gateway_ts


def _type_of(value: Value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):  # before int: bool is an int
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, list):
        return "json"
    return "str"


def _csv_value(value: Value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):  # an array or matrix
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _parse_csv_value(text: str, kind: str) -> Value:
    if kind == "float":
        return float(text)
    if kind == "int":
        return int(text)
    if kind == "str":
        return text
    if kind == "json":
        return _parse_array(text)
    if kind == "bool":
        if text in ("true", "false"):
            return text == "true"
        raise ValueError(f"bool value must be true or false, not {text!r}")
    if kind == "null":
        if text:
            raise ValueError(f"null value must be empty, not {text!r}")
        return None
    raise ValueError(f"unknown type {kind!r}; expected one of {', '.join(sorted(_TYPES))}")


def _quality(label: str) -> Quality:
    q = _QUALITIES.get(label)
    if q is None:
        raise ValueError(f"unknown quality {label!r}; expected good, uncertain or bad")
    return q


def _open_text(path: Path, mode: Literal["r", "w", "a"], *, gz: bool) -> IO[str]:
    """A text file for the csv module (``newline=""``); appending to a .gz adds a gzip member."""
    if gz:
        return gzip.open(path, _GZ_TEXT_MODES[mode], encoding="utf-8", newline="")
    return open(path, mode, encoding="utf-8", newline="")


# --- writing ---------------------------------------------------------------------------------------


class RecordingWriter(ABC):
    """Appends samples to a recording. Not thread-safe: use it from one thread at a time."""

    streaming: bool
    """True when what ``flush`` wrote is readable before ``close`` (CSV); Parquet needs its footer."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows = 0

    @abstractmethod
    def write(self, samples: Sequence[Sample], *, source: str) -> int:
        """Write ``samples`` of the source ``source``; returns how many rows that was."""

    @abstractmethod
    def flush(self) -> None:
        """Hand everything written so far to the OS (Parquet: as a row group)."""

    @abstractmethod
    def close(self) -> None:
        """Flush and finish the file (Parquet: write the footer). Idempotent."""

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class _CsvWriter(RecordingWriter):
    streaming = True

    def __init__(self, path: Path, *, gz: bool, append: bool) -> None:
        super().__init__(path)
        has_header = append and path.exists() and path.stat().st_size > 0
        if has_header:
            _check_header(path, gz)
        mode: Literal["a", "w"] = "a" if append else "w"
        self._file = _open_text(path, mode, gz=gz)
        self._csv = csv.writer(self._file, lineterminator="\n")
        if not has_header:
            self._csv.writerow(COLUMNS)

    def write(self, samples: Sequence[Sample], *, source: str) -> int:
        self._csv.writerows(
            (format_time(_time_of(s)), source, s.device, s.tag, _csv_value(s.value), _type_of(s.value),
             s.quality.label, s.status, s.unit or "")
            for s in samples
        )
        self.rows += len(samples)
        return len(samples)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _check_header(path: Path, gz: bool) -> None:
    with _open_text(path, "r", gz=gz) as f:
        try:
            header = next(csv.reader(f), [])
        except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
            raise RecordingError(path, f"cannot append: not a readable recording ({exc})") from None
    if set(COLUMNS) - set(header):
        raise RecordingError(path, "cannot append: the file is not a recording (its first line is no header of one)")


class _ParquetWriter(RecordingWriter):
    streaming = False

    def __init__(self, path: Path, *, row_group_rows: int = ROW_GROUP_ROWS) -> None:
        super().__init__(path)
        pa, pq = _pyarrow(path)
        self._pa = pa
        self._row_group_rows = row_group_rows
        text = pa.string()
        self._schema = pa.schema([
            ("time", pa.timestamp("ns", tz="UTC")), ("source", text), ("device", text), ("tag", text),
            ("value", pa.float64()), ("text", text), ("type", text), ("quality", text), ("status", pa.int64()),
            ("unit", text),
        ])
        self._writer: Any = pq.ParquetWriter(
            str(path), self._schema, compression="zstd",
            use_dictionary=["source", "device", "tag", "type", "quality", "unit"],
        )
        self._cols: tuple[list[Any], ...] = tuple([] for _ in PARQUET_COLUMNS)
        self._closed = False

    def write(self, samples: Sequence[Sample], *, source: str) -> int:
        times, sources, devices, tags, values, texts, types, qualities, statuses, units = self._cols
        if len(times) >= self._row_group_rows:
            # Before buffering this call's rows: if the row group fails, a retry of the same samples
            # does not find them buffered already.
            self.flush()
        for s in samples:
            v = s.value
            times.append(_time_of(s))
            sources.append(source)
            devices.append(s.device)
            tags.append(s.tag)
            if isinstance(v, str):
                values.append(None)
                texts.append(v)
            elif isinstance(v, list):
                values.append(None)
                texts.append(_csv_value(v))
            elif isinstance(v, int) and not isinstance(v, bool) and abs(v) > _EXACT_INT:
                values.append(float(v))
                texts.append(str(v))
            else:
                values.append(None if v is None else float(v))
                texts.append(None)
            types.append(_type_of(v))
            qualities.append(s.quality.label)
            statuses.append(s.status)
            units.append(s.unit)
        self.rows += len(samples)
        return len(samples)

    def flush(self) -> None:
        if not self._cols[0]:
            return
        table = self._pa.Table.from_arrays(
            [self._pa.array(col, type=field.type) for col, field in zip(self._cols, self._schema, strict=True)],
            schema=self._schema,
        )
        self._writer.write_table(table)
        for col in self._cols:
            col.clear()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.flush()
        finally:
            self._writer.close()


def open_writer(path: Path, *, append: bool = False) -> RecordingWriter:
    """A writer for ``path`` in the format its extension names; creates (truncates) the file.

    ``append`` continues an existing CSV recording instead (a finished Parquet file cannot grow).
    """
    fmt = recording_format(path)
    if fmt == "parquet":
        if append:
            raise RecordingError(path, "a Parquet recording cannot be appended to")
        return _ParquetWriter(path)
    return _CsvWriter(path, gz=fmt == "csv.gz", append=append)


# --- reading ---------------------------------------------------------------------------------------


def read_recording(path: Path) -> Iterator[RecordedSample]:
    """The samples of a recording, in file order. Raises RecordingError naming the line (CSV) or row
    (Parquet) of the first malformed one."""
    fmt = recording_format(path)
    if fmt == "parquet":
        return _read_parquet(path)
    return _read_csv(path, gz=fmt == "csv.gz")


def _read_csv(path: Path, *, gz: bool) -> Iterator[RecordedSample]:
    try:
        f = _open_text(path, "r", gz=gz)
    except OSError as exc:
        raise RecordingError(path, f"cannot open: {exc.strerror or exc}") from None
    with f:
        reader = csv.reader(f, strict=True)
        line = 1
        try:
            header = next(reader, None)
            if header is None:
                raise RecordingError(path, "empty file: no header line")
            index = {name: i for i, name in enumerate(header)}
            missing = [c for c in COLUMNS if c not in index]
            if missing:
                raise RecordingError(path, f"line 1: not a recording header; missing column(s) {', '.join(missing)}")
            cols = [index[c] for c in COLUMNS]
            width = max(cols) + 1
            while True:
                line = reader.line_num + 1  # where the next row starts (a quoted field may span lines)
                row = next(reader, None)
                if row is None:
                    return
                if not row:
                    continue  # a blank line
                if len(row) < width:
                    raise RecordingError(path, f"line {line}: expected {len(header)} fields, found {len(row)}")
                try:
                    sample = _csv_sample(*(row[i] for i in cols))
                except ValueError as exc:
                    raise RecordingError(path, f"line {line}: {exc}") from None
                yield sample
        except csv.Error as exc:
            raise RecordingError(path, f"line {line}: {exc}") from None
        except (OSError, EOFError, UnicodeDecodeError) as exc:  # e.g. a truncated .gz, a binary file
            raise RecordingError(path, f"line {line}: cannot read: {exc}") from None


def _csv_sample(
    time_: str, source: str, device: str, tag: str, value: str, kind: str, quality: str, status: str, unit: str
) -> RecordedSample:
    return RecordedSample(
        time_ns=parse_time(time_), source=source, device=device, tag=tag, value=_parse_csv_value(value, kind),
        quality=_quality(quality), status=int(status), unit=unit or None,
    )


def _read_parquet(path: Path) -> Iterator[RecordedSample]:
    pa, pq = _pyarrow(path)
    try:
        pf = pq.ParquetFile(str(path))
    except (pa.ArrowException, OSError) as exc:
        raise RecordingError(path, f"not a readable Parquet file: {exc}") from None
    schema = pf.schema_arrow
    missing = [c for c in PARQUET_COLUMNS if c not in schema.names]
    if missing:
        raise RecordingError(path, f"not a recording: missing column(s) {', '.join(missing)}")
    time_type = schema.field("time").type
    if not pa.types.is_timestamp(time_type):
        raise RecordingError(path, f"column time is {time_type}, not a timestamp")
    row = 0
    batches = pf.iter_batches(batch_size=65_536, columns=list(PARQUET_COLUMNS))
    while True:
        try:
            batch = next(batches, None)
            if batch is None:
                return
            ns = batch.column("time").cast(pa.timestamp("ns", tz=time_type.tz)).cast(pa.int64()).to_pylist()
            cols = [ns, *(batch.column(c).to_pylist() for c in PARQUET_COLUMNS[1:])]
        except (pa.ArrowException, OSError) as exc:
            raise RecordingError(path, f"row {row + 1}: cannot read: {exc}") from None
        for values in zip(*cols, strict=True):
            row += 1
            try:
                sample = _parquet_sample(*values)
            except (ValueError, TypeError) as exc:
                raise RecordingError(path, f"row {row}: {exc}") from None
            yield sample


def _parquet_sample(
    time_ns: int | None, source: str | None, device: str | None, tag: str | None, number: float | None,
    text: str | None, kind: str | None, quality: str | None, status: int | None, unit: str | None,
) -> RecordedSample:
    if time_ns is None or source is None or device is None or tag is None or quality is None or status is None:
        raise ValueError("time, source, device, tag, quality and status must not be null")
    return RecordedSample(
        time_ns=time_ns, source=source, device=device, tag=tag, value=_parquet_value(number, text, kind),
        quality=_quality(quality), status=status, unit=unit,
    )


def _parse_array(text: str) -> Value:
    value = json.loads(text)
    if not isinstance(value, list):
        raise ValueError(f"a json value must be an array, not {text[:40]!r}")
    return value


def _parquet_value(number: float | None, text: str | None, kind: str | None) -> Value:
    if kind in ("str", "json"):
        if text is None:
            raise ValueError(f"a {kind} value needs the text column")
        return text if kind == "str" else _parse_array(text)
    if kind == "null":
        return None
    if kind == "int" and text is not None:
        return int(text)  # beyond 2**53: the exact digits
    if number is None:
        raise ValueError(f"a {kind} value needs the value column")
    if kind == "float":
        return number
    if kind == "int":
        if not number.is_integer():
            raise ValueError(f"int value {number!r} is not an integer")
        return int(number)
    if kind == "bool":
        if number not in (0.0, 1.0):
            raise ValueError(f"bool value must be 0 or 1, not {number!r}")
        return number == 1.0
    raise ValueError(f"unknown type {kind!r}; expected one of {', '.join(sorted(_TYPES))}")

