"""Real alert receivers on loopback for integration tests: an HTTP server that plays a JSON
webhook and the Telegram Bot API, and an SMTP server (aiosmtpd). Each records what arrived
and when (time.time_ns() at receipt), and can be told to fail the next N requests."""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.harness.procs import wait_for
from tests.harness.sim import free_port


@dataclass
class Received:
    path: str
    body: Any
    at_ns: int


@dataclass
class HttpReceiver:
    """POSTs to any path are recorded. `fail_next(n, status)` answers the next n with `status`
    (a 429 carries Retry-After / Telegram's retry_after). Paths under /bot<token>/ answer like
    the Telegram Bot API."""
    host: str = "127.0.0.1"
    got: list[Received] = field(default_factory=list)
    failures: list[int] = field(default_factory=list)
    attempts: int = 0

    def __post_init__(self) -> None:
        rec = self
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):        # quiet test output
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n)
                at = time.time_ns()
                with lock:
                    rec.attempts += 1
                    fail = rec.failures.pop(0) if rec.failures else None
                if fail is not None:
                    body = {"ok": False, "error_code": fail, "description": "test failure",
                            "parameters": {"retry_after": 1}} if "/bot" in self.path else {"error": fail}
                    self._answer(fail, body, {"Retry-After": "1"} if fail == 429 else {})
                    return
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode(errors="replace")
                with lock:
                    rec.got.append(Received(self.path, body, at))
                if "/bot" in self.path:
                    self._answer(200, {"ok": True, "result": {"message_id": len(rec.got)}})
                else:
                    self._answer(204, None)

            def _answer(self, status, body, headers=None):
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                if data:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if data:
                    self.wfile.write(data)

        self.server = ThreadingHTTPServer((self.host, 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def fail_next(self, n: int, status: int = 503) -> None:
        self.failures.extend([status] * n)

    def bodies(self, path_part: str = "") -> list[Any]:
        return [r.body for r in list(self.got) if path_part in r.path]

    def wait(self, pred, timeout: float = 20, what: str = "a request"):
        return wait_for(lambda: [r for r in list(self.got) if pred(r)], timeout, what=what)

    def __enter__(self) -> "HttpReceiver":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


class SmtpReceiver:
    """aiosmtpd on loopback (no TLS: the channel's `security: none`, as for a local relay)."""

    def __init__(self):
        from aiosmtpd.controller import Controller

        rec = self
        self.messages: list[tuple[Any, int, list[str]]] = []

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                msg = message_from_bytes(envelope.original_content or envelope.content, policy=policy.default)
                rec.messages.append((msg, time.time_ns(), list(envelope.rcpt_tos)))
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def wait(self, pred, timeout: float = 20, what: str = "an e-mail"):
        return wait_for(lambda: [m for m in list(self.messages) if pred(m[0])], timeout, what=what)

    def __enter__(self) -> "SmtpReceiver":
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()
