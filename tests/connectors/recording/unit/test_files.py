"""Recording files: every value type, quality, status, unit and nanosecond time round-trips exactly
through CSV, gzipped CSV and Parquet; malformed files are refused with the line or row named."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connectors.recording.files import (
    COLUMNS,
    RecordedSample,
    RecordingError,
    check_recording_path,
    format_time,
    open_writer,
    parse_time,
    read_recording,
)
from gateway.model import Quality, Sample, Value

T0 = 1_795_428_000_123_456_789  # 2026-11-23T10:00:00.123456789Z

VALUES: list[Value] = [
    True, False, 0, 1, -42, 2**53, -(2**53), 2**53 + 1, 2**64 + 7, 0.1, -0.0, 1e-300, 1.7976931348623157e308,
    float("inf"), float("-inf"), float("nan"), "", "plain", 'a,b "quoted"\nsecond line\r\nthird', "ümlaut ✓",
    "true", "1", None,
]
"""NaN is recorded as NaN (``repr`` writes ``nan``, Parquet stores it); the strings ``"true"`` and ``"1"``
must stay strings, ints beyond 2**53 exact."""

EXTS = ["csv", "csv.gz", "parquet"]


def _samples() -> list[Sample]:
    out = []
    for i, value in enumerate(VALUES):
        quality = (Quality.GOOD, Quality.UNCERTAIN, Quality.BAD)[i % 3]
        unit = (None, "degC", "m³/h")[i % 3]
        # every other sample has no device time: the gateway's is recorded instead
        source_ts = T0 + i * 1_000_000_001 if i % 2 else 0
        out.append(Sample(f"dev{i % 4}", f"tag_{i}", value, quality, 0x80350000 if i % 3 == 2 else i, source_ts,
                          T0 + i * 7, unit))
    return out


def _same(a: object, b: object) -> bool:
    """Equal and of the same type; NaN matches NaN, and -0.0 keeps its sign."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("ext", EXTS)
def test_round_trip_is_exact(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"rec.{ext}"
    samples = _samples()
    with open_writer(path) as w:
        assert w.write(samples[:5], source="line_a") == 5
        w.flush()
        assert w.write(samples[5:], source="line_b") == len(samples) - 5
    got = list(read_recording(path))
    assert len(got) == len(samples)
    for i, (s, r) in enumerate(zip(samples, got, strict=True)):
        assert r.source == ("line_a" if i < 5 else "line_b")
        assert (r.device, r.tag, r.quality, r.status, r.unit) == (s.device, s.tag, s.quality, s.status, s.unit)
        assert r.time_ns == (s.source_ts or s.gateway_ts)
        assert _same(s.value, r.value), (i, s.value, r.value)
        assert isinstance(r, RecordedSample)


def test_csv_text_is_readable_and_typed(tmp_path: Path) -> None:
    path = tmp_path / "rec.csv"
    with open_writer(path) as w:
        w.write([Sample("press", "on", True, source_ts=T0, unit=None),
                 Sample("press", "temp", 0.1, Quality.UNCERTAIN, 5, source_ts=T0, unit="degC")], source="line")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines == [
        ",".join(COLUMNS),
        "2026-11-23T10:00:00.123456789Z,line,press,on,true,bool,good,0,",
        "2026-11-23T10:00:00.123456789Z,line,press,temp,0.1,float,uncertain,5,degC",
    ]


def test_parquet_layout_is_typed_for_dataframes(tmp_path: Path) -> None:
    path = tmp_path / "rec.parquet"
    with open_writer(path) as w:
        w.write([Sample("d", "n", 3, source_ts=T0), Sample("d", "s", "text", source_ts=T0 + 1),
                 Sample("d", "b", 2**60, source_ts=T0 + 2)], source="src")
    table = pq.read_table(path)
    assert table.schema.field("time").type == pa.timestamp("ns", tz="UTC")
    assert table.schema.field("value").type == pa.float64()
    assert table.column("value").to_pylist() == [3.0, None, float(2**60)]
    assert table.column("text").to_pylist() == [None, "text", str(2**60)]
    assert table.column("time").cast(pa.int64()).to_pylist() == [T0, T0 + 1, T0 + 2]
    meta = pq.ParquetFile(path).metadata.row_group(0)
    device = next(meta.column(i) for i in range(meta.num_columns) if meta.column(i).path_in_schema == "device")
    assert any("DICT" in enc for enc in device.encodings)


def test_parquet_row_groups_are_buffered(tmp_path: Path) -> None:
    path = tmp_path / "rec.parquet"
    w = open_writer(path)
    for i in range(12):
        w.write([Sample("d", "t", j, source_ts=T0 + j) for j in range(i * 10_000, (i + 1) * 10_000)], source="s")
    w.close()
    w.close()  # idempotent
    pf = pq.ParquetFile(path)
    assert pf.metadata.num_rows == 120_000
    assert pf.metadata.num_row_groups == 3  # 50k, 50k, 20k: not one group per write call
    assert [r.value for r in read_recording(path)] == list(range(120_000))


def test_empty_recording_has_header_or_schema(tmp_path: Path) -> None:
    for ext in EXTS:
        path = tmp_path / f"empty.{ext}"
        open_writer(path).close()
        assert list(read_recording(path)) == []


def test_csv_append_continues_a_recording(tmp_path: Path) -> None:
    for ext in ("csv", "csv.gz"):
        path = tmp_path / f"rec.{ext}"
        with open_writer(path) as w:
            w.write([Sample("d", "t", 1, source_ts=T0)], source="s")
        with open_writer(path, append=True) as w:
            w.write([Sample("d", "t", 2, source_ts=T0 + 1)], source="s")
        assert [r.value for r in read_recording(path)] == [1, 2]
    other = tmp_path / "notes.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(RecordingError, match="not a recording"):
        open_writer(other, append=True)
    with pytest.raises(RecordingError, match="cannot be appended"):
        open_writer(tmp_path / "x.parquet", append=True)


def test_time_format() -> None:
    assert format_time(T0) == "2026-11-23T10:00:00.123456789Z"
    assert format_time(0) == "1970-01-01T00:00:00.000000000Z"
    assert parse_time("2026-11-23T10:00:00.123456789Z") == T0
    assert parse_time("2026-11-23T10:00:00.5Z") == T0 - 123_456_789 + 500_000_000
    assert parse_time("2026-11-23T10:00:00Z") == T0 - 123_456_789
    for bad in ("2026-11-23 10:00:00Z", "2026-11-23T10:00:00+01:00", "2026-13-01T00:00:00Z", "yesterday"):
        with pytest.raises(ValueError):
            parse_time(bad)


def test_unknown_extension_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match=r"\.csv, \.csv\.gz or \.parquet"):
        open_writer(tmp_path / "rec.json")
    with pytest.raises(RecordingError, match="must end in"):
        check_recording_path(tmp_path / "rec")
    with pytest.raises(RecordingError, match="cannot open"):
        list(read_recording(tmp_path / "missing.csv"))


