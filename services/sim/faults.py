"""Fault injection and the simulator's control surface (`/sim/...`, loopback, no auth):
HTTP errors, delays and held answers, order rejects, dropped/garbage WebSockets, silent,
half-closed and stop-after-handshake hubs, stalls, expired tokens, price control, the replay speed, and the sim's own record (`/sim/state`)."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

from aiohttp import web
from loguru import logger

from services.sim.hubs import half_close
from services.sim.wire import RS, iso

if TYPE_CHECKING:
    from services.sim.simulator import Simulator


@dataclass
class Faults:
    http_errors: list[dict] = field(default_factory=list)    # {status, count, path}
    delays: list[dict] = field(default_factory=list)         # {ms, count, path}
    holds: list[dict] = field(default_factory=list)          # {seconds, count, path}: answer late
    reject: dict | None = None                               # {count, code, message}

    def take(self, items: list[dict], path: str) -> dict | None:
        for f in items:
            if f.get("path") in (None, path) and f.get("count", 1) != 0:
                if f.get("count", 1) > 0:
                    f["count"] = f.get("count", 1) - 1
                return f
        return None

    def clear(self) -> None:
        self.http_errors.clear()
        self.delays.clear()
        self.holds.clear()
        self.reject = None


async def control(request: web.Request) -> web.Response:
    sim: Simulator = request.app["sim"]
    name = request.match_info["name"]
    try:
        raw = await request.read()
        p = json.loads(raw) if raw.strip() else {}
    except ValueError:
        return web.json_response({"ok": False, "error": "body is not JSON"}, status=400)
    f = sim.faults
    if name == "drop_ws":
        hub = p.get("hub")
        dropped = 0
        for c in list(sim.conns):
            if hub in (None, c.hub):
                dropped += 1
                c.closed = True
                sim.conns.discard(c)
                try:
                    await c.ws.send_str(json.dumps({"type": 7, "error": "Connection closed with an error.",
                                                    "allowReconnect": True}) + RS)
                except Exception:
                    pass
                await c.ws.close()
        logger.warning(f"SIM: fault: dropped {dropped} WebSocket(s)")
        return web.json_response({"ok": True, "dropped": dropped})
    if name in ("hub_silent", "half_close"):
        # a hub that goes quiet with TCP open (a hung proxy), or one that sends a FIN and keeps reading
        hit = [c for c in list(sim.conns) if p.get("hub") in (None, c.hub) and c.handshaken and not c.closed]
        for c in hit:
            if name == "hub_silent":
                c.muted = True
            else:
                half_close(c)
        logger.warning(f"SIM: fault: {name} on {len(hit)} {p.get('hub') or 'hub'} connection(s)")
        return web.json_response({"ok": True, "connections": len(hit)})
    if name == "stop_after_handshake":
        hub = p.get("hub") or "market"
        sim.mute_next[hub] = int(p.get("count", 1))
    elif name == "delay":
        f.delays.append({"ms": p.get("ms", 1000), "count": p.get("count", -1), "path": p.get("path")})
    elif name == "timeout":
        f.holds.append({"seconds": p.get("seconds", 10), "count": p.get("count", 1), "path": p.get("path")})
    elif name == "http_error":
        f.http_errors.append({"status": p.get("status", 500), "count": p.get("count", 1), "path": p.get("path")})
    elif name == "reject_orders":
        f.reject = {"count": p.get("count", 1), "code": p.get("code", 2), "message": p.get("message")}
    elif name == "partial_fill":
        sim.engine.partial_next(int(p.get("fill", 1)), never=p.get("rest") == "never")
    elif name == "expire_tokens":
        sim.tokens.expire_all()
    elif name == "stall":
        sim.stall_until = time.monotonic() + float(p.get("seconds", 10))
        sim.replay.delay(float(p.get("seconds", 10)))
    elif name == "garbage":
        for c in list(sim.conns):
            if p.get("hub") in (None, c.hub) and c.handshaken:
                await c.push(p.get("frame", "this is not json") + RS)
    elif name == "clear":
        f.clear()
        sim.mute_next.clear()
        sim.stall_until = 0.0
    elif name == "pause":
        sim.paused = True
    elif name == "resume":
        if sim.paused:
            sim.paused = False
    elif name == "price":
        sim.paused = True
        inst = sim.inst
        bid = inst.to_ticks(str(p["bid"]))
        ask = inst.to_ticks(str(p["ask"])) if "ask" in p else bid + 1
        last = inst.to_ticks(str(p["last"])) if "last" in p else None
        sim.set_price(bid, ask, last, trade=bool(p.get("trade", "last" in p)))
    elif name == "speed":
        sim.replay.set_speed(float(p["speed"]), time.monotonic())
    elif name == "balance":
        sim.engine.account.balance_cents = int(Decimal(str(p["balance"])) * 100)
        sim.publish_events([("account", sim.engine.account)])
    else:
        return web.json_response({"ok": False, "error": f"unknown control {name!r}"}, status=404)
    logger.warning(f"SIM: control {name} {p}")
    return web.json_response({"ok": True})


async def state(request: web.Request) -> web.Response:
    sim: Simulator = request.app["sim"]
    e = sim.engine
    mkt = e.markets.get(sim.contract)
    return web.json_response({
        "account": sim.account_json(),
        "positions": [sim.position_json(p) for p in e.positions.values() if p.qty != 0],
        "orders": [sim.order_json(o) for o in e.orders.values()],
        "working": [sim.order_json(o) for o in e.working()],
        "trades": [sim.trade_json(t) for t in e.trades],
        "market": {"now": iso(e.now_ns), "now_ns": e.now_ns, "contract": sim.contract,
                   "bid": mkt.bid if mkt else None, "ask": mkt.ask if mkt else None,
                   "last": mkt.last if mkt else None, "paused": sim.paused, "laps": sim.replay.laps},
        "connections": [{"hub": c.hub, "subs": {k: sorted(map(str, v)) for k, v in c.subs.items()}, "sent": c.sent}
                        for c in sim.conns],
        "stats": dict(sim.stats),
    })
