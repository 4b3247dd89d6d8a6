"""Throughput of the spool on its own: append, drain, and both at once (``edge-gateway bench spool-*``).

Samples are built once up front (a few distinct batches, reused), so the figures measure the spool and
not the making of samples. Each run uses the default ``SpoolConfig`` (WAL, ``synchronous=normal``,
``commit_interval=0``) on a fresh file at ``path``.
"""

from __future__ import annotations

import asyncio
import resource
import time
from pathlib import Path
from typing import Literal

from gateway.config.site import SpoolConfig
from gateway.metrics import Metrics
from gateway.model import Batch, Quality, Sample
from gateway.spool import Spool, SpoolReader

READ_MAX_SAMPLES = 20_000  # what the pipeline benchmark's sink asks for per write
_DISTINCT_BATCHES = 8


def _prebuilt(batch_size: int) -> list[list[Sample]]:
    tags = [f"t{i}" for i in range(20)]
    ts = 1_700_000_000_000_000_000
    return [
        [Sample(f"machine_{b}", tags[i % 20], 20.0 + (b * batch_size + i) * 0.25,
                Quality.GOOD if i % 50 else Quality.UNCERTAIN, 0, ts + i * 1_000_000, ts + i * 1_000_000 + 7, "u")
         for i in range(batch_size)]
        for b in range(_DISTINCT_BATCHES)
    ]


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _append_all(spool: Spool, lists: list[list[Sample]], batches: int) -> None:
    n_lists = len(lists)
    for i in range(batches):
        await spool.append(Batch("bench", lists[i % n_lists]))
    await spool.flush()


async def _drain(reader: SpoolReader, total: int) -> int:
    drained = 0
    while drained < total:
        got = await reader.next(READ_MAX_SAMPLES)
        drained += sum(len(b.samples) for b in got)
        await reader.ack(got[-1].seq)
    return drained


async def _run(kind: Literal["append", "drain", "both"], samples: int, batch_size: int,
               path: Path) -> dict[str, float]:
    lists = _prebuilt(batch_size)
    batches = max(1, samples // batch_size)
    total = batches * batch_size
    config = SpoolConfig()
    spool = Spool(path, config, Metrics())
    await spool.open()
    try:
        if kind == "append":
            t0, c0 = time.perf_counter(), _cpu()
            await _append_all(spool, lists, batches)
            seconds, cpu = time.perf_counter() - t0, _cpu() - c0
            return {"seconds": seconds, "cpu_seconds": cpu, "appended": total, "drained": 0,
                    "append_per_s": total / seconds}
        if kind == "drain":
            spool.reader("bench")  # registered before the fill, so it has all of it to drain
            await _append_all(spool, lists, batches)
            await spool.close()
            # Reopen: the reader starts cold, reading and decoding from disk (the slow path).
            spool = Spool(path, config, Metrics())
            await spool.open()
            reader = spool.reader("bench")
            t0, c0 = time.perf_counter(), _cpu()
            drained = await _drain(reader, total)
            await spool.flush()
            seconds, cpu = time.perf_counter() - t0, _cpu() - c0
            return {"seconds": seconds, "cpu_seconds": cpu, "appended": 0, "drained": drained,
                    "drain_per_s": drained / seconds}
        reader = spool.reader("bench")
        t0, c0 = time.perf_counter(), _cpu()
        drainer = asyncio.create_task(_drain(reader, total))
        await _append_all(spool, lists, batches)
        drained = await drainer
        await spool.flush()
        seconds, cpu = time.perf_counter() - t0, _cpu() - c0
        return {"seconds": seconds, "cpu_seconds": cpu, "appended": total, "drained": drained,
                "append_per_s": total / seconds, "drain_per_s": drained / seconds}
    finally:
        await spool.close()


def run_spool_benchmark(kind: Literal["append", "drain", "both"], samples: int, batch_size: int,
                        path: Path) -> dict[str, float]:
    """Measure spool throughput in samples/s; the window excludes the pre-fill of ``drain``.

    Returns ``seconds`` and ``cpu_seconds`` of the measured window, ``appended`` and ``drained`` sample
    counts, and ``append_per_s`` / ``drain_per_s``.
    """
    if samples < 1 or batch_size < 1:
        raise ValueError("samples and batch_size must be positive")
    return asyncio.run(_run(kind, samples, batch_size, Path(path)))


if __name__ == "__main__":  # python -m bench.spool [SAMPLES] [BATCH]
    import sys
    import tempfile

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000_000
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    for mode in ("append", "drain", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            fig = run_spool_benchmark(mode, n, size, Path(tmp) / "spool.db")
        rates = ", ".join(f"{k}={v:,.0f}" for k, v in fig.items() if k.endswith("_per_s"))
        print(f"{mode:6} batch={size:<5} {rates}  ({fig['seconds']:.2f} s wall, {fig['cpu_seconds']:.2f} s CPU)")
