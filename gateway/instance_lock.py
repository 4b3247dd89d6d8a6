"""One gateway per spool: an exclusive lock file beside the spool, held for the life of the process.

``flock`` is released by the kernel when the process dies, ``kill -9`` included, so a crashed gateway
never blocks its own restart; the file keeps the holder's pid for the error message.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from gateway.errors import GatewayError


class InstanceLocked(GatewayError):
    """Another process holds the lock: a second gateway on the same data directory or spool."""


class InstanceLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @classmethod
    def of_spool(cls, spool: Path) -> InstanceLock:
        """The lock a gateway holds on its spool for its whole life (``<spool>.lock``, beside it)."""
        return cls(spool.with_name(spool.name + ".lock"))

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            who = f"pid {holder}" if holder.isdigit() else "another process"
            raise InstanceLocked(
                f"{self.path.parent} is in use by another gateway ({who} holds {self.path.name}); two gateways "
                "must never share one spool: stop it, or give this one its own data_dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing drops the flock
