"""The node-opcua server (tests/interop/server.js, from the committed package-lock.json; `./dev test` runs
`npm ci` here), started once per test session for every interop module."""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import free_port, stop_processes

HERE = Path(__file__).parent


@pytest.fixture(scope="session")
def node_opcua_url() -> Iterator[str]:
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not installed: run the tests with ./dev test (installs nodejs)")
    if not (HERE / "node_modules" / "node-opcua-server").is_dir():
        raise RuntimeError(f"node-opcua is not installed in {HERE}: run ./dev test (runs npm ci there)")
    port = free_port()
    proc = subprocess.Popen([node, str(HERE / "server.js"), str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, cwd=HERE)
    assert proc.stdout is not None
    try:
        for line in proc.stdout:  # node-opcua prints warnings on stdout before it is ready
            if line.startswith("ready "):
                break
        else:
            raise RuntimeError(f"node-opcua server exited with {proc.wait(5)} before it was ready")
        # keep reading what it prints, or a full pipe would stall the server mid-test
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        yield f"opc.tcp://127.0.0.1:{port}/interop"
    finally:
        stop_processes([proc])
