"""Starting a real gateway runtime from a config file inside a benchmark's child process."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.runtime import Runtime


async def start_runtime(path: Path) -> tuple[Runtime, asyncio.Event, asyncio.Task[None]]:
    """Load ``path``, configure logging as ``run`` does, start the runtime; return it with its stop event
    and task once every component has been started (set the event, then await the task, to stop)."""
    from gateway.config.loader import load_config
    from gateway.logs import configure_logging
    from gateway.runtime import Runtime

    cfg = load_config(path)
    configure_logging(cfg.log.level, cfg.log.format)
    runtime = Runtime(cfg)
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    await runtime.started.wait()
    return runtime, stop, task
