"""A process the crash test kills with SIGKILL: it appends counter batches to a spool, and two sinks
"deliver" them into files of their own before acking.

    python spool_writer_proc.py DB OUT_DIR write   # append forever, print "committed SEQ" after each flush
    python spool_writer_proc.py DB OUT_DIR drain   # deliver whatever is pending, then print "drained"

Batch k (seq k in a fresh spool) holds samples of value k * 1000 + j, j < BATCH. Sources alternate:
every third batch comes from "aux", the rest from "line". Sink "all" takes every source, sink "line"
only "line". A sink writes one line per batch ("seq v0 v1 ...") to OUT_DIR/<sink>.<mode>.log with a
single write, fsyncs, and only then acks, as a real uplink's acknowledgement would.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from gateway.config.site import SpoolConfig
from gateway.metrics import Metrics
from gateway.model import Batch, Sample
from gateway.spool import Spool, SpoolReader

BATCH = 5
SINKS = {"all": ("*",), "line": ("line",)}


def source_of(seq: int) -> str:
    return "aux" if seq % 3 == 0 else "line"


async def deliver(reader: SpoolReader, out: Path, *, drain: bool, pace: float) -> None:
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        while not drain or reader.pending_samples() > 0:
            batches = await reader.next(3 * BATCH)
            text = "".join(f"{b.seq} {' '.join(str(s.value) for s in b.samples)}\n" for b in batches)
            os.write(fd, text.encode())
            os.fsync(fd)
            await reader.ack(batches[-1].seq)
            if pace:
                await asyncio.sleep(pace)  # a slower uplink, so a backlog exists when the kill comes
    finally:
        os.close(fd)


async def main(db: Path, out_dir: Path, mode: str) -> None:
    spool = Spool(db, SpoolConfig(), Metrics())
    await spool.open()
    readers = {name: spool.reader(name, sources) for name, sources in SINKS.items()}
    await spool.flush()  # registration (and the readers' initial pending counts) committed
    drain = mode == "drain"
    tasks = [asyncio.create_task(deliver(r, out_dir / f"{name}.{mode}.log", drain=drain,
                                         pace=0.002 if name == "line" else 0.0))
             for name, r in readers.items()]
    if drain:
        await asyncio.gather(*tasks)
        await spool.close()
        print("drained", flush=True)
        return
    seq = spool.stats().last_seq
    while True:
        for _ in range(4):
            seq += 1
            await spool.append(Batch(source_of(seq), [Sample("m1", "c", seq * 1000 + j) for j in range(BATCH)]))
        await spool.flush()
        print(f"committed {spool.stats().last_seq}", flush=True)
        await asyncio.sleep(0.001)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]))
