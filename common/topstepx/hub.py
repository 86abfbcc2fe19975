"""SignalR hub client for the TopstepX market and user hubs, on `signalrcore` 1.0.2.

Usage (feed, order gateway)::

    hub = HubClient(
        url=cfg.api.market_hub_url,
        token_provider=rest.token,                       # called before EVERY connect
        subscriptions=lambda h: h.send("SubscribeContractQuotes", [contract]),
        handlers={"GatewayQuote": on_quote},             # target -> fn(arguments: list)
        name="market",
        on_state=lambda state, detail: ...,              # "connecting", "connected", ...
    )
    hub.start()            # returns at once; a daemon thread connects and reconnects
    ...
    hub.force_reconnect("no quote for 10 s")   # e.g. from a staleness watchdog
    hub.stop()

THREADS: every callback (handlers, on_raw, on_state, subscriptions) runs on a
signalrcore or HubClient thread, never on the caller's ServiceLoop. Callers must
hand work over with `loop.call_soon_threadsafe(...)`, or run it under the loop's lock
with `loop.run_threadsafe(...)` (the feed), and keep callbacks short.

Why we do not use signalrcore's own reconnect: its RawReconnectionHandler reuses
the URL (and so the token) it first connected with, never re-runs the Subscribe*
calls (TopstepX drops subscriptions on every reconnect) and can hang in a blocking
connect. Instead one supervisor thread owns the connection life cycle:

  token_provider() -> build a fresh connection (WebSocket only, negotiation skipped,
  token in the `access_token` query string and the access-token factory, JSON
  protocol) -> wait for the SignalR handshake (connect_timeout_s) -> run
  `subscriptions(self)` -> wait until the socket closes, force_reconnect() or
  stop() -> tear down -> sleep an exponential backoff with jitter (bounded by
  max_backoff_s) -> again.

While connected the supervisor also keeps the connection alive, as the ASP.NET
Core client does (signalrcore starts its own ping thread only with its auto-reconnect,
which we do not use, so without this the server's ClientTimeoutInterval, 30 s by
default, would drop every connection):

- a SignalR ping `{"type":6}` whenever nothing was sent for `keep_alive_s` (10 s);
- a watchdog: nothing received for `server_timeout_s` (30 s, twice the server's 15 s
  KeepAliveInterval) tears the connection down and rebuilds it (re-subscribe; the
  caller reconciles on the "connected" state), even when TCP stays open;
- a reconnect with a fresh token `token_refresh_margin_s` before the JWT's `exp`
  (capped at a quarter of its lifetime), at once, without backoff.

A fresh token is asked for on every connect. Unparseable frames are counted
(`stats["bad_frames"]`) and skipped instead of killing the socket; an exception in
a handler is logged once per target per minute and counted.

WebSocket control frames: signalrcore 1.0.2's reader passes every frame but close to
the protocol as data and never answers a ping. `_WebSocketClient` (installed into
signalrcore's transport module, so this file pins signalrcore to 1.0.2 and
tests/unit/test_hub_internals.py fails when those internals change) answers Ping
frames with a Pong, ignores Pongs (ASP.NET sends unsolicited ones every 2 minutes),
handles control frames between the fragments of a message, and serialises sends
(pongs go out from the receive thread).
"""
from __future__ import annotations

import json
import logging
import random
import socket
import ssl
import struct
import threading
import time
import urllib.parse
from collections import Counter
from typing import Any, Callable

from loguru import logger
from signalrcore.hub_connection_builder import HubConnectionBuilder
from signalrcore.messages.message_type import MessageType
from signalrcore.messages.ping_message import PingMessage
from signalrcore.protocol.json_hub_protocol import JsonHubProtocol
from signalrcore.transport.sockets.errors import SocketClosedError
from signalrcore.transport.websockets import websocket_transport
from signalrcore.transport.websockets.websocket_client import WebSocketClient

from common.topstepx.rest import jwt_exp

# states reported through on_state and `state`
CONNECTING, CONNECTED, RECONNECTING, STOPPED = "connecting", "connected", "reconnecting", "stopped"

