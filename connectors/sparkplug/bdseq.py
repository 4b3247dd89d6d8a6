"""The edge node's birth/death sequence number (bdSeq), kept in the data directory across restarts.

Every MQTT CONNECT carries a will (NDEATH) with the next bdSeq (0..255, wrapping), and the NBIRTH of that
connection repeats it, so a host can tell which session an NDEATH ends. The number is written to disk before
the CONNECT goes out: after a crash or ``kill -9`` the next process continues from it, so the NDEATH the
broker publishes for the dead process (possibly after the new NBIRTH) never matches the new session.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import structlog


class BdSeq:
    def __init__(self, path: Path, log: structlog.stdlib.BoundLogger) -> None:
        self.path = path
        self.log = log
        self._lock = threading.Lock()
        self.current = self._load()
        """The bdSeq of the last CONNECT sent (that of the will the broker holds); -1 before the first."""

    def _load(self) -> int:
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            return -1
        except OSError as exc:
            self.log.warning("cannot read the sparkplug bdSeq; starting from 0", path=str(self.path), error=str(exc))
            return -1
        try:
            value = int(text)
        except ValueError:
            value = -1
        if not 0 <= value <= 255:
            self.log.warning("sparkplug bdSeq file holds no number 0..255; starting from 0", path=str(self.path))
            return -1
        return value

    def next(self) -> int:
        """The bdSeq of the CONNECT about to be sent, stored first (called on paho's network thread)."""
        with self._lock:
            value = (self.current + 1) & 0xFF
            tmp = self.path.with_name(self.path.name + ".tmp")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(tmp, "w") as f:
                    f.write(f"{value}\n")
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except OSError as exc:  # a full disk must not stop the node: the number still moves on in memory
                self.log.error("cannot store the sparkplug bdSeq", path=str(self.path), error=str(exc))
                with contextlib.suppress(OSError):
                    tmp.unlink()
            self.current = value
            return value
