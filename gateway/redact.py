"""Credentials out of everything the gateway shows: logs, error messages, /api/status, /health.

A URL may carry a password (``http://user:password@host``) or a token in its query (``?token=...``);
configs are full of URLs, and errors quote them. ``redact`` replaces both with ``***`` in any text. It is
applied to every rendered log line, every HTTP JSON answer and every config error, so no code path has
to remember it.
"""

from __future__ import annotations

import re

MASK = "***"
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^\s/@:\"']*):(?P<secret>[^\s/@\"']*)@")
_QUERY = re.compile(
    r"(?i)(?P<key>[?&](?:token|access_token|api_?key|apikey|password|passwd|pwd|secret|auth|signature|sig)=)"
    r"(?P<secret>[^&\s\"'#]+)"
)


def redact(text: str) -> str:
    """``text`` with URL passwords and query tokens masked; unchanged (the same object) when it has none."""
    if "://" not in text and "=" not in text:
        return text
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    return _QUERY.sub(lambda m: f"{m['key']}{MASK}", text)
