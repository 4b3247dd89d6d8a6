"""A minimal W3C WebDriver client (urllib) for driving Debian's headless Chromium through chromedriver.

Enough for the status-page test: open a URL, run JavaScript, take a screenshot. No selenium, so no
driver-download machinery that would try to reach the internet.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from tests.servers import free_port, wait_port

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


class Browser:
    def __init__(self) -> None:
        for binary in (CHROMIUM, CHROMEDRIVER):
            if not Path(binary).exists():
                raise RuntimeError(f"{binary} is missing: run the tests with ./dev test (installs chromium as root)")
        self._profile = tempfile.mkdtemp(prefix="chromium-")
        port = free_port()
        self._driver = subprocess.Popen([CHROMEDRIVER, f"--port={port}"], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        wait_port(port, self._driver)
        self._base = f"http://127.0.0.1:{port}"
        args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-dev-shm-usage", "--disable-component-update", "--no-first-run", "--disable-sync",
                f"--user-data-dir={self._profile}", "--window-size=1400,1000"]
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome", "goog:chromeOptions": {"binary": CHROMIUM, "args": args}}}}
        self._session = self._call("POST", "/session", caps)["sessionId"]

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self._base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())["value"]

    def open(self, url: str) -> None:
        self._call("POST", f"/session/{self._session}/url", {"url": url})

    def js(self, script: str, *args: Any) -> Any:
        return self._call("POST", f"/session/{self._session}/execute/sync", {"script": script, "args": list(args)})

    def screenshot(self, path: Path) -> None:
        png = self._call("GET", f"/session/{self._session}/screenshot")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(png))

    def close(self) -> None:
        try:
            self._call("DELETE", f"/session/{self._session}")
        finally:
            self._driver.terminate()
            try:
                self._driver.wait(5)
            except subprocess.TimeoutExpired:
                self._driver.kill()
            shutil.rmtree(self._profile, ignore_errors=True)
