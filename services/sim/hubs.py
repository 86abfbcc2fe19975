"""The SignalR half of the simulator: ASP.NET Core SignalR JSON protocol over WebSocket
(handshake, 0x1E record separator, invocations/completions, pings, close), the token in
`access_token`, the market and user hubs' subscribe methods.

Each connection has a keeper task that behaves as ASP.NET Core SignalR on Kestrel does,
with its defaults (SimConfig, README "Hub keep-alive, timeouts, tokens and TLS"):
a `{"type":6}` ping every KeepAliveInterval (15 s); a close message and a close when the
client sent nothing for ClientTimeoutInterval (30 s); the socket dropped when the SignalR
handshake has not come within HandshakeTimeout (15 s); a close when the access token
expires (CloseOnAuthenticationExpiration); WebSocket keep-alive control frames
(WebSocketOptions.KeepAliveInterval, 2 min): unsolicited Pongs, or Pings that must be
answered within `ws_keepalive_timeout_s` when that is set. Client Pings are answered.

Faults (services/sim/faults.py sets them): a muted connection sends nothing at all, TCP
open (`hub_silent`, and `stop_after_handshake` for the next connections); `half_close`
sends a FIN and keeps reading."""
from __future__ import annotations

import asyncio
import collections
import itertools
import json
import secrets
import socket
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web
from loguru import logger

from services.sim.wire import RS, inv

if TYPE_CHECKING:
    from services.sim.simulator import Simulator


class HubConn:
    ids = itertools.count(1)

    def __init__(self, hub: str, ws: web.WebSocketResponse, user: str, maxq: int, token: str = "",
                 request: web.Request | None = None):
        self.id = next(self.ids)
        self.hub = hub
        self.ws = ws
        self.user = user
        self.token = token
        self.request = request
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(maxq)
        self.subs: dict[str, set] = collections.defaultdict(set)
        self.handshaken = False
        self.closed = False
        self.muted = False             # fault: send nothing at all (the TCP connection stays open)
        self.mute_after_handshake = False
        self.sent = 0
        now = asyncio.get_event_loop().time()
        self.opened_at = now
        self.last_recv = now           # last SignalR data from the client (ClientTimeoutInterval)
        self.last_ping = now           # last server {"type":6} queued
        self.last_ws_keepalive = now
        self.pong_due: float | None = None     # ws Ping sent, Pong expected by then

    async def push(self, frame: str) -> None:
        if not self.closed and not self.muted:
            await self.queue.put(frame)

    def push_nowait(self, frame: str) -> None:
        if self.closed or self.muted:
            return
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            logger.warning(f"SIM: hub client {self.id} is not reading; dropping it")
            self.closed = True
            self.queue = asyncio.Queue(1)
            asyncio.get_event_loop().create_task(self.ws.close())


HUB_METHODS = {
    "market": {"SubscribeContractQuotes": "quotes", "SubscribeContractTrades": "trades",
               "SubscribeContractMarketDepth": "depth", "UnsubscribeContractQuotes": "-quotes",
               "UnsubscribeContractTrades": "-trades", "UnsubscribeContractMarketDepth": "-depth"},
    "user": {"SubscribeAccounts": "accounts", "UnsubscribeAccounts": "-accounts",
             "SubscribeOrders": "orders", "UnsubscribeOrders": "-orders",
             "SubscribePositions": "positions", "UnsubscribePositions": "-positions",
             "SubscribeTrades": "trades", "UnsubscribeTrades": "-trades"},
}


def binding_error(hub: str, target: str, args: list) -> str | None:
    """ASP.NET Core binds invocation arguments to the hub method's parameters: a wrong count
    or type fails the invocation (a completion error), it is never coerced. The market
    methods take a contractId string, the user methods an accountId int (Accounts: none)."""
    want: tuple[type, ...] = () if target in ("SubscribeAccounts", "UnsubscribeAccounts") else \
        (str,) if hub == "market" else (int,)
    prefix = f"Failed to invoke '{target}' due to an error on the server. InvalidDataException: "
    if len(args) != len(want):
        return prefix + f"Invocation provides {len(args)} argument(s) but target expects {len(want)}."
    for a, t in zip(args, want):
        if not isinstance(a, t) or isinstance(a, bool):
            return prefix + ("Error binding arguments. Make sure that the types of the provided values match "
                             "the types of the hub method being invoked.")
    return None


async def negotiate(request: web.Request) -> web.Response:
    sim: Simulator = request.app["sim"]
    token = request.query.get("access_token") or request.headers.get("Authorization", "")[7:]
    if sim.tokens.check(token) is None:
        return web.Response(status=401)
    cid = secrets.token_urlsafe(16)
    return web.json_response({"negotiateVersion": 1, "connectionId": cid, "connectionToken": cid,
                              "availableTransports": [{"transport": "WebSockets",
                                                       "transferFormats": ["Text", "Binary"]}]})


