"""Points the server rejected for good (400/413 after splitting), kept in a small SQLite file.

The spool's own dead-letter table takes whole spooled batches; a 400 usually concerns one point out
of thousands, so the sink isolates the bad lines itself and keeps exactly those here, with the
server's message, while the good points of the same write are delivered. Used only from the
writer's single thread.
"""

from __future__ import annotations

import sqlite3
import time


class DeadLetterStore:
    def __init__(self, path: str) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite3.connect(self.path)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS dead_points(id INTEGER PRIMARY KEY, sink TEXT NOT NULL,"
                " created_ns INTEGER NOT NULL, status INTEGER NOT NULL, error TEXT NOT NULL, line TEXT NOT NULL)"
            )
            self._db = db
        return self._db

    def add(self, sink: str, lines: list[str], status: int, error: str) -> None:
        db = self._conn()
        now = time.time_ns()
        with db:
            db.executemany("INSERT INTO dead_points(sink, created_ns, status, error, line) VALUES (?,?,?,?,?)",
                           [(sink, now, status, error, line) for line in lines])

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
