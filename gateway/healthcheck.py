"""``python -m gateway.healthcheck [URL]``: exit 0 when the gateway's /health says healthy, 1 otherwise.

Used by the container HEALTHCHECK and usable from systemd or a monitoring agent; stdlib only, so it
works in a slim image without curl. Basic-auth credentials, if the endpoint needs them, come from
``EDGEGW_HTTP__USERNAME`` / ``EDGEGW_HTTP__PASSWORD`` (the same variables that configure the gateway).
"""

from __future__ import annotations

import base64
import json
import os
import sys
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:8750/health"


def check(url: str, timeout: float = 5.0) -> tuple[bool, str]:
    req = urllib.request.Request(url)
    user, password = os.environ.get("EDGEGW_HTTP__USERNAME"), os.environ.get("EDGEGW_HTTP__PASSWORD")
    if user and password:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=timeout):
            return True, "healthy"
    except urllib.error.HTTPError as err:
        try:
            problems = json.loads(err.read()).get("problems", [])
        except ValueError:
            problems = []
        return False, "; ".join(problems) or f"HTTP {err.code}"
    except OSError as exc:
        return False, f"gateway not reachable at {url}: {exc}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    ok, text = check(args[0] if args else DEFAULT_URL)
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
