"""A gateway running in the test's event loop, and what tests ask of it over HTTP.

The ``gateway`` fixture (``tests/conftest.py``) starts runtimes from a config mapping or file and stops
every one it started at teardown, so a test holds no start/stop boilerplate of its own.
"""

from __future__ import annotations

import asyncio
import base64
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import yaml

from gateway.config.loader import load_config
from gateway.runtime import Runtime

StartGateway = Callable[..., Awaitable[Runtime]]
"""``await gateway(cfg)``: ``cfg`` a config mapping (written to ``gw.yaml`` in the test's directory) or a
config file's path; returns the runtime once every component started."""


def write_config(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


@asynccontextmanager
async def gateways(workdir: Path, stop_timeout: float = 15.0) -> AsyncIterator[StartGateway]:
    started: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    async def start(cfg: dict[str, Any] | Path, *, name: str = "gw.yaml") -> Runtime:
        path = cfg if isinstance(cfg, Path) else write_config(workdir / name, cfg)
        runtime = Runtime(load_config(path))
        stop = asyncio.Event()
        task = asyncio.create_task(runtime.run(stop))
        started.append((stop, task))
        await asyncio.wait_for(runtime.started.wait(), 10)
        return runtime

    try:
        yield start
    finally:
        for stop, _ in started:
            stop.set()
        for _, task in started:
            await asyncio.wait_for(task, stop_timeout)


def http_port(runtime: Runtime) -> int:
    assert runtime.http is not None and runtime.http.port, "the gateway's HTTP endpoint is not enabled"
    return runtime.http.port


def fetch(port: int, path: str, auth: tuple[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    """GET ``path`` from the endpoint on ``port``: status, headers, body (error statuses included)."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if auth is not None:
        req.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read().decode()


async def get(runtime: Runtime, path: str, auth: tuple[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    return await asyncio.to_thread(fetch, http_port(runtime), path, auth)
