"""The InfluxDB sink against a fake InfluxDB on a real socket (status codes, body, precision) and against
a real VictoriaMetrics (end-to-end delivery, read back through /api/v1/export)."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import structlog.testing

from connectors.influxdb.config import InfluxSinkConfig
from connectors.influxdb.sink import InfluxSink
from gateway.config.site import SiteConfig
from gateway.errors import RetryableSinkError
from gateway.logs import get_logger
from gateway.model import Batch, Quality, Sample
from tests.servers import VictoriaMetrics, free_port

SITE = SiteConfig(enterprise="acme", site="busan", area="packaging", line="line1")

Reply = tuple[int, dict[str, str], bytes]


@dataclass
class FakeInflux:
    port: int
    decide: Callable[[list[str]], Reply]
    requests: list[tuple[str, dict[str, str], list[str]]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def accepted_lines(self) -> list[str]:
        return [line for _, _, lines in self.requests for line in lines]


@contextmanager
def fake_influx(decide: Callable[[list[str]], Reply]) -> Iterator[FakeInflux]:
    fake = FakeInflux(0, decide)
    accepted: list[tuple[str, dict[str, str], list[str]]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Content-Encoding") == "gzip":
                raw = gzip.decompress(raw)
            lines = raw.decode().split("\n")
            status, headers, body = fake.decide(lines)
            if status == 204:
                accepted.append((self.path, dict(self.headers), lines))
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.port = server.server_address[1]
    fake.requests = accepted
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


def ok(lines: list[str]) -> Reply:
    return 204, {}, b""


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(
        {"code": "invalid", "message": message}).encode()


@dataclass
class Rejections:
    """The sink's ``DeadLetters`` in these tests: what it handed over, in order."""

    got: list[tuple[int, list[Sample], str]] = field(default_factory=list)

    def reject(self, batch: int, samples: Sequence[Sample], error: str) -> None:
        self.got.append((batch, list(samples), error))


def make_sink(url: str, tmp_path: Path, rejections: Rejections | None = None, **cfg: object) -> InfluxSink:
    config = InfluxSinkConfig.model_validate({"url": url, "token": "s3cret", "org": "plant", "bucket": "edge", **cfg})
    return InfluxSink("tsdb", config, SITE, dead_letters=rejections or Rejections(), log=get_logger("test"))


TS = 1_795_460_550_318_123_456


def samples(device: str = "filler", ts: int = TS) -> list[Sample]:
    return [
        Sample(device, "temperature", 21.5, Quality.GOOD, 0, ts, ts + 5, "degC"),
        Sample(device, "count", 7, Quality.GOOD, 0, ts, ts + 5),
        Sample(device, "running", True, Quality.GOOD, 0, ts, ts + 5),
        Sample(device, "state", 'R "1", a\\b', Quality.GOOD, 0, ts, ts + 5),
    ]


async def test_line_protocol_string_fields_precision_and_request(tmp_path: Path) -> None:
    with fake_influx(ok) as fake:
        sink = make_sink(fake.url, tmp_path, precision="ms")
        await sink.open()
        await sink.write([Batch("plc 1", [*samples(), Sample("filler", "pressure", None, Quality.BAD, 4, TS, TS)])])
        await sink.close()
    path, headers, lines = fake.requests[0]
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
    assert query == {"org": ["plant"], "bucket": ["edge"], "precision": ["ms"]}
    assert headers["Authorization"] == "Token s3cret"
    assert headers["Content-Encoding"] == "gzip"
    # one point per device and scan; the unreadable pressure has no value, so no point of its own
    assert lines == [
        'plc\\ 1,device=filler,quality=good,site=busan '
        'temperature=21.5,count=7i,running=true,state="R \\"1\\", a\\\\b" 1795460550318'
    ]


@pytest.mark.parametrize(("precision", "stamp"), [("s", "1795460550"), ("us", "1795460550318123"),
                                                  ("ns", "1795460550318123456")])
async def test_value_layout_quality_field_and_precisions(tmp_path: Path, precision: str, stamp: str) -> None:
    with fake_influx(ok) as fake:
        sink = make_sink(fake.url, tmp_path, precision=precision, fields="value", quality="field",
                         measurement="{line}", tags={"dev": "{device}"}, gzip=False)
        await sink.open()
        await sink.write([Batch("plc", [*samples()[:1], Sample("m 2", "p=1", 2.0, Quality.UNCERTAIN, 0, TS, TS)])])
        await sink.close()
    path, headers, lines = fake.requests[0]
    assert "Content-Encoding" not in headers
    assert f"precision={precision}" in path
    assert lines == [f"line1,dev=filler,tag=temperature value=21.5,quality=0i {stamp}",
                     f"line1,dev=m\\ 2,tag=p\\=1 value=2.0,quality=1i {stamp}"]


