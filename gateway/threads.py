"""The thread/asyncio boundary of every blocking adapter: one named thread per blocking library.

Each adapter that drives a blocking library (SQLite, the InfluxDB client, a file writer, paho's
shutdown) owns one ``WorkerThread``; everything it does with that library runs there, one job at a time
in submission order, so the library is never touched from two threads and the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

_T = TypeVar("_T")


class WorkerThread:
    def __init__(self, name: str) -> None:
        self.name = name
        self._pool: ThreadPoolExecutor | None = ThreadPoolExecutor(1, thread_name_prefix=name)

    @property
    def closed(self) -> bool:
        return self._pool is None

    def submit(self, fn: Callable[..., _T], *args: Any) -> asyncio.Future[_T]:
        """Queue ``fn(*args)`` on the thread; the future resolves on the event loop."""
        if self._pool is None:
            raise RuntimeError(f"worker thread {self.name} is closed")
        return asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args))

    async def run(self, fn: Callable[..., _T], *args: Any) -> _T:
        return await self.submit(fn, *args)

    def close(self, *, wait: bool = False) -> None:
        """No new jobs; queued ones still run. With ``wait`` block until they have. Idempotent."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=wait)
