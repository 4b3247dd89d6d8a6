"""The one rule for "the disk is full", shared by the spool and the local store."""

from __future__ import annotations

import errno
import sqlite3


def is_disk_full(exc: BaseException) -> bool:
    """SQLite reports ENOSPC and a reached ``max_page_count`` both as SQLITE_FULL (an extended code keeps
    it in the low byte); an ``OSError`` says ENOSPC; an SQLite error without a code (raised by hand,
    or by an old module) says so in its message."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF == sqlite3.SQLITE_FULL
    if isinstance(exc, OSError):
        return exc.errno == errno.ENOSPC
    return isinstance(exc, sqlite3.Error) and "is full" in str(exc)