HEADER = ",".join(COLUMNS)
GOOD_ROW = "2026-11-23T10:00:00.1Z,s,d,t,1,int,good,0,"


@pytest.mark.parametrize(
    ("body", "where", "what"),
    [
        ("", "empty file", "no header"),
        ("time,source,device\n", "line 1", "missing column"),
        (f"{HEADER}\n{GOOD_ROW}\n2026-11-23T10:00:00Z,s,d,t,x1,int,good,0,\n", "line 3", "invalid literal"),
        (f"{HEADER}\n{GOOD_ROW}\n2026-11-23T10:00:00Z,s,d,t,yes,bool,good,0,\n", "line 3", "true or false"),
        (f"{HEADER}\n{GOOD_ROW}\n2026-11-23T10:00:00Z,s,d,t,1,decimal,good,0,\n", "line 3", "unknown type"),
        (f"{HEADER}\n{GOOD_ROW}\n2026-11-23T10:00:00Z,s,d,t,1,int,fine,0,\n", "line 3", "unknown quality"),
        (f"{HEADER}\n{GOOD_ROW}\n10:00,s,d,t,1,int,good,0,\n", "line 3", "ISO 8601"),
        (f"{HEADER}\n{GOOD_ROW}\n2026-11-23T10:00:00Z,s,d\n", "line 3", "expected 9 fields"),
        # a quoted value spanning lines 2-3: the next row starts on line 4
        (f'{HEADER}\n2026-11-23T10:00:00Z,s,d,t,"a\nb",str,good,0,\n2026-11-23T10:00:00Z,s,d,t,1,int,good,x,\n',
         "line 4", "invalid literal"),
        (f'{HEADER}\n2026-11-23T10:00:00Z,s,d,t,"unclosed\n', "line 2", "unexpected end of data"),
    ],
)
def test_malformed_csv_names_the_line(tmp_path: Path, body: str, where: str, what: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(body, encoding="utf-8")
    reader = read_recording(path)
    with pytest.raises(RecordingError) as info:
        list(reader)
    assert str(info.value).startswith(f"{path}: {where}")
    assert what in str(info.value)


def test_good_rows_before_a_bad_one_are_read(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(f"{HEADER}\n{GOOD_ROW}\n\n{GOOD_ROW}\nbroken\n", encoding="utf-8")
    got = []
    with pytest.raises(RecordingError, match="line 5"):
        for r in read_recording(path):
            got.append(r.value)
    assert got == [1, 1]


def test_truncated_gzip_is_a_recording_error(tmp_path: Path) -> None:
    path = tmp_path / "rec.csv.gz"
    with open_writer(path) as w:
        w.write([Sample("d", "t", i, source_ts=T0 + i) for i in range(5000)], source="s")
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(RecordingError, match="cannot read"):
        list(read_recording(path))


def test_malformed_parquet_names_the_row(tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    good = open_writer(path)
    good.write([Sample("d", "t", 1, source_ts=T0), Sample("d", "t", 2, source_ts=T0)], source="s")
    good.close()
    table = pq.read_table(path)
    types = table.column("type").to_pylist()
    types[1] = "decimal"
    pq.write_table(table.set_column(table.schema.get_field_index("type"), "type", pa.array(types)), path)
    with pytest.raises(RecordingError, match=r"row 2: unknown type 'decimal'"):
        list(read_recording(path))
    pq.write_table(table.drop_columns(["text"]), path)
    with pytest.raises(RecordingError, match="missing column"):
        list(read_recording(path))
    path.write_bytes(b"not parquet at all")
    with pytest.raises(RecordingError, match="not a readable Parquet file"):
        list(read_recording(path))


def test_parquet_without_pyarrow_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pyarrow", None)  # makes `import pyarrow` raise ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(RecordingError, match=r"Parquet needs pyarrow: pip install 'shopfloor-edge-gateway\[parquet\]'"):
        open_writer(tmp_path / "rec.parquet")
    with pytest.raises(RecordingError, match="Parquet needs pyarrow"):
        list(read_recording(tmp_path / "rec.parquet"))
