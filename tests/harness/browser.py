"""Headless Chromium driven over the Chrome DevTools Protocol (CDP), for page tests.

Debian's `chromium` is started with `--remote-debugging-port=0`; it writes the port it
chose to DevToolsActivePort in its profile directory, so no fixed port is ever bound. One
page target is attached with a flattened session and spoken to with the `websockets` test
extra's synchronous client: navigate, evaluate JavaScript, click, take a screenshot.

    with Browser(tmp_path) as b:
        b.goto("http://127.0.0.1:8765/")
        b.wait_js("document.querySelector('#pos-side').textContent !== '-'")
        b.screenshot(Path("logs/dashboard.png"))
"""
from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str | None:
    env = os.environ.get("SCALPER_CHROMIUM")
    if env:
        return env
    return next((p for p in (shutil.which(c) for c in CANDIDATES) if p), None)


class BrowserError(RuntimeError):
    pass


class Browser:
    def __init__(self, tmp: Path, width: int = 1400, height: int = 1000):
        self.tmp = Path(tmp)
        self.width, self.height = width, height
        self.profile = self.tmp / "chromium-profile"
        self.proc: subprocess.Popen | None = None
        self.ws = None
        self.session = ""
        self.ids = itertools.count(1)
        self.events: list[dict] = []

    # -- lifecycle -------------------------------------------------------
    def start(self, timeout: float = 30) -> "Browser":
        exe = chromium_path()
        if exe is None:
            raise BrowserError("no chromium on PATH: apt-get install -y chromium")
        self.profile.mkdir(parents=True, exist_ok=True)
        log = open(self.tmp / "chromium.log", "ab")
        self.proc = subprocess.Popen(
            [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--mute-audio",
             "--remote-debugging-port=0", f"--user-data-dir={self.profile}",
             f"--window-size={self.width},{self.height}", "about:blank"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise BrowserError(f"chromium did not open its DevTools port; see {self.tmp / 'chromium.log'}")
            time.sleep(0.1)
        port, path = port_file.read_text().splitlines()[:2]
        from websockets.sync.client import connect
        self._conn = connect(f"ws://127.0.0.1:{port}{path}", max_size=64 * 2**20, open_timeout=timeout)
        self.ws = self._conn.__enter__()
        target = self.call("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 session=False)["sessionId"]
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False})
        return self

    def stop(self) -> None:
        if self.ws is not None:
            try:
                self._conn.__exit__(None, None, None)
            except Exception:
                pass
            self.ws = None
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def __enter__(self) -> "Browser":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- protocol --------------------------------------------------------
    def call(self, method: str, params: dict | None = None, session: bool = True, timeout: float = 30) -> dict:
        msg_id = next(self.ids)
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self.session
        self.ws.send(json.dumps(msg))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"{method}: no answer in {timeout} s")
            got = json.loads(self.ws.recv(timeout=left))
            if got.get("id") == msg_id:
                if "error" in got:
                    raise BrowserError(f"{method}: {got['error']}")
                return got.get("result", {})
            self.events.append(got)
            del self.events[:-200]

    def goto(self, url: str, timeout: float = 30) -> None:
        self.call("Page.navigate", {"url": url})
        self.wait_js("document.readyState === 'complete'", timeout)

    def js(self, expression: str) -> Any:
        """Evaluate in the page and return the value (JSON-able results only)."""
        res = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in res:
            raise BrowserError(f"{expression[:80]}: {res['exceptionDetails'].get('exception', {}).get('description')}")
        return res.get("result", {}).get("value")

    def wait_js(self, expression: str, timeout: float = 30, interval: float = 0.2, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            val = self.js(expression)
            if val:
                return val
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what or expression}")
            time.sleep(interval)

    def text(self, selector: str) -> str:
        return self.js(f"(document.querySelector({json.dumps(selector)}) || {{}}).textContent") or ""

    def click(self, selector: str) -> None:
        ok = self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return false; "
                     f"e.click(); return true; }})()")
        if not ok:
            raise BrowserError(f"nothing to click at {selector}")

    def screenshot(self, path: Path, full_page: bool = True) -> Path:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
            h = self.js("Math.ceil(document.documentElement.scrollHeight)") or self.height
            params["clip"] = {"x": 0, "y": 0, "width": self.width, "height": h, "scale": 1}
        data = self.call("Page.captureScreenshot", params)["data"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path
