"""The durable store-and-forward spool between sources and sinks: one SQLite file in WAL mode.

What a source emits is appended once, one row per batch, and every sink reads it through its own
cursor (a ``SpoolReader``), which moves only when the sink says its uplink accepted the data.

Guarantees
    Delivery is at-least-once and in order per sink. A reader only ever sees batches that are committed
    to SQLite, and an ack is written by the next write transaction (with whatever appends are queued),
    so after a crash a sink may be offered again the batches after its last persisted cursor, but never
    sees a gap and never a sequence number reused for other data (``meta.last_seq`` keeps ``seq``
    growing even when every row was deleted). A sink that is down only holds its own cursor back:
    collection and the other sinks go on, and the spool's bounds decide what happens to data the slow
    sink never took. A new sink starts at the head as of ``open()`` (see ``Spool.reader``).

Durability is a setting
    ``synchronous`` maps to ``PRAGMA synchronous``. ``normal`` (the default) survives a process crash
    or ``kill -9``: in WAL mode a commit is in the OS page cache when it returns, and the OS writes it
    out even if the process dies. ``full`` also survives a power cut, at the price of one fsync per
    commit (on SD cards and eMMC that is milliseconds and flash wear). ``off`` leaves syncing to the OS
    and may lose recent commits, or in rare cases damage the file, on a power cut.
    ``commit_interval`` groups appends for that many seconds before one commit: a crash can then lose
    up to that much data that sources already handed over, in exchange for far fewer flash writes.
    With ``0`` the spool commits as soon as its thread is free, which already groups whatever queued
    while the previous commit ran (group commit): one commit is in flight at a time, so under load
    commits grow larger instead of more frequent.

Bounds
    ``max_size`` bounds the payload bytes of spooled batches and ``max_age`` their age (either at 0
    means unbounded). ``overflow: drop_oldest`` deletes the oldest batches, even ones some sink has not
    delivered; ``drop_newest`` refuses the new batch. A full disk (``SQLITE_FULL``) is handled the
    same way: drop the oldest and retry, or refuse the new batches; the spool never stops on it.
    ``metrics.spool_dropped{reason}`` (``overflow``, ``age``, ``disk_full``, plus ``corrupt`` for a
    damaged row and ``invalid`` for an unstorable value) counts only samples that at least one sink
    still wanted: a registered reader whose sources match and that had not acked them, or a sink
    whose stored cursor is not yet registered in this run.

Age
    Edge boxes without a real-time clock boot in 1970, so ages within a run use the monotonic clock
    (the moment of ``append``). Rows left by a previous run only have a wall-clock ``created_ns``: their
    age is ``now - created_ns`` when that is sane (``>= 0``); a row from the "future" (the clock was
    later set back) counts as fresh, i.e. as if written at ``open()``. Eviction is never early; it may
    be late by ``max_age / 2048`` within a run and by the spacing of the sampled rows for old rows.

Garbage collection
    Rows every holding cursor has acked are deleted in one statement, at most every ``gc_interval``
    seconds, not per ack. A cursor holds rows back while its reader is registered, and a stored cursor
    of a sink not yet registered in this run holds them too (a sink whose uplink is down at start-up
    may register late), until ``unregister``. With no cursor at all nothing is collected.

Concurrency
    The SQLite connection lives on one thread of the spool's own single-worker executor (never the
    default executor). Appends are queued on the event loop and committed by a writer task that hands
    whole groups to that thread; readers at the head are served from a bounded in-memory tail of
    recently committed batches (``memory_batches``), so they never decode (they get the very sample
    lists that were appended); a reader behind the tail reads and decodes on the spool thread.
    ``append`` awaits only when more than ``memory_batches`` batches are not yet committed.

Encoding is columnar ``marshal`` (see ``gateway.spool_codec``); never pickle.

Modules, and where each rule is enforced
    ``storage``: the SQLite file on its own thread; one transaction per write job, so rows, cursors,
    gaps and dead letters become durable together (``Storage.write``). ``tail``: the decoded recent
    batches; every committed row above ``Tail.floor`` is in it. ``reader``: one sink's cursor; a reader
    asks its spool only through ``ReaderHost``, and only the spool moves a reader's counters, on commit
    (``Spool._apply``) and deletion (``Spool._deleted``). ``retention``: ages (``AgeCheckpoints``) and the
    ranges no sink wants (``unwanted_ranges``). ``core``: the ``Spool``: appends, the writer task, and the
    one rule for deleting rows (``Spool._gc_floor``: a row goes once every holding cursor has acked it,
    or when ``max_age``/``max_size``/a full disk drop it, counted in ``drops``). ``drops``: what was
    lost, per sink and reason. ``ranges``: seq range arithmetic for gaps.
"""

from gateway.spool.core import Spool, SpoolStats
from gateway.spool.reader import SpoolReader
from gateway.spool.storage import SCHEMA_VERSION, SpoolClosedError

__all__ = ["SCHEMA_VERSION", "Spool", "SpoolClosedError", "SpoolReader", "SpoolStats"]
