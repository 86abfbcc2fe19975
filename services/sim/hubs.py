"""The SignalR half of the simulator: ASP.NET Core SignalR JSON protocol over WebSocket
(handshake, 0x1E record separator, invocations/completions, pings, close), the token in
`access_token`, the market and user hubs' subscribe methods."""
from __future__ import annotations

import asyncio
import collections
import itertools
import json
import secrets
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web
from loguru import logger

from services.sim.wire import RS

if TYPE_CHECKING:
    from services.sim.simulator import Simulator


class HubConn:
    ids = itertools.count(1)

    def __init__(self, hub: str, ws: web.WebSocketResponse, user: str, maxq: int):
        self.id = next(self.ids)
        self.hub = hub
        self.ws = ws
        self.user = user
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(maxq)
        self.subs: dict[str, set] = collections.defaultdict(set)
        self.handshaken = False
        self.closed = False
        self.sent = 0

    async def push(self, frame: str) -> None:
        if not self.closed:
            await self.queue.put(frame)

    def push_nowait(self, frame: str) -> None:
        if self.closed:
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
        return web.Response(status=401)
    ws = web.WebSocketResponse(max_msg_size=1 << 20)
    await ws.prepare(request)
    conn = HubConn(hub, ws, user, sim.cfg.max_client_queue)
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
            try:
                await ws.send_str("".join(parts))
                conn.sent += len(parts)
            except (ConnectionError, RuntimeError):
                return

    async def pinger() -> None:
        while not ws.closed:
            await asyncio.sleep(sim.cfg.ping_interval_s)
            if conn.handshaken:
                await conn.push('{"type":6}' + RS)

    wtask = asyncio.create_task(writer())
    ptask = asyncio.create_task(pinger())
    buf = ""
    try:
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                data = msg.data.decode("utf-8", "replace")
            elif msg.type == WSMsgType.TEXT:
                data = msg.data
            else:
                break
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
        ptask.cancel()
    return ws


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
    if error is None and action == "depth" and key in sim.traded:
        # a new depth subscriber gets a Reset and the whole book at once, not at the next change
        frame = sim.depth_snapshot(key)
        if frame:
            await conn.push(frame)
    return True