@pytest.mark.parametrize("level", [1, 9])
async def test_gzip_level_is_the_compression_sent(tmp_path: Path, level: int) -> None:
    sizes: list[int] = []

    def decide(lines: list[str]) -> Reply:
        sizes.append(len(gzip.compress("\n".join(lines).encode(), level)))
        return ok(lines)

    with fake_influx(decide) as fake:
        sink = make_sink(fake.url, tmp_path, gzip_level=level, fields="value")
        await sink.open()
        await sink.write([Batch("plc", [Sample("m1", f"t{i}", i / 7, Quality.GOOD, 0, TS, TS) for i in range(500)])])
        await sink.close()
    (request,) = fake.requests
    assert request[1]["Content-Encoding"] == "gzip" and len(request[2]) == 500
    # same level, same deflate output: the body on the wire is that long (give or take the gzip header)
    assert abs(int(request[1]["Content-Length"]) - sizes[0]) <= 16


async def test_400_isolates_the_bad_points_and_writes_the_good(tmp_path: Path) -> None:
    def decide(lines: list[str]) -> Reply:
        if any("bad" in line for line in lines):
            return error(400, "partial write: field type conflict")
        return ok(lines)

    rejections = Rejections()
    points = [Sample("m1", "good" if i not in (13, 77) else "bad", float(i), Quality.GOOD, 0, TS + i * 10**6, TS)
              for i in range(100)]
    with fake_influx(decide) as fake:
        sink = make_sink(fake.url, tmp_path, rejections, fields="value", max_request_lines=1000)
        await sink.open()
        await sink.write([Batch("plc", points[:50]), Batch("plc", points[50:])])
        await sink.close()
    written = [line.rsplit(" ", 2)[1] for line in fake.accepted_lines()]
    assert sorted(written, key=lambda v: float(v.split("=")[1])) == [
        f"value={float(i)}" for i in range(100) if i not in (13, 77)]
    # each rejected point's own sample, by the position of its batch in the write, with the server's reason
    assert rejections.got == [(0, [points[13]], "HTTP 400: partial write: field type conflict"),
                              (1, [points[77]], "HTTP 400: partial write: field type conflict")]
    assert sink.dead_lettered == 2


async def test_a_per_device_point_rejects_every_sample_it_carries(tmp_path: Path) -> None:
    def decide(lines: list[str]) -> Reply:
        return error(400, "bad point") if any("press" in line for line in lines) else ok(lines)

    rejections = Rejections()
    press = [Sample("press", "p", 1.0, Quality.GOOD, 0, TS, TS), Sample("press", "q", 2, Quality.GOOD, 0, TS, TS)]
    filler = [Sample("filler", "t", 3.0, Quality.GOOD, 0, TS, TS)]
    with fake_influx(decide) as fake:
        sink = make_sink(fake.url, tmp_path, rejections)
        await sink.open()
        await sink.write([Batch("plc", filler + press)])
        await sink.close()
    assert [line.split(" ")[1] for line in fake.accepted_lines()] == ["t=3.0"]
    assert rejections.got == [(0, press, "HTTP 400: bad point")] and sink.dead_lettered == 2


async def test_a_write_that_fails_later_rejects_nothing(tmp_path: Path) -> None:
    """Bad points found in the first request, then the server fails: the write is retried whole, so the
    points it rejected must not reach the dead letters yet (they would be rejected twice)."""

    def decide(lines: list[str]) -> Reply:
        if any("busy" in line for line in lines):
            return error(503, "busy")
        return error(400, "bad point") if any("bad" in line for line in lines) else ok(lines)

    rejections = Rejections()
    points = [Sample("m1", "bad" if i == 3 else "busy" if i == 15 else "ok", float(i), Quality.GOOD, 0, TS + i, TS)
              for i in range(20)]
    with fake_influx(decide) as fake:
        sink = make_sink(fake.url, tmp_path, rejections, fields="value", max_request_lines=10)
        await sink.open()
        with pytest.raises(RetryableSinkError):
            await sink.write([Batch("plc", points)])
        await sink.close()
    assert rejections.got == [] and sink.dead_lettered == 0
    assert len(fake.accepted_lines()) == 9  # the good points of the first request went in meanwhile


async def test_413_splits_until_requests_fit(tmp_path: Path) -> None:
    def decide(lines: list[str]) -> Reply:
        return error(413, "request too large") if len(lines) > 30 else ok(lines)

    with fake_influx(decide) as fake:
        sink = make_sink(fake.url, tmp_path, fields="value")
        await sink.open()
        await sink.write([Batch("plc", [Sample("m1", "t", float(i), Quality.GOOD, 0, TS + i * 10**6, TS)
                                        for i in range(200)])])
        await sink.close()
    assert len(fake.accepted_lines()) == 200 and all(len(r[2]) <= 30 for r in fake.requests)
    assert sink.dead_lettered == 0


