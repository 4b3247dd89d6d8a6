"""Structured logging: structlog for our code, with asyncua/pymodbus/paho stdlib records routed through
the same renderer. Console renderer on a TTY, JSON lines otherwise. Tracebacks never render locals
(they could hold passwords)."""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog
import structlog.tracebacks

from gateway.redact import redact

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
# Chatty libraries: their INFO lines are per-connection noise; our components log the transitions.
_QUIET = ("asyncua", "pymodbus", "paho", "urllib3", "influxdb_client", "aiosqlite")


def _redacted(logger: Any, name: str, line: Any) -> str:
    """The last processor: gets the renderer's line (a str), returns it with URL credentials masked."""
    return redact(str(line))


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    json_logs = fmt == "json" or (fmt == "auto" and not stream.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: Any
    tail: list[Any]
    if json_logs:
        safe_tb = structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        )
        tail = [safe_tb]
        renderer = structlog.processors.JSONRenderer()
    else:
        tail = []
        renderer = structlog.dev.ConsoleRenderer(
            colors=stream.isatty(),
            exception_formatter=structlog.dev.plain_traceback,
        )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
            # the rendered line, tracebacks and library messages included, loses any URL credential
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail, renderer, _redacted],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    lvl = _LEVELS.get(level, logging.INFO)
    root.setLevel(lvl)
    for name in _QUIET:
        logging.getLogger(name).setLevel(max(lvl, logging.WARNING))


def get_logger(name: str, **bound: Any) -> structlog.stdlib.BoundLogger:
    log: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return log.bind(**bound) if bound else log