async def hub_ws(request: web.Request) -> web.StreamResponse:
    sim: Simulator = request.app["sim"]
    hub = request.match_info["hub"]
    if hub not in HUB_METHODS:
        return web.Response(status=404)
    token = request.query.get("access_token") or request.headers.get("Authorization", "")[7:]
    user = sim.tokens.check(token)
    if user is None:
        sim.stats["hub_401"] += 1
        return web.Response(status=401)
    # autoping off: the keeper answers client Pings itself and sees the Pongs it asked for
    ws = web.WebSocketResponse(max_msg_size=1 << 20, autoping=False)
    await ws.prepare(request)
    conn = HubConn(hub, ws, user, sim.cfg.max_client_queue, token, request)
    if sim.mute_next.get(hub, 0) > 0:               # fault: stop after the handshake
        sim.mute_next[hub] -= 1
        conn.mute_after_handshake = True
    sim.conns.add(conn)
    sim.stats[f"{hub}_connects"] += 1

    async def writer() -> None:
        while True:
            frame = await conn.queue.get()
            if frame is None or ws.closed:
                return
            # batch what is already queued into one WebSocket frame (records are 0x1E-separated)
            parts = [frame]
            while not conn.queue.empty() and len(parts) < 256:
                nxt = conn.queue.get_nowait()
                if nxt is None:
                    break
                parts.append(nxt)
            if conn.muted:
                continue
            try:
                await ws.send_str("".join(parts))
                conn.sent += len(parts)
            except (ConnectionError, RuntimeError):
                return

    wtask = asyncio.create_task(writer())
    ktask = asyncio.create_task(keeper(sim, conn))
    buf = ""
    try:
        async for msg in ws:
            if msg.type == WSMsgType.PING:
                if not conn.muted:
                    await ws.pong(msg.data)
                continue
            if msg.type == WSMsgType.PONG:
                conn.pong_due = None
                continue
            if msg.type == WSMsgType.BINARY:
                data = msg.data.decode("utf-8", "replace")
            elif msg.type == WSMsgType.TEXT:
                data = msg.data
            else:
                break
            conn.last_recv = asyncio.get_event_loop().time()
            buf += data
            while RS in buf:
                record, buf = buf.split(RS, 1)
                if not await handle_record(sim, conn, record):
                    return ws
    finally:
        conn.closed = True
        sim.conns.discard(conn)
        await conn.queue.put(None) if conn.queue.qsize() < conn.queue.maxsize else None
        wtask.cancel()
        ktask.cancel()
    return ws


CLIENT_TIMEOUT_ERROR = ("Connection closed with an error. OperationCanceledException: Client hasn't sent a "
                        "message/ping within the configured ClientTimeoutInterval.")


async def close_with(conn: HubConn, error: str | None, reason: str) -> None:
    """Send a SignalR close message (unless muted) and close the WebSocket."""
    conn.closed = True
    if not conn.muted:
        body = {"type": 7, "allowReconnect": True}
        if error:
            body["error"] = error
        try:
            await conn.ws.send_str(json.dumps(body) + RS)
        except Exception:
            pass
    logger.warning(f"SIM: hub {conn.hub} connection {conn.id} closed: {reason}")
    await conn.ws.close()


def abort(conn: HubConn, reason: str) -> None:
    """Drop the TCP connection without a close frame (as Kestrel aborts)."""
    conn.closed = True
    logger.warning(f"SIM: hub {conn.hub} connection {conn.id} aborted: {reason}")
    transport = conn.request.transport if conn.request is not None else None
    if transport is not None:
        transport.abort()


def half_close(conn: HubConn) -> bool:
    """Fault: send a FIN (no close frame) and keep reading, like a proxy that half-closes."""
    conn.muted = True
    transport = conn.request.transport if conn.request is not None else None
    if transport is None:
        return False
    if transport.can_write_eof():
        transport.write_eof()
        return True
    sock = transport.get_extra_info("socket")            # TLS: no write_eof; shut the TCP write side
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_WR)
            return True
        except OSError:
            return False
    return False


