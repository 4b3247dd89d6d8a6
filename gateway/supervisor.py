"""Runs each component (a source, a sink's delivery loop) under its own supervisor.

A component that raises is logged once on the transition to failure and restarted with backoff; the
others keep running. Each component is a named task in the runtime's TaskGroup, so a hot reload can
cancel and restart one alone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from gateway.backoff import Backoff
from gateway.logs import get_logger
from gateway.metrics import Metrics

HEALTHY_AFTER = 30.0
"""A component that ran this long (s) before failing restarts with the initial delay again."""


async def supervise(
    component: str,
    run_once: Callable[[], Awaitable[None]],
    metrics: Metrics,
    *,
    backoff: Backoff | None = None,
) -> None:
    """Call ``run_once`` until it returns normally; restart it with backoff whenever it raises."""
    log = get_logger("gateway.supervisor", component=component)
    backoff = backoff or Backoff(0.5, 30.0)
    state = metrics.health.component(component)
    failing = False
    while True:
        started = time.monotonic()
        state.running = True
        try:
            await run_once()
        except asyncio.CancelledError:
            state.running = False
            raise
        except Exception as exc:
            state.running = False
            if time.monotonic() - started > HEALTHY_AFTER:
                backoff.reset()
            delay = backoff.next()
            state.restarts += 1
            if not failing:
                log.error("component failed", error=str(exc) or type(exc).__name__, retry_in=round(delay, 2),
                          exc_info=exc)
                failing = True
            else:
                log.debug("component failed again", error=str(exc), retry_in=round(delay, 2))
            await asyncio.sleep(delay)
            continue
        state.running = False
        if failing:
            log.info("component recovered and finished")
        return
