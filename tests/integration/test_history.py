"""A tag's history for the status page's chart: exact buckets from the embedded store, the SVG drawn from
them, and the HTTP API's answers (ranges, zoom, refusals, auth) against a running gateway."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from connectors.sqlite.store import TimeSeriesStore
from gateway.history import Bucket, History, render_svg
from gateway.model import Batch, Quality, Sample
from tests.gateways import StartGateway
from tests.integration.test_status import base_config, get
from tests.waiting import until

SEC = 1_000_000_000
T0 = 1_780_000_000 * SEC  # a round minute


def point(tag: str, value: Any, t: float, quality: Quality = Quality.GOOD) -> Sample:
    ts = T0 + int(t * SEC)
    return Sample("oven", tag, value if quality is not Quality.BAD else None, quality,
                  0 if quality is not Quality.BAD else 0x800A0000, ts, ts, "degC")


async def test_buckets_are_exact_and_text_is_not_charted(tmp_path: Path) -> None:
    store = TimeSeriesStore(str(tmp_path / "store.db"))
    await store.open()
    try:
        temps = [point("temp", v, t) for t, v in enumerate([10.0, 20.0, 30.0, 5.0])]  # two 2 s buckets
        temps += [point("temp", 100.0, 4, Quality.UNCERTAIN), point("temp", None, 5, Quality.BAD)]
        await store.write([Batch("line", [*temps, point("recipe", "A-12", 0), point("door", True, 1)])])
        await store.compact()  # half the points compacted into history, half still recent: both are read
        await store.write([Batch("line", [point("temp", 7.0, 6)])])
        h = await store.history("line", "oven", "temp", T0, T0 + 8 * SEC, 4)  # 4 buckets of 2 s
        assert h is not None and (h.unit, h.width_ns, h.numeric) == ("degC", 2 * SEC, True)
        assert h.buckets == (
            Bucket(T0, 15.0, 10.0, 20.0, Quality.GOOD, 2),
            Bucket(T0 + 2 * SEC, 17.5, 5.0, 30.0, Quality.GOOD, 2),
            Bucket(T0 + 4 * SEC, 100.0, 100.0, 100.0, Quality.BAD, 2),  # the worst quality of the bucket
            Bucket(T0 + 6 * SEC, 7.0, 7.0, 7.0, Quality.GOOD, 1),
        )
        recipe = await store.history("line", "oven", "recipe", T0, T0 + 8 * SEC, 4)
        assert recipe is not None and not recipe.numeric
        door = await store.history("line", "oven", "door", T0, T0 + 8 * SEC, 4)
        assert door is not None and door.buckets[0].mean == 1.0  # booleans chart as 0/1
        assert await store.history("line", "oven", "nope", T0, T0 + 8 * SEC, 4) is None
        # at most the buckets asked for, 1 s wide at least
        wide = await store.history("line", "oven", "temp", T0 - 3600 * SEC, T0 + 3600 * SEC, 600)
        assert wide is not None and wide.width_ns == 12 * SEC and len(wide.buckets) == 1
    finally:
        await store.close()


def test_the_svg_has_axes_unit_band_shading_and_a_line() -> None:
    h = History("line", "oven", "temp", "degC", T0, T0 + 60 * SEC, 10 * SEC, (
        Bucket(T0, 15.0, 10.0, 20.0, Quality.GOOD, 3), Bucket(T0 + 10 * SEC, 17.0, 16.0, 18.0, Quality.GOOD, 2),
        Bucket(T0 + 20 * SEC, None, None, None, Quality.BAD, 4), Bucket(T0 + 30 * SEC, 22.0, 22.0, 22.0,
                                                                         Quality.UNCERTAIN, 1)))
    svg = render_svg(h)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert '>degC</text>' in svg and "time (UTC)" in svg
    assert svg.count('class="band"') == 1 and svg.count('class="q-bad"') == 1 and svg.count('class="q-uncertain"') == 1
    assert svg.count('class="mean"') == 2  # the line breaks where the bucket had no value: a line and a dot
    assert 'class="v-tick"' in svg and 'class="t-tick"' in svg
    assert f'data-since="{T0 // 1_000_000}"' in svg and 'data-points="10"' in svg
    empty = render_svg(History("line", "oven", "recipe", None, T0, T0 + 60 * SEC, SEC, (), numeric=False))
    assert "nothing to chart" in empty


@pytest.mark.usefixtures("fake_plugins")
async def test_history_api_ranges_zoom_and_refusals(tmp_path: Path, gateway: StartGateway) -> None:
    cfg = base_config(tmp_path, username="op", password="s3cret")
    cfg["sinks"]["store"] = {"type": "sqlite"}
    rt = await gateway(cfg)
    auth = ("op", "s3cret")

    async def stored() -> Any:
        status, body = await get(rt, "/api/history?source=line&device=m1&tag=v&range=15m", auth)
        return body if status == 200 and sum(b[5] for b in body["buckets"]) >= 3 else None

    body = await until(stored, timeout=30, what="the store to hold the toggle's points")
    assert (body["source"], body["device"], body["tag"], body["numeric"]) == ("line", "m1", "v", True)
    assert body["bucket_s"] == 1.5 and all(len(b) == 6 and b[4] in ("good", "uncertain", "bad")
                                           for b in body["buckets"])
    now_ms = time.time_ns() // 1_000_000
    status, zoomed = await get(rt, f"/api/history?source=line&device=m1&tag=v&since={now_ms - 60_000}"
                                   f"&until={now_ms}", auth)
    assert status == 200 and zoomed["bucket_s"] == 1.0  # 60 s over 600 buckets: the 1 s floor
    status, svg = await get(rt, "/api/history.svg?source=line&device=m1&tag=v&range=1h", auth)
    assert status == 200 and svg.startswith("<svg") and 'class="mean"' in svg
    for query, code, why in (
        ("source=line&device=m1", 400, "required"),
        ("source=line&device=m1&tag=v&range=2w", 400, "range is one of 15m, 1h, 24h"),
        ("source=line&device=m1&tag=v&since=5&until=3", 400, "since < until"),
        ("source=line&device=m1&tag=nope", 404, "no history of line.m1.nope"),
    ):
        status, err = await get(rt, f"/api/history?{query}", auth)
        assert (status, why in err["error"]) == (code, True), (query, status, err)
    status, _ = await get(rt, "/api/history?source=line&device=m1&tag=v")
    assert status == 401  # the chart's data is behind the same login as the page


@pytest.mark.usefixtures("fake_plugins")
async def test_without_a_store_the_api_says_so(tmp_path: Path, gateway: StartGateway) -> None:
    rt = await gateway(base_config(tmp_path))
    status, body = await get(rt, "/api/history?source=line&device=m1&tag=v")
    assert status == 404 and body["error"].startswith("no local store configured")
