"""Logs: JSON lines off a TTY, foreign stdlib loggers through the same renderer, no locals in tracebacks."""

from __future__ import annotations

import io
import json
import logging

from gateway.logs import configure_logging, get_logger


def test_json_lines_with_foreign_records_and_no_locals() -> None:
    stream = io.StringIO()
    configure_logging("info", "auto", stream)  # StringIO is not a TTY -> JSON
    log = get_logger("gateway.test", sink="plant")
    log.info("sink delivering again", pending=3)
    logging.getLogger("vendorlib.client").warning("connection lost")

    def fail(password: str) -> None:
        raise ConnectionError("refused")

    try:
        fail("hunter2")
    except ConnectionError:
        log.exception("write failed")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["event"] == "sink delivering again" and lines[0]["sink"] == "plant" and lines[0]["pending"] == 3
    assert lines[1]["logger"] == "vendorlib.client" and lines[1]["level"] == "warning"
    assert lines[2]["exception"][0]["exc_type"] == "ConnectionError"
    assert "hunter2" not in stream.getvalue()


def test_library_info_noise_is_muted_but_warnings_pass() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    logging.getLogger("asyncua.client").info("per-connection chatter")
    logging.getLogger("asyncua.client").warning("reconnecting")
    events = [json.loads(line)["event"] for line in stream.getvalue().splitlines()]
    assert events == ["reconnecting"]