@pytest.mark.parametrize(("status", "headers", "retry_after"), [
    (503, {}, None), (429, {"Retry-After": "7"}, 7.0), (500, {"Retry-After": "2"}, 2.0),
])
async def test_server_busy_is_retryable_with_retry_after(
        tmp_path: Path, status: int, headers: dict[str, str], retry_after: float | None) -> None:
    with fake_influx(lambda lines: error(status, "busy", headers)) as fake:
        sink = make_sink(fake.url, tmp_path)
        await sink.open()
        with pytest.raises(RetryableSinkError) as err:
            await sink.write([Batch("plc", samples())])
        await sink.close()
    assert err.value.retry_after == retry_after
    assert sink.dead_lettered == 0


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_failure_is_loud_and_never_drops(tmp_path: Path, status: int) -> None:
    replies = [error(status, "unauthorized access")] * 2 + [ok([])]
    # captured from structlog itself: where it prints depends on whether an earlier test configured logging
    with structlog.testing.capture_logs() as logs, fake_influx(lambda lines: replies.pop(0)) as fake:
        sink = make_sink(fake.url, tmp_path)
        await sink.open()
        for _ in range(2):
            with pytest.raises(RetryableSinkError, match=f"not authorized \\(HTTP {status}\\)"):
                await sink.write([Batch("plc", samples())])
        await sink.write([Batch("plc", samples())])  # the token was fixed: the same data goes through
        await sink.close()
    assert len(fake.accepted_lines()) == 1 and sink.dead_lettered == 0
    refused = [e for e in logs if e["event"].startswith("InfluxDB refuses the token")]
    assert len(refused) == 1 and refused[0]["log_level"] == "error"  # loud, but once a minute, not per retry


async def test_connection_refused_is_retryable(tmp_path: Path) -> None:
    sink = make_sink(f"http://127.0.0.1:{free_port()}", tmp_path, timeout="2s")
    await sink.open()
    with pytest.raises(RetryableSinkError, match="cannot reach"):
        await sink.write([Batch("plc", samples())])
    await sink.close()


def vm_export(vm: VictoriaMetrics, match: str) -> list[dict[str, object]]:
    q = urllib.parse.urlencode({"match[]": match})
    body = urllib.request.urlopen(f"{vm.url}/api/v1/export?{q}", timeout=5).read()
    return [json.loads(line) for line in body.splitlines()]


async def poll_export(vm: VictoriaMetrics, match: str, pred: Callable[[list[dict[str, object]]], bool],
                      timeout: float = 15.0) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while True:
        await asyncio.to_thread(vm.force_flush)
        rows = await asyncio.to_thread(vm_export, vm, match)
        if pred(rows):
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"VictoriaMetrics did not show the data in {timeout}s: {rows}")
        await asyncio.sleep(0.2)


async def test_delivery_to_victoria_metrics(victoria_metrics_server: VictoriaMetrics, tmp_path: Path) -> None:
    vm = victoria_metrics_server
    now = time.time_ns()
    base = now - now % 10**9
    sink = make_sink(f"{vm.url}", tmp_path, measurement="vmtest", tags={"device": "{device}", "line": "{line}"})
    await sink.open()
    batches = [Batch("plc", [Sample("filler", "temperature", 20.0 + i, Quality.GOOD, 0, base + i * 1_500_000, now),
                             Sample("filler", "count", i, Quality.GOOD, 0, base + i * 1_500_000, now),
                             Sample("filler", "running", i % 2 == 0, Quality.GOOD, 0, base + i * 1_500_000, now)])
               for i in range(40)]
    await sink.write(batches)
    await sink.close()
    rows = await poll_export(vm, '{__name__=~"vmtest_.*"}',
                             lambda rows: sum(len(r["values"]) for r in rows) >= 120)  # type: ignore[arg-type,misc]
    series = {r["metric"]["__name__"]: r for r in rows}  # type: ignore[index]
    assert set(series) == {"vmtest_temperature", "vmtest_count", "vmtest_running"}
    assert series["vmtest_temperature"]["metric"] == {"__name__": "vmtest_temperature", "device": "filler",
                                                      "line": "line1", "quality": "good"}
    expected_ts = [(base + i * 1_500_000) // 10**6 for i in range(40)]  # millisecond precision
    assert series["vmtest_temperature"]["timestamps"] == expected_ts
    assert series["vmtest_temperature"]["values"] == [20.0 + i for i in range(40)]
    assert series["vmtest_count"]["values"] == list(range(40))
    assert series["vmtest_running"]["values"] == [1 if i % 2 == 0 else 0 for i in range(40)]
