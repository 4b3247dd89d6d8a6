"""What every ``simulate`` form shares: loading a description (YAML) with the same error lines as the
gateway's config (``FILE: dotted.path: message``, never a traceback), and serving until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def load_or_report(path: Path, model: type[M]) -> M | None:
    """The validated description, or None after printing one line per problem to stderr."""
    try:
        return model.model_validate(yaml.safe_load(path.read_text()))
    except (OSError, yaml.YAMLError) as exc:
        print(f"{path}: {exc}", file=sys.stderr)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            print(f"{path}: {'.'.join(str(p) for p in err['loc'])}: {err['msg']}", file=sys.stderr)
    return None


async def until_signalled() -> None:
    """Return on SIGTERM or SIGINT (the caller then stops its servers cleanly)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
