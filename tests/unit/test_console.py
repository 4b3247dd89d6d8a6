"""The live summary on a terminal: redraws keep log lines (they go above the block), and it shows with
``-c FILE`` on a terminal too."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from gateway.console import LiveBlock


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def screen(text: str) -> list[str]:
    """Replay what was written, understanding the two control sequences the block uses."""
    rows: list[str] = [""]
    row = 0
    for part in re.split(r"(\x1b\[\d*F|\x1b\[J|\n)", text):
        if not part:
            continue
        if part == "\n":
            row += 1
            if row == len(rows):
                rows.append("")
        elif part.endswith("F"):  # cursor up n lines, to column 0
            row = max(0, row - int(part[2:-1] or 1))
        elif part == "\x1b[J":  # clear from the cursor to the end of the screen
            del rows[row + 1:]
            rows[row] = ""
        else:
            rows[row] += part
    return [r for r in rows if r]


def test_log_lines_stay_above_the_block_across_redraws() -> None:
    term = FakeTerminal()
    block = LiveBlock(term)
    log = block.stream()
    block.draw(["summary 1", "devices 2"])
    log.write("2026-12-05 first log line\n")
    block.draw(["summary 2", "devices 2"])
    log.write("second ")
    log.write("log line\nthird log line\n")
    block.draw(["summary 3", "devices 3"])
    assert screen(term.getvalue()) == [
        "2026-12-05 first log line", "second log line", "third log line", "summary 3", "devices 3"]


@pytest.mark.timeout(60)
def test_summary_shows_with_a_config_file_on_a_terminal(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(yaml.safe_dump({
        "data_dir": str(tmp_path / "data"), "http": {"enabled": False},
        "sources": {"line": {"type": "synthetic", "interval": "100ms", "devices": {"m1": {"tags": [
            {"name": "t", "signal": "sine"}]}}}},
        "sinks": {"store": {"type": "sqlite", "path": str(tmp_path / "store.db")}},
    }))
    main, child = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli.main", "run", "-c", str(cfg)],
                            stdin=child, stdout=child, stderr=child, close_fds=True)
    os.close(child)
    seen = b""
    try:
        deadline = time.monotonic() + 30
        while b"edge-gateway \xc2\xb7 up" not in seen or b"gateway starting" not in seen:
            assert time.monotonic() < deadline, seen.decode(errors="replace")
            ready, _, _ = select.select([main], [], [], 0.5)
            if ready:
                try:
                    seen += os.read(main, 65536)
                except OSError:
                    break
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        os.close(main)
    text = seen.decode(errors="replace")
    assert "values/s in" in text
    # the log line that came first is still on screen above the block
    assert "gateway starting" in "\n".join(screen(text.replace("\r", "")))