# signalrcore logs full tracebacks (and URLs carrying the token) at ERROR on every drop
logging.getLogger("SignalRCoreClient").setLevel(logging.CRITICAL)

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class _WebSocketClient(WebSocketClient):
    """signalrcore's WebSocket client with RFC 6455 control frames handled (module doc).

    `on_control(kind)` is told of every control frame ("ws_ping", "ws_pong", "ws_close")."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._send_lock = threading.Lock()
        self.on_control: Callable[[str], None] | None = None

    def send(self, message, opcode=OP_TEXT):
        with self._send_lock:               # a pong from the receive thread must not split a frame
            super().send(message, opcode=opcode)

    def _control(self, kind: str) -> None:
        if self.on_control is not None:
            self.on_control(kind)

    def _recv_frame(self):
        payload: bytes | None = None
        while True:
            fin, opcode, data = self._read_one_frame()
            if opcode == OP_PING:
                self._control("ws_ping")
                try:
                    self.send(data, opcode=OP_PONG)          # echo the application data
                except (OSError, SocketClosedError):
                    raise SocketClosedError() from None
                continue
            if opcode == OP_PONG:
                self._control("ws_pong")                     # unsolicited keep-alive: nothing to do
                continue
            if opcode == OP_CLOSE:
                self._control("ws_close")
                try:
                    self.send(data[:2] or struct.pack(">H", 1000), opcode=OP_CLOSE)
                except Exception:
                    pass
                raise SocketClosedError()
            if opcode in (OP_TEXT, OP_BINARY) and payload is None:
                payload = data
            elif opcode == OP_CONT and payload is not None:
                payload += data
            else:                                            # RFC 6455 protocol error: fail the socket
                try:
                    self.send(struct.pack(">H", 1002), opcode=OP_CLOSE)
                except Exception:
                    pass
                raise SocketClosedError()
            if fin:
                return self.prepare_data(payload)


# signalrcore's transport builds its client by this module-level name (pinned: see module doc)
websocket_transport.WebSocketClient = _WebSocketClient


class _TolerantJsonProtocol(JsonHubProtocol):
    """JSON hub protocol that skips a malformed record instead of raising in the receive
    thread (which would close the socket), and reports every frame to the client."""

    def __init__(self, client: "HubClient"):
        super().__init__()
        self._client = client

    def parse_messages(self, raw: Any) -> list:
        self._client._frame_received()
        if isinstance(raw, (bytes, bytearray)):
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError:
                self._client._bad_frame("binary frame that is not UTF-8", repr(bytes(raw[:60])))
                return []
        out = []
        for record in raw.split(self.record_separator):
            if not record.strip():
                continue
            try:
                data = json.loads(record)
                if not isinstance(data, dict):
                    raise ValueError(f"a JSON {type(data).__name__}, expected an object")
                if not data:
                    continue
                if data.get("type") == 1 and not isinstance(data.get("arguments", []), list):
                    raise ValueError("invocation arguments are not a list")
                msg = self.get_message(data)
            except Exception as exc:  # garbage must not take the connection down
                self._client._bad_frame(f"{type(exc).__name__}: {exc}", record[:120])
                continue
            if msg is not None:
                out.append(msg)
        return out


def hub_timing(api) -> dict:
    """HubClient keyword arguments from the `api:` config section (common/config.py)."""
    return {"keep_alive_s": api.hub_keep_alive_s, "server_timeout_s": api.hub_server_timeout_s,
            "token_refresh_margin_s": api.hub_token_refresh_margin_s}


def _with_token(url: str, token: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k != "access_token"]
    query.append(("access_token", token))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


class HubClient:
    """One SignalR hub connection kept alive by its own supervisor thread (see module doc).

    Args:
        url: hub URL, http(s):// or ws(s):// (signalrcore opens a raw socket either way).
        token_provider: returns a valid JWT; called before every connect attempt.
        subscriptions: re-run after every (re)connect; it calls `send(...)`.
        handlers: event target -> fn(arguments list), e.g. {"GatewayQuote": fn}.
        name: short name for logs ("market", "user").
        on_state: fn(state, detail) on every state change (connecting, connected,
            reconnecting, stopped).
        on_raw: fn(target, arguments, recv_ns) for every invocation, before `handlers`
            (the feed's recorder and normaliser use it).
        on_frame_end: fn() after on_raw has seen every invocation of one WebSocket frame
            that had any (the feed records a burst once all of it is published).
        keep_alive_s: send a SignalR ping when nothing was sent for this long.
        server_timeout_s: rebuild the connection when nothing arrived for this long
            (twice the server's KeepAliveInterval).
        token_refresh_margin_s: reconnect with a fresh token this long before `exp`
            (at most a quarter of the token's lifetime); 0 disables.
        ssl_context: for wss:// (default: the system's CAs, or $SSL_CERT_FILE).
    """

    def __init__(self, url: str, token_provider: Callable[[], str],
                 subscriptions: Callable[["HubClient"], None] | None = None,
                 handlers: dict[str, Callable[[list], None]] | None = None,
                 name: str = "hub", on_state: Callable[[str, str], None] | None = None,
                 on_raw: Callable[[str, list, int], None] | None = None, *,
                 on_frame_end: Callable[[], None] | None = None,
                 connect_timeout_s: float = 10.0, min_backoff_s: float = 0.25,
                 max_backoff_s: float = 30.0, stable_after_s: float = 5.0,
                 keep_alive_s: float = 10.0, server_timeout_s: float = 30.0,
                 token_refresh_margin_s: float = 120.0, ssl_context: ssl.SSLContext | None = None):
        self.url = url
        self.token_provider = token_provider
        self.subscriptions = subscriptions
        self.handlers = dict(handlers or {})
        self.name = name
        self.on_state = on_state
        self.on_raw = on_raw
        self.on_frame_end = on_frame_end
        self.connect_timeout_s = connect_timeout_s
        self.min_backoff_s = min_backoff_s
        self.max_backoff_s = max_backoff_s
        self.stable_after_s = stable_after_s
        self.keep_alive_s = keep_alive_s
        self.server_timeout_s = server_timeout_s
        self.token_refresh_margin_s = token_refresh_margin_s
        self.ssl_context = ssl_context

        self.state = STOPPED
        self.last_message_monotonic = 0.0     # last frame of any kind (pings included)
        self.last_sent_monotonic = 0.0
        self.token_exp = 0.0                  # `exp` of the token of the current connection (0: unknown)
        self._refresh_at = 0.0                # wall time of the planned token refresh (0: none)
        self._planned = False                 # the current teardown is planned: reconnect at once
        self._sent_ids: set = set()           # invocation ids sent on this connection
        self._answered_ids: set = set()       # ... and those the server has answered (completions)
        self.connected_since = 0.0
        self.stats: Counter = Counter()
        self._conn = None
        self._lock = threading.RLock()
        self._send_lock = threading.Lock()
        self._wake = threading.Event()        # set: leave the current connection
        self._opened = threading.Event()      # set by signalrcore once the handshake is done
        self._stopping = False
        self._reason = ""
        self._thread: threading.Thread | None = None
        self._last_err_log: dict[str, float] = {}
        self._attempt = 0

    # -- public API ------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._supervise, name=f"hub-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._thread = None
        self._teardown()
        self._set_state(STOPPED, "stopped")

    def force_reconnect(self, reason: str) -> None:
        """Drop the current connection and connect again (fresh token, re-subscribe)."""
        self._reason = reason
        self.stats["forced_reconnects"] += 1
        self._wake.set()

    def send(self, method: str, args: list) -> None:
        """Invoke a hub method (fire and forget). Raises ConnectionError when not connected."""
        conn = self._conn
        if conn is None or conn.transport is None or not conn.transport.is_running():
            raise ConnectionError(f"hub {self.name}: not connected, cannot send {method}")
        with self._send_lock:
            result = conn.send(method, list(args))
            self.last_sent_monotonic = time.monotonic()
            self._sent_ids.add(result.invocation_id)
        self.stats[f"sent_{method}"] += 1

    @property
    def last_reason(self) -> str:
        """Why the last connection ended or the last attempt failed ('' while connected)."""
        return self._reason

    @property
    def connected(self) -> bool:
        return self.state == CONNECTED

    # -- supervisor ------------------------------------------------------
    def _supervise(self) -> None:
        first = True
        while not self._stopping:
            self._set_state(CONNECTING if first else RECONNECTING, self._reason or "starting")
            ok = self._connect_once()
            if self._stopping:
                break
            stable = False
            if ok:
                self._watch()                  # until closed, silent, forced, refreshed or stopped
                stable = time.monotonic() - self.connected_since >= self.stable_after_s
                if stable:
                    self._attempt = 0
            self._teardown()
            first = False
            if self._stopping:
                break
            if self._planned:                  # token refresh: no backoff, the quotes must not gap
                self._planned = False
                continue
            delay = 0.0 if stable else self._next_backoff()   # a long-lived link retries at once
            self._set_state(RECONNECTING, f"{self._reason or 'connection lost'}; retry in {delay:.2f} s")
            self._sleep(delay)
        self._teardown()

    def _watch(self) -> None:
        """While connected: ping, watch for silence, refresh the token (module doc)."""
        tick_s = min(0.25, self.keep_alive_s / 4, self.server_timeout_s / 8)
        while not self._wake.wait(tick_s):
            now = time.monotonic()
            silent = now - self.last_message_monotonic
            if silent > self.server_timeout_s:
                self.stats["silent_reconnects"] += 1
                self._reason = (f"nothing from the server for {silent:.1f} s "
                                f"(server timeout {self.server_timeout_s:g} s)")
                logger.warning(f"HUB: {self.name} {self._reason}; rebuilding the connection")
                return
            if self._refresh_at and time.time() >= self._refresh_at:
                self.stats["token_refreshes"] += 1
                self._reason = f"token refresh ({self.token_exp - time.time():.0f} s before it expires)"
                logger.info(f"HUB: {self.name} {self._reason}")
                self._planned = True
                return
            if now - self.last_sent_monotonic >= self.keep_alive_s:
                self._ping()

    def _ping(self) -> None:
        conn = self._conn
        try:
            with self._send_lock:
                conn.transport.send(PingMessage())
                self.last_sent_monotonic = time.monotonic()
            self.stats["pings_sent"] += 1
        except Exception as exc:              # the socket is gone: the close callback follows
            self.last_sent_monotonic = time.monotonic()
            self._log_once("ping", f"HUB: {self.name} ping failed: {type(exc).__name__}: {exc}")

    def _plan_refresh(self, token: str) -> None:
        exp = jwt_exp(token) or 0.0
        now = time.time()
        if not exp or self.token_refresh_margin_s <= 0:
            self._refresh_at = 0.0
        elif exp == self.token_exp and self._refresh_at and now >= self._refresh_at:
            # the provider handed back the token we are replacing: do not loop; the server
            # closes the connection at `exp` and the next connect asks again
            self._log_once("same_token", f"HUB: {self.name} token provider returned the expiring token "
                                         f"again ({exp - now:.0f} s left); no refresh until it expires")
            self._refresh_at = 0.0
        else:
            self._refresh_at = exp - min(self.token_refresh_margin_s, max(0.0, exp - now) / 4)
        self.token_exp = exp

    def _next_backoff(self) -> float:
        base = min(self.max_backoff_s, self.min_backoff_s * (2 ** self._attempt))
        self._attempt = min(self._attempt + 1, 30)
        return base * (0.5 + random.random() / 2)      # "equal jitter": [base/2, base)

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._stopping:
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(0.05, left))

    def _connect_once(self) -> bool:
        self._wake.clear()
        self._opened.clear()
        self.stats["connects"] += 1
        try:
            token = self.token_provider()
        except Exception as exc:
            self._reason = f"no token: {type(exc).__name__}: {exc}"
            return False
        self._plan_refresh(token)
        builder = HubConnectionBuilder().with_url(_with_token(self.url, token), options={
            "skip_negotiation": True,
            "access_token_factory": lambda: token,
            "ssl_context": self.ssl_context or ssl.create_default_context(),
        }).with_hub_protocol(_TolerantJsonProtocol(self))
        builder.keep_alive_interval = self.keep_alive_s
        conn = builder.build()
        conn.on_open(lambda: self._opened.set() if conn is self._conn else None)
        conn.on_close(lambda: self._closed(conn, "connection closed by the server or network"))
        conn.on_error(self._on_error)
        for target in self.handlers:
            conn.on(target, self._dispatcher(target))
        self._tap(conn)
        with self._lock:
            self._conn = conn
            self._sent_ids, self._answered_ids = set(), set()
        # signalrcore connects with blocking sockets and no timeout: do it on a helper thread
        starter = threading.Thread(target=self._start_conn, args=(conn,), name=f"hub-{self.name}-connect",
                                   daemon=True)
        starter.start()
        if not self._opened.wait(self.connect_timeout_s):
            if not self._reason:
                self._reason = f"no handshake within {self.connect_timeout_s:.0f} s"
            return False
        if self._wake.is_set() or self._stopping:
            return False
        self.connected_since = time.monotonic()
        self.last_message_monotonic = time.monotonic()
        self.last_sent_monotonic = time.monotonic()
        client = getattr(conn.transport, "_client", None)
        if isinstance(client, _WebSocketClient):
            client.on_control = self._control_frame
        # connected means subscribed: every Subscribe* answered (a hub that stops after the
        # handshake must not look up, or the gateway would allow entries on it)
        try:
            if self.subscriptions is not None:
                self.subscriptions(self)
        except Exception as exc:
            self._reason = f"subscribe failed: {type(exc).__name__}: {exc}"
            return False
        deadline = time.monotonic() + self.connect_timeout_s
        while not self._sent_ids <= self._answered_ids:
            if self._wake.is_set() or self._stopping:
                return False
            if time.monotonic() > deadline:
                self._reason = f"no answer to the subscriptions within {self.connect_timeout_s:g} s"
                return False
            time.sleep(0.01)
        if self._wake.is_set() or self._stopping:
            return False
        self._reason = ""
        self._set_state(CONNECTED, "subscribed")
        return True

    def _start_conn(self, conn) -> None:
        try:
            conn.start()
        except Exception as exc:
            self._closed(conn, f"connect failed: {type(exc).__name__}: {exc}")
            self._opened.set() if conn is self._conn else None   # stop waiting for a handshake

    def _closed(self, conn, why: str) -> None:
        if conn is not self._conn:
            return                             # a late callback from a connection already torn down
        self.stats["closed"] += 1
        if not self._reason:
            self._reason = why
        self._wake.set()

    def _on_error(self, err: Any) -> None:
        # signalrcore calls this for a Completion with an error (e.g. unknown hub method)
        text = getattr(err, "error", None) or str(err)
        self.stats["errors"] += 1
        self._log_once("error", f"HUB: {self.name} error: {str(text)[:200]}")

    def _teardown(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is None:
            return
        transport = getattr(conn, "transport", None)
        client = getattr(transport, "_client", None)
        sock = getattr(client, "sock", None)
        if transport is not None:
            transport.manually_closing = True
            checker = getattr(transport, "connection_checker", None)
            if checker is not None:
                checker.running = False
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)   # wakes the receive thread; close() alone may not
            except OSError:
                pass
        if client is not None:
            client.running = False
            try:
                sock.close() if sock is not None else None
            except OSError:
                pass

    # -- callbacks on signalrcore's receive thread ------------------------
    def _frame_received(self) -> None:
        self.last_message_monotonic = time.monotonic()
        self.stats["frames"] += 1

    def _control_frame(self, kind: str) -> None:
        self.stats[kind] += 1

    def _bad_frame(self, why: str, sample: str) -> None:
        self.stats["bad_frames"] += 1
        self._log_once("bad_frame", f"HUB: {self.name} skipped a malformed frame ({why}): {sample!r} "
                                    f"({self.stats['bad_frames']} so far)")

    def _tap(self, conn) -> None:
        """Call on_raw(target, arguments, recv_ns) for every invocation before the handlers,
        and keep the reason of a server's close message."""
        original = conn.on_message

        def on_message(messages: list) -> None:
            recv_ns = time.time_ns()
            invoked = False
            for m in messages:
                kind = getattr(m, "type", None)
                if kind == MessageType.completion and conn is self._conn:
                    self._answered_ids.add(getattr(m, "invocation_id", None))
                if kind == MessageType.close and conn is self._conn:
                    self.stats["server_close"] += 1
                    self._reason = f"server closed the connection: {getattr(m, 'error', None) or 'no error'}"
                if kind == MessageType.invocation and self.on_raw is not None:
                    invoked = True
                    try:
                        self.on_raw(m.target, m.arguments, recv_ns)
                    except Exception as exc:
                        self.stats["handler_errors"] += 1
                        self._log_once("raw", f"HUB: {self.name} on_raw failed on {m.target}: {exc!r}")
            if invoked and self.on_frame_end is not None:
                try:
                    self.on_frame_end()
                except Exception as exc:
                    self.stats["handler_errors"] += 1
                    self._log_once("frame_end", f"HUB: {self.name} on_frame_end failed: {exc!r}")
            original(messages)
        conn.on_message = on_message
        # signalrcore captured the bound method when building the transport; it is built in
        # start(), after this assignment, so the transport picks up the tap.

    def _dispatcher(self, target: str) -> Callable[[list], None]:
        fn = self.handlers[target]

        def call(arguments: list) -> None:
            try:
                fn(arguments)
            except Exception as exc:
                self.stats["handler_errors"] += 1
                self._log_once(target, f"HUB: {self.name} handler for {target} failed: {exc!r}")
        return call

    def _log_once(self, kind: str, text: str, every_s: float = 60.0) -> None:
        now = time.monotonic()
        if now - self._last_err_log.get(kind, -1e9) >= every_s:
            self._last_err_log[kind] = now
            logger.warning(text)

    def _set_state(self, state: str, detail: str) -> None:
        if state == self.state and state != RECONNECTING:
            return
        self.state = state
        if self.on_state is not None:
            try:
                self.on_state(state, detail)
            except Exception as exc:
                self._log_once("on_state", f"HUB: {self.name} on_state failed: {exc!r}")
