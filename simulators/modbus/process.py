"""The Modbus simulator as a child process, started without importing it (or pymodbus's server) here.

Benchmarks measure the process that starts the simulator: importing ``simulators.modbus.server`` there
would add its ~11 MB of RSS to the gateway's figure.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def start_subprocess(file: Path | str, *, port: int, host: str = "127.0.0.1",
                     extra: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    """``edge-gateway simulate modbus FILE`` as a child process (benchmarks, restart tests).

    Its output is discarded (an unread pipe would fill and stall the server); run the same command
    by hand to see it. SIGTERM stops it cleanly.
    """
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli.main", "simulate", "modbus", str(file), "--host", host,
         "--port", str(port), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