async def keeper(sim: Simulator, conn: HubConn) -> None:
    """The per-connection timers of ASP.NET Core SignalR and Kestrel (module doc)."""
    cfg = sim.cfg
    loop = asyncio.get_event_loop()
    tick = max(0.02, min(0.25, cfg.ping_interval_s / 4, cfg.client_timeout_s / 8, cfg.handshake_timeout_s / 4,
                         cfg.ws_keepalive_s / 4 if cfg.ws_keepalive_s else 0.25))
    ws = conn.ws
    while not ws.closed and not conn.closed:
        await asyncio.sleep(tick)
        now = loop.time()
        if not conn.handshaken:
            if now - conn.opened_at > cfg.handshake_timeout_s:
                sim.stats["hub_handshake_timeouts"] += 1
                abort(conn, f"no handshake within {cfg.handshake_timeout_s:g} s")
                return
            continue
        if now - conn.last_recv > cfg.client_timeout_s:
            sim.stats["hub_client_timeouts"] += 1
            await close_with(conn, CLIENT_TIMEOUT_ERROR,
                             f"nothing from the client for {cfg.client_timeout_s:g} s (ClientTimeoutInterval)")
            return
        if cfg.close_on_token_expiry and sim.tokens.check(conn.token) is None:
            sim.stats["hub_token_expired"] += 1
            await close_with(conn, None, "its access token expired")
            return
        if now - conn.last_ping >= cfg.ping_interval_s:
            conn.last_ping = now
            await conn.push('{"type":6}' + RS)
        if conn.pong_due is not None and now > conn.pong_due:
            sim.stats["hub_pong_timeouts"] += 1
            abort(conn, f"no WebSocket Pong within {cfg.ws_keepalive_timeout_s:g} s")
            return
        if cfg.ws_keepalive_s and now - conn.last_ws_keepalive >= cfg.ws_keepalive_s and not conn.muted:
            conn.last_ws_keepalive = now
            try:
                if cfg.ws_keepalive_timeout_s > 0:
                    await ws.ping()
                    if conn.pong_due is None:
                        conn.pong_due = now + cfg.ws_keepalive_timeout_s
                    sim.stats["hub_ws_pings"] += 1
                else:
                    await ws.pong()                          # unsolicited: a one-way keep-alive
                    sim.stats["hub_ws_pongs"] += 1
            except (ConnectionError, RuntimeError):
                return


async def handle_record(sim: Simulator, conn: HubConn, record: str) -> bool:
    """One SignalR record; False means close the connection."""
    try:
        msg = json.loads(record)
        if not isinstance(msg, dict):
            raise ValueError("not an object")
        if msg.get("type") == 1 and (not isinstance(msg.get("target"), str)
                                     or not isinstance(msg.get("arguments", []), list)):
            raise ValueError("invocation without a string target and an arguments array")  # as ASP.NET
    except ValueError:
        sim.stats["hub_garbage"] += 1
        await conn.ws.send_str(json.dumps({"type": 7, "error": "Connection closed with an error. "
                                                               "InvalidDataException: invalid message"}) + RS)
        await conn.ws.close()
        return False
    if not conn.handshaken:
        if msg.get("protocol") != "json":
            await conn.ws.send_str(json.dumps({"error": f"The protocol '{msg.get('protocol')}' is not supported."})
                                   + RS)
            await conn.ws.close()
            return False
        conn.handshaken = True
        await conn.ws.send_str("{}" + RS)
        conn.last_ping = asyncio.get_event_loop().time()
        if conn.mute_after_handshake:
            conn.muted = True
            logger.warning(f"SIM: fault: hub {conn.hub} connection {conn.id} silent after its handshake")
        return True
    mtype = msg.get("type")
    if mtype == 6:
        return True
    if mtype == 7:
        await conn.ws.close()
        return False
    if mtype != 1:
        return True
    target, args, inv_id = msg.get("target"), msg.get("arguments") or [], msg.get("invocationId")
    action = HUB_METHODS[conn.hub].get(target)
    error = None
    if action is None:
        error = f"Failed to invoke '{target}' due to an error on the server. HubException: Method does not exist."
    else:
        topic = action.lstrip("-")
        error = binding_error(conn.hub, target, args)
        key = True if topic == "accounts" else (args[0] if error is None else None)
        if error is None:
            if action.startswith("-"):
                conn.subs[topic].discard(key)
            else:
                conn.subs[topic].add(key)
                sim.stats[f"subscribe_{topic}"] += 1
    if inv_id is not None:
        done = {"type": 3, "invocationId": inv_id}
        if error:
            done["error"] = error
        else:
            done["result"] = None
        await conn.push(json.dumps(done) + RS)
    if error is None and action == "quotes" and key in sim.traded:
        # a new quote subscriber gets the current quote at once (a reconnecting client's snapshot)
        mkt = sim.engine.markets.get(key)
        if mkt is not None and mkt.bid is not None and mkt.ask is not None:
            last = mkt.last if mkt.last is not None else mkt.bid
            await conn.push(inv("GatewayQuote", key, sim.quote_json(mkt.bid, mkt.ask, last, sim.engine.now_ns)))
    if error is None and action == "depth" and key in sim.traded:
        # a new depth subscriber gets a Reset and the whole book at once, not at the next change
        frame = sim.depth_snapshot(key)
        if frame:
            await conn.push(frame)
    return True
