"""The dashboard's HTTP side (aiohttp): one page, its script, a server-sent-events stream of
the state, a JSON snapshot, and the three operator buttons.

    GET  /                 the page (static/index.html)
    GET  /app.js           its script (vanilla JS + canvas, no CDN: works offline)
    GET  /events           text/event-stream: the view as JSON every push_s
    GET  /api/state        the same view once (tests, curl)
    POST /api/command      {"action": "halt"|"resume"|"flatten", "reason": "..."}

A command must carry the header `X-Scalper-Action: <action>`: a browser sends a custom
header cross-site only after a CORS preflight this server never approves, so another web
page open in the trader's browser cannot flatten the account through it. When a token is
set, every request needs it (Authorization: Bearer, the `scalper_token` cookie, or `?token=`
once, which sets the cookie). Without a token, a request must name a loopback Host: a page
whose own name was re-pointed at 127.0.0.1 (DNS rebinding) is same-origin to the browser,
but still says its own name in the Host header, and is refused.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

from aiohttp import web

STATIC = Path(__file__).resolve().parent / "static"
COOKIE = "scalper_token"
ACTIONS = ("halt", "resume", "flatten")

View = Callable[[], dict[str, Any]]
Command = Callable[[str, str], Awaitable[list[dict[str, Any]]]]


def _token_of(request: web.Request) -> str:
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return auth[len("Bearer "):]
    return request.cookies.get(COOKIE) or request.query.get("token", "")


def host_name(host: str) -> str:
    """'127.0.0.1:8765' -> '127.0.0.1'; '[::1]:8765' -> '::1'."""
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def make_app(view: View, command: Command, token: str | None = None, push_s: float = 0.5,
             allowed_hosts: set[str] | None = None) -> web.Application:
    @web.middleware
    async def auth(request: web.Request, handler):
        if allowed_hosts is not None and host_name(request.host or "") not in allowed_hosts:
            return web.Response(status=403, text=f"403: unexpected Host {request.host!r}; open the dashboard "
                                                 "at its loopback address\n")
        if token:
            given = _token_of(request)
            if not hmac.compare_digest(given.encode(), token.encode()):
                return web.Response(status=401, text="401: this dashboard needs its token (?token=...)\n")
        resp = await handler(request)
        if token and request.query.get("token") and isinstance(resp, web.StreamResponse) and not resp.prepared:
            resp.set_cookie(COOKIE, token, httponly=True, samesite="Strict")
        return resp

    async def index(_request: web.Request) -> web.Response:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def script(_request: web.Request) -> web.Response:
        return web.FileResponse(STATIC / "app.js", headers={"Cache-Control": "no-store",
                                                            "Content-Type": "application/javascript"})

    async def state(_request: web.Request) -> web.Response:
        return web.json_response(view(), dumps=_dumps)

    cache: list = [0.0, ""]

    def view_text() -> str:
        """One serialised view per half push period, however many pages are open."""
        now = time.monotonic()
        if now - cache[0] > push_s / 2:
            cache[0], cache[1] = now, _dumps(view())
        return cache[1]

    async def events(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        try:
            while True:
                await resp.write(f"data: {view_text()}\n\n".encode())
                await asyncio.sleep(push_s)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return resp

    async def do_command(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return web.json_response({"ok": False, "error": "the body must be JSON: {\"action\": ...}"}, status=400)
        action = body.get("action") if isinstance(body, dict) else None
        if action not in ACTIONS:
            return web.json_response({"ok": False, "error": f"action must be one of {', '.join(ACTIONS)}"},
                                     status=400)
        if request.headers.get("X-Scalper-Action") != action:
            return web.json_response({"ok": False, "error": "missing X-Scalper-Action header (confirmation)"},
                                     status=403)
        reason = str(body.get("reason") or f"dashboard {action}")[:200]
        answers = await command(action, reason)
        return web.json_response({"ok": any(a["ok"] for a in answers), "action": action, "answers": answers})

    app = web.Application(middlewares=[auth])
    app.router.add_get("/", index)
    app.router.add_get("/app.js", script)
    app.router.add_get("/events", events)
    app.router.add_get("/api/state", state)
    app.router.add_post("/api/command", do_command)
    return app


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), default=str)
