"""The TopstepX stand-in: REST + SignalR hubs on one aiohttp server (topstepx_api.md).

REST: every endpoint POST + JSON, the success/errorCode/errorMessage envelope,
business failures as HTTP 200, 400 for unreadable bodies (as ASP.NET model binding
does), 401 without a valid bearer JWT, 429 past the rate limit.
Hubs: ASP.NET Core SignalR JSON protocol over WebSocket (handshake, 0x1E record
separator, invocations/completions, pings, close), token in `access_token`.
Control (`/sim/...`, loopback, no auth): faults, price control, the sim's own record.
"""
from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import hmac
import itertools
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from aiohttp import WSMsgType, web
from loguru import logger

from common.instruments import INSTRUMENTS, Instrument, InstrumentError, instrument_for, parse_contract_id
from services.sim.config import SimConfig
from services.sim.market import NS, Replay, Tick
from services.sim.matching import (
    BUY, JOIN_ASK, JOIN_BID, LIMIT, MARKET, SELL, STOP, STOP_LIMIT, SUSPENDED, TRAILING_STOP, WORKING, Bracket,
    MatchError, MatchingEngine, Order, Rejected, SimAccount, SimPosition, SimTrade, check_brackets,
)

RS = "\x1e"
DOM_BEST_ASK, DOM_BEST_BID = 3, 4      # DomType (topstepx_api.md §2)


def iso(ns: int) -> str:
    dt = datetime.fromtimestamp(ns // NS, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{ns % NS // 1000:06d}+00:00"


def parse_iso(s: Any) -> int:
    if not isinstance(s, str) or not s:
        raise ValueError("timestamp must be an ISO-8601 string")
    s = s.strip().replace("Z", "+00:00")
    frac = 0
    if "." in s:
        head, rest = s.split(".", 1)
        digits = "".join(itertools.takewhile(str.isdigit, rest))
        s = head + rest[len(digits):]
        frac = int((digits + "000000000")[:9])
    dt = datetime.fromisoformat(s)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp()) * NS + frac


# --------------------------------------------------------------------------
# JWT (HS256), enough for a faithful 401
# --------------------------------------------------------------------------

def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Tokens:
    def __init__(self, ttl_s: float):
        self.secret = secrets.token_bytes(32)
        self.ttl_s = ttl_s
        self.valid_after = 0.0

    def issue(self, user: str) -> str:
        now = time.time()
        head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = _b64(json.dumps({"sub": user, "iat": now, "exp": int(now + self.ttl_s),
                                "jti": secrets.token_hex(8)}).encode())
        sig = _b64(hmac.new(self.secret, f"{head}.{body}".encode(), hashlib.sha256).digest())
        return f"{head}.{body}.{sig}"

    def check(self, token: str | None) -> str | None:
        """The user name of a valid token, else None."""
        if not token:
            return None
        try:
            head, body, sig = token.split(".")
            good = _b64(hmac.new(self.secret, f"{head}.{body}".encode(), hashlib.sha256).digest())
            if not hmac.compare_digest(good, sig):
                return None
            claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            if claims["exp"] <= time.time() or claims["iat"] <= self.valid_after:
                return None
            return claims["sub"]
        except Exception:
            return None

    def expire_all(self) -> None:
        self.valid_after = time.time()


# --------------------------------------------------------------------------
# faults
# --------------------------------------------------------------------------

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


class BadRequest(Exception):
    """An unreadable body: HTTP 400 with a ProblemDetails body, like ASP.NET."""


class Refused(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def field_of(body: dict, name: str, kind: type | tuple, required: bool = True, default: Any = None) -> Any:
    if name not in body or body[name] is None:
        if required:
            raise BadRequest(f"The {name} field is required.")
        return default
    val = body[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(val, bool) and bool not in kinds:
        raise BadRequest(f"The JSON value of {name} could not be converted.")
    if not isinstance(val, kinds):
        raise BadRequest(f"The JSON value of {name} could not be converted.")
    return val


def price_of(body: dict, name: str, inst: Instrument) -> int | None:
    if name not in body or body[name] is None:
        return None
    val = body[name]
    if isinstance(val, bool) or not isinstance(val, (int, float, str)):
        raise BadRequest(f"The JSON value of {name} could not be converted.")
    try:
        d = Decimal(str(val))
    except InvalidOperation:
        raise BadRequest(f"The JSON value of {name} could not be converted.") from None
    if not d.is_finite() or d <= 0:
        raise Refused(2, f"Invalid {name}: {val}")
    try:
        return inst.to_ticks(d)
    except InstrumentError:
        raise Refused(2, f"Invalid {name}: {val} is not a multiple of the tick size {inst.tick_size}") from None


# --------------------------------------------------------------------------
# hub connections
# --------------------------------------------------------------------------

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


def inv(target: str, *args: Any) -> str:
    return json.dumps({"type": 1, "target": target, "arguments": list(args)}, separators=(",", ":")) + RS


# --------------------------------------------------------------------------
# the simulator
# --------------------------------------------------------------------------

class Simulator:
    def __init__(self, cfg: SimConfig, contract: str, ticks: list[Tick], offset_ns: int, api_key: str):
        self.cfg = cfg
        self.contract = contract
        self.inst = instrument_for(contract)
        self.api_key = api_key
        self.tokens = Tokens(cfg.token_ttl_s)
        self.faults = Faults()
        self.engine = MatchingEngine(SimAccount(cfg.account_id, cfg.account_name,
                                                int(cfg.starting_balance * 100)),
                                     slippage_ticks=cfg.slippage_ticks, limit_fill=cfg.limit_fill)
        # ids never repeat across simulator runs (a real broker never reuses one): a restarted
        # sim must not hand out an id that a gateway's journal or a keeper's fill set still holds
        run = (time.time_ns() // 10**9 - 1_700_000_000) * 1000
        self.engine._order_ids = itertools.count(3_300_000_001 + run)
        self.engine._trade_ids = itertools.count(1_100_000_001 + run)
        self.engine._position_ids = itertools.count(400_000_001 + run)
        self.replay = Replay(ticks, offset_ns, cfg.speed, cfg.loop, cfg.start_offset_s)
        self.engine.now_ns = self.replay.t0_data
        self.conns: set[HubConn] = set()
        self.tags: dict[str, int] = {}
        self.rate: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self.paused = False
        self.stall_until = 0.0
        self.session = {"open": None, "high": None, "low": None, "volume": 0}
        self.stats = collections.Counter()
        self.month_code, self.year = parse_contract_id(contract)[1:]
        self._depth_last: tuple[int, int] | None = None    # best bid/ask last sent as GatewayDepth

    # -- contracts -------------------------------------------------------
    def contracts(self) -> list[dict]:
        out = []
        for inst in INSTRUMENTS.values():
            cid = f"CON.F.US.{inst.root}.{self.month_code}{self.year % 100:02d}"
            out.append({"id": cid, "name": f"{inst.symbol}{self.month_code}{self.year % 10}",
                        "description": inst.description, "tickSize": float(inst.tick_size),
                        "tickValue": inst.tick_value_cents / 100, "activeContract": True,
                        "symbolId": inst.symbol_id})
        return out

    # -- serialisation ---------------------------------------------------
    def order_json(self, o: Order) -> dict:
        inst = instrument_for(o.contract)
        fp = o.filled_price(inst)
        return {"id": o.id, "accountId": o.account_id, "contractId": o.contract, "symbolId": inst.symbol_id,
                "creationTimestamp": iso(o.created_ns), "updateTimestamp": iso(o.updated_ns),
                "status": o.status, "type": o.type, "side": o.side, "size": o.size,
                "limitPrice": float(inst.to_price(o.limit_ticks)) if o.limit_ticks is not None else None,
                "stopPrice": float(inst.to_price(o.stop_ticks)) if o.stop_ticks is not None else None,
                "fillVolume": o.fill_volume, "filledPrice": float(fp) if fp is not None else None,
                "customTag": o.tag, "parentOrderId": o.parent_id, "linkedOrderId": o.linked_id,
                **self._trail_json(o, inst)}

    @staticmethod
    def _trail_json(o: Order, inst: Instrument) -> dict:
        """Live extras: a bracket child's signed ticks from the entry (trailDistance) and the same
        in price (trailPrice) -- the doc's wording leaves open whether both legs carry them; both
        do here; a trailing stop's distance, read back as a price distance (topstepx_api.md §1.6)."""
        ticks = o.offset_ticks if o.parent_id is not None else o.trail_ticks
        if ticks is None:
            return {"trailDistance": None, "trailPrice": None}
        return {"trailDistance": ticks, "trailPrice": float(inst.to_price(ticks))}

    def trade_json(self, t: SimTrade) -> dict:
        inst = instrument_for(t.contract)
        return {"id": t.id, "accountId": t.account_id, "contractId": t.contract,
                "creationTimestamp": iso(t.ts_ns), "price": float(inst.to_price(t.price_ticks)),
                "profitAndLoss": None if t.pnl_cents is None else t.pnl_cents / 100,
                "fees": t.fees_cents / 100, "commissions": 0.0, "side": t.side, "size": t.size,
                "voided": t.voided, "orderId": t.order_id}

    def position_json(self, p: SimPosition) -> dict:
        inst = instrument_for(p.contract)
        return {"id": p.id, "accountId": p.account_id, "contractId": p.contract,
                "creationTimestamp": iso(p.created_ns),
                "type": 0 if p.qty == 0 else (1 if p.qty > 0 else 2), "size": abs(p.qty),
                "averagePrice": float(p.avg_price(inst)),
                "contractDisplayName": f"{inst.symbol}{self.month_code}{self.year % 10}"}

    def account_json(self) -> dict:
        a = self.engine.account
        return {"id": a.id, "name": a.name, "balance": a.balance_cents / 100, "canTrade": a.can_trade,
                "isVisible": True, "simulated": a.simulated}

    # -- user-hub fan-out ------------------------------------------------
    def publish_events(self, events: list) -> None:
        for kind, obj in events:
            if kind == "order":
                self.stats["order_events"] += 1
                self._user("orders", obj.account_id, "GatewayUserOrder", {"action": 1, "data": self.order_json(obj)})
            elif kind == "trade":
                inst = instrument_for(obj.contract)
                logger.info(f"SIM: FILL order {obj.order_id} {'BUY' if obj.side == BUY else 'SELL'} {obj.size} "
                            f"@ {inst.fmt(obj.price_ticks)}")
                self._user("trades", obj.account_id, "GatewayUserTrade", {"action": 0, "data": self.trade_json(obj)})
            elif kind == "position":
                action = 2 if obj.qty == 0 else 1
                self._user("positions", obj.account_id, "GatewayUserPosition",
                           {"action": action, "data": self.position_json(obj)})
            elif kind == "account":
                self._user("accounts", None, "GatewayUserAccount", {"action": 1, "data": self.account_json()})

    def _user(self, topic: str, account_id: int | None, target: str, payload: dict) -> None:
        frame = inv(target, payload)
        for c in list(self.conns):
            if c.hub == "user" and c.handshaken and (account_id is None and c.subs["accounts"]
                                                     or account_id in c.subs[topic]):
                c.push_nowait(frame)

    # -- market ----------------------------------------------------------
    def quote_json(self, bid: int, ask: int, last: int, ts_ns: int) -> dict:
        s = self.session
        inst = self.inst
        s["open"] = s["open"] or last
        s["high"] = max(s["high"] or last, last)
        s["low"] = min(s["low"] or last, last)
        change = last - s["open"]
        return {"symbol": inst.symbol_id, "symbolName": "", "lastPrice": float(inst.to_price(last)),
                "bestBid": float(inst.to_price(bid)), "bestAsk": float(inst.to_price(ask)),
                "change": float(inst.to_price(change)),
                "changePercent": round(change / s["open"] * 100, 4) if s["open"] else 0.0,
                "open": float(inst.to_price(s["open"])), "high": float(inst.to_price(s["high"])),
                "low": float(inst.to_price(s["low"])), "volume": s["volume"],
                "lastUpdated": iso(ts_ns), "timestamp": iso(ts_ns)}

    def depth_frame(self, bid: int | None, ask: int | None, ts_ns: int, size: int, force: bool = False) -> str | None:
        """GatewayDepth, minimal: one BestBid and one BestAsk entry (DomType 4 / 3) when the best
        prices change (or `force`, a snapshot for a new subscriber). The data has no book sizes:
        volume/currentVolume are synthetic (the size of the trade that set the quote)."""
        if bid is None or ask is None or (not force and (bid, ask) == self._depth_last):
            return None
        self._depth_last = (bid, ask)   # a snapshot too: every depth subscriber has seen this book now
        stamp, inst = iso(ts_ns), self.inst
        return inv("GatewayDepth", self.contract, [
            {"timestamp": stamp, "type": DOM_BEST_BID, "price": float(inst.to_price(bid)), "volume": size,
             "currentVolume": size},
            {"timestamp": stamp, "type": DOM_BEST_ASK, "price": float(inst.to_price(ask)), "volume": size,
             "currentVolume": size}])

    async def emit_tick(self, ts: int, t: Tick) -> None:
        self.session["volume"] += t.size
        events = self.engine.on_market(self.contract, t.bid, t.ask, t.price, t.price, ts)
        # publish the fills now: the awaits below may yield (a full client queue) to a REST order
        # whose newer position/account snapshot must not be overtaken by these older ones
        self.publish_events(events)
        trade = [{"symbolId": self.inst.symbol_id, "price": float(self.inst.to_price(t.price)),
                  "timestamp": iso(ts), "type": t.aggressor, "volume": t.size}]
        quote = self.quote_json(t.bid, t.ask, t.price, ts)
        tframe = inv("GatewayTrade", self.contract, trade)
        qframe = inv("GatewayQuote", self.contract, quote)
        dframe: str | None | bool = False          # built at the first depth subscriber, once a tick
        for c in list(self.conns):
            if c.hub == "market" and c.handshaken:
                if self.contract in c.subs["trades"]:
                    await c.push(tframe)
                if self.contract in c.subs["quotes"]:
                    await c.push(qframe)
                if self.contract in c.subs["depth"]:
                    if dframe is False:
                        dframe = self.depth_frame(t.bid, t.ask, ts, t.size)
                    if dframe:
                        await c.push(dframe)
        self.stats["ticks"] += 1

    async def run_market(self) -> None:
        """The tape. An error in one tick is logged and the tape goes on: a dead market task
        would freeze the simulated market with every connection still open."""
        self.replay.start(time.monotonic())
        n = 0
        while True:
            try:
                n = await self._market_step(n)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stats["market_errors"] += 1
                logger.exception(f"SIM: market tape error (tape goes on): {exc!r}")
                await asyncio.sleep(0.1)

    async def _market_step(self, n: int) -> int:
        """One step of the tape: wait, hold, or emit the next tick. Returns the tick count."""
        if self.paused or time.monotonic() < self.stall_until:
            held = time.monotonic()
            await asyncio.sleep(0.01)
            if self.paused:     # hold the tape: resume where it stopped, no burst of overdue ticks
                self.replay.delay(time.monotonic() - held)
            return n
        wait = self.replay.due_in(time.monotonic())
        if wait > 0:
            await asyncio.sleep(min(wait, 0.05))
            return n
        got = self.replay.next()
        if got is None:
            await asyncio.sleep(0.2)
            return n
        await self.emit_tick(*got)
        n += 1
        if n % 64 == 0:
            await asyncio.sleep(0)
        return n

    def set_price(self, bid: int, ask: int, last: int | None, trade: bool) -> None:
        ts = self.engine.now_ns
        last = last if last is not None else bid
        events = self.engine.on_market(self.contract, bid, ask, last, last if trade else None, ts)
        tframe = None
        if trade:   # a trade that fills orders is printed on the market hub too
            self.session["volume"] += 1
            tframe = inv("GatewayTrade", self.contract, [{
                "symbolId": self.inst.symbol_id, "price": float(self.inst.to_price(last)), "timestamp": iso(ts),
                "type": 0 if last >= ask else 1, "volume": 1}])
        quote = self.quote_json(bid, ask, last, ts)
        dframe: str | None | bool = False          # built at the first depth subscriber
        for c in list(self.conns):
            if c.hub != "market" or not c.handshaken:
                continue
            if tframe and self.contract in c.subs["trades"]:
                c.push_nowait(tframe)
            if self.contract in c.subs["quotes"]:
                c.push_nowait(inv("GatewayQuote", self.contract, quote))
            if self.contract in c.subs["depth"]:
                if dframe is False:
                    dframe = self.depth_frame(bid, ask, ts, 1)
                if dframe:
                    c.push_nowait(dframe)
        self.publish_events(events)

    # -- REST ------------------------------------------------------------
    def _rate_ok(self, key: str, path: str) -> bool:
        limit, window = ((self.cfg.bars_rate_limit_per_30s, 30.0) if path == "/api/History/retrieveBars"
                         else (self.cfg.rate_limit_per_min, 60.0))
        q = self.rate[f"{key}:{'bars' if window == 30.0 else 'all'}"]
        now = time.monotonic()
        while q and now - q[0] >= window:
            q.popleft()
        if len(q) >= limit:
            return False
        q.append(now)
        return True

    async def handle_api(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.stats["requests"] += 1
        fault = self.faults.take(self.faults.http_errors, path)
        if fault is not None:
            return web.Response(status=int(fault.get("status", 500)), text="injected fault")
        delay = self.faults.take(self.faults.delays, path)
        if delay is not None:
            await asyncio.sleep(delay.get("ms", 0) / 1000)
        handler = ROUTES.get(path)
        if handler is None:
            return web.Response(status=404)
        try:
            raw = await request.read()
            body = json.loads(raw) if raw.strip() else {}
            if not isinstance(body, dict):
                raise BadRequest("The request body must be a JSON object.")
        except (ValueError, UnicodeDecodeError):
            return problem("The request body is not valid JSON.")
        except BadRequest as exc:
            return problem(str(exc))
        user = None
        if path != "/api/Auth/loginKey":
            auth = request.headers.get("Authorization", "")
            user = self.tokens.check(auth[7:] if auth.startswith("Bearer ") else None)
            if user is None:
                return web.Response(status=401)
            if not self._rate_ok(user, path):
                self.stats["http_429"] += 1
                return web.Response(status=429, text="Too Many Requests")
        try:
            payload = handler(self, body, request)
            result = {"success": True, "errorCode": 0, "errorMessage": None, **payload}
        except BadRequest as exc:
            return problem(str(exc))
        except Refused as exc:
            result = {"success": False, "errorCode": exc.code, "errorMessage": exc.message}
            if exc.code == -400:
                return problem(exc.message)
            if getattr(exc, "extra", None):
                result.update(exc.extra)
        hold = self.faults.take(self.faults.holds, path)
        if hold is not None:
            await asyncio.sleep(hold.get("seconds", 10))
        return web.json_response(result)

    def acct(self, body: dict) -> int:
        aid = field_of(body, "accountId", int)
        if aid != self.engine.account.id:
            raise Refused(1, f"Account {aid} not found")
        return aid


def problem(detail: str) -> web.Response:
    return web.json_response({"type": "https://tools.ietf.org/html/rfc9110#section-15.5.1",
                              "title": "One or more validation errors occurred.", "status": 400,
                              "errors": {"request": [detail]}}, status=400)


# --------------------------------------------------------------------------
# REST endpoints
# --------------------------------------------------------------------------

def login_key(sim: Simulator, body: dict, _req) -> dict:
    user, key = body.get("userName"), body.get("apiKey")
    if not isinstance(user, str) or not isinstance(key, str) or not user or not key:
        raise Refused(-400, "userName and apiKey are required")
    if user != sim.cfg.username or not hmac.compare_digest(key, sim.api_key):
        raise Refused(3, "Invalid credentials")
    return {"token": sim.tokens.issue(user)}


def validate(sim: Simulator, body: dict, req) -> dict:
    auth = req.headers.get("Authorization", "")
    user = sim.tokens.check(auth[7:])
    return {"newToken": sim.tokens.issue(user)}


def logout(sim: Simulator, body: dict, req) -> dict:
    return {}


def account_search(sim: Simulator, body: dict, _req) -> dict:
    field_of(body, "onlyActiveAccounts", bool)
    return {"accounts": [sim.account_json()]}


def contract_search(sim: Simulator, body: dict, _req) -> dict:
    text = field_of(body, "searchText", str).upper()
    field_of(body, "live", bool)
    found = [c for c in sim.contracts()
             if not text or text in c["name"].upper() or text in c["id"].upper() or text in c["description"].upper()]
    return {"contracts": found[:20]}


def contract_by_id(sim: Simulator, body: dict, _req) -> dict:
    cid = field_of(body, "contractId", str)
    for c in sim.contracts():
        if c["id"] == cid:
            return {"contract": c}
    raise Refused(1, f"Contract {cid} not found")


def contract_available(sim: Simulator, body: dict, _req) -> dict:
    field_of(body, "live", bool)
    return {"contracts": sim.contracts()}


def retrieve_bars(sim: Simulator, body: dict, _req) -> dict:
    cid = field_of(body, "contractId", str)
    field_of(body, "live", bool)
    start, end = parse_iso_field(body, "startTime"), parse_iso_field(body, "endTime")
    unit, number, limit = field_of(body, "unit", int), field_of(body, "unitNumber", int), field_of(body, "limit", int)
    field_of(body, "includePartialBar", bool)
    if cid != sim.contract:
        raise Refused(1, f"Contract {cid} not found")
    seconds = {1: 1, 2: 60, 3: 3600, 4: 86400, 5: 7 * 86400}.get(unit)
    if seconds is None:
        raise Refused(2, f"Unit {unit} is invalid")
    if number <= 0:
        raise Refused(3, f"UnitNumber {number} is invalid")
    if limit <= 0 or limit > 20000:
        raise Refused(4, f"Limit {limit} is invalid")
    width = seconds * number * NS
    now = sim.engine.now_ns
    bars: dict[int, list] = {}
    r = sim.replay
    for i, t in enumerate(r.ticks):
        ts = t.ts_ns + r.offset
        if ts < start or ts >= min(end, now + 1):
            continue
        k = ts - ts % width
        b = bars.get(k)
        if b is None:
            bars[k] = [t.price, t.price, t.price, t.price, t.size]
        else:
            b[1] = max(b[1], t.price)
            b[2] = min(b[2], t.price)
            b[3] = t.price
            b[4] += t.size
    inst = sim.inst
    out = [{"t": iso(k), "o": float(inst.to_price(b[0])), "h": float(inst.to_price(b[1])),
            "l": float(inst.to_price(b[2])), "c": float(inst.to_price(b[3])), "v": b[4]}
           for k, b in sorted(bars.items(), reverse=True)]
    return {"bars": out[:limit]}


def parse_iso_field(body: dict, name: str) -> int:
    val = field_of(body, name, str)
    try:
        return parse_iso(val)
    except ValueError:
        raise BadRequest(f"The JSON value of {name} could not be converted.") from None


def order_place(sim: Simulator, body: dict, _req) -> dict:
    aid = sim.acct(body)
    cid = field_of(body, "contractId", str)
    type_ = field_of(body, "type", int)
    side = field_of(body, "side", int)
    size = field_of(body, "size", int)
    tag = field_of(body, "customTag", str, required=False)
    try:
        inst = instrument_for(cid)
        known = any(c["id"] == cid for c in sim.contracts())
    except InstrumentError:
        known = False
    if not known:
        raise Refused(8, f"Contract {cid} not found")
    limit = price_of(body, "limitPrice", inst)
    stop = price_of(body, "stopPrice", inst)
    # an absolute level for a TrailingStop (the engine turns it into ticks from the last trade);
    # sent with another type it is not even read (the doc: TrailingStop only; clients may send 0)
    trail = price_of(body, "trailPrice", inst) if type_ == TRAILING_STOP else None
    brackets: tuple[Bracket | None, Bracket | None] = (None, None)
    if body.get("stopLossBracket") or body.get("takeProfitBracket"):
        if not sim.cfg.auto_oco_brackets:
            raise Refused(2, "Brackets cannot be used with Position Brackets. Please disable Position Brackets "
                             "or switch to Auto OCO Brackets in your platform settings.")
        brackets = (bracket_of(body, "stopLossBracket", STOP), bracket_of(body, "takeProfitBracket", LIMIT))
        if side in (BUY, SELL):
            try:
                # refused before an order exists (no orderId), like the bracket-mode refusal above
                check_brackets(side, *brackets)
            except MatchError as exc:
                raise Refused(2, str(exc)) from None
        else:
            brackets = (None, None)     # refused below for the side; no children for a side-less entry
    oid = sim.engine.new_order_id()
    order = Order(oid, aid, cid, type_, side, size, limit, stop, tag)

    def refuse(code: int, msg: str) -> None:
        # a rejected order still gets a real orderId (topstepx_api.md §1.6); its bracket
        # children are created with it and cancelled (matching.MatchingEngine.reject)
        sim.publish_events(sim.engine.reject(order, *brackets))
        logger.info(f"SIM: REJECT order {oid}: {msg}")
        exc = Refused(code, msg)
        exc.extra = {"orderId": oid}
        raise exc

    if cid != sim.contract:
        raise Refused(9, f"Contract {cid} is not active in the simulator (it serves {sim.contract})")
    if side not in (BUY, SELL):
        refuse(2, f"Invalid side {side}")
    # StopLimit (3): the place page lists only 1,2,4,5,6,7 and its placeability is UNCERTAIN
    # (topstepx_api.md §2); the sim accepts it (triggers at stopPrice, then rests at limitPrice)
    if type_ not in (LIMIT, MARKET, STOP, STOP_LIMIT, TRAILING_STOP, JOIN_BID, JOIN_ASK):
        refuse(2, f"Order type {type_} is not supported")
    if size <= 0:
        refuse(2, f"Invalid size {size}")
    if type_ in (LIMIT, STOP_LIMIT) and limit is None:
        refuse(2, "Limit price is required for a limit order")
    if type_ in (STOP, STOP_LIMIT) and stop is None:
        refuse(2, "Stop price is required for a stop order")
    if tag is not None:
        # the children's tags (tag-SL / tag-TP) are account tags too
        kid_tags = [tag + sfx for sfx, br in zip(("-SL", "-TP"), brackets) if br is not None]
        if tag in sim.tags or any(t in sim.tags for t in kid_tags):
            raise Refused(2, f"Custom tag '{tag}' is already in use")
        for t in [tag, *kid_tags]:
            sim.tags[t] = oid
    if sim.faults.reject is not None and sim.faults.reject.get("count", 0) > 0:
        sim.faults.reject["count"] -= 1
        refuse(int(sim.faults.reject.get("code", 2)), sim.faults.reject.get("message") or "Order rejected (injected)")
    try:
        events = sim.engine.place(order, *brackets, trail_level=trail)
    except MatchError as exc:
        refuse(2, str(exc))
    kids = f" bracket children {list(order.children)}" if order.children else ""
    logger.info(f"SIM: ORDER {oid} {'BUY' if side == BUY else 'SELL'} {size} type {type_} tag {tag}{kids}")
    sim.publish_events(events)
    return {"orderId": oid}


def bracket_of(body: dict, name: str, default_type: int) -> Bracket | None:
    """`{ticks:int, type:int}`; the type defaults to what clients send (SL 4 Stop, TP 1 Limit)."""
    val = body.get(name)
    if val is None:
        return None
    if not isinstance(val, dict):
        raise BadRequest(f"The JSON value of {name} could not be converted.")
    ticks = field_of(val, "ticks", int)
    return Bracket(ticks, field_of(val, "type", int, required=False, default=default_type))


def order_cancel(sim: Simulator, body: dict, _req) -> dict:
    sim.acct(body)
    oid = field_of(body, "orderId", int)
    try:
        sim.publish_events(sim.engine.cancel(oid))
    except MatchError as exc:
        raise Refused(2, str(exc)) from None
    logger.info(f"SIM: CANCEL order {oid}")
    return {}


def order_modify(sim: Simulator, body: dict, _req) -> dict:
    sim.acct(body)
    oid = field_of(body, "orderId", int)
    size = field_of(body, "size", int, required=False)
    o = sim.engine.orders.get(oid)
    if o is None:
        raise Refused(2, f"Order {oid} not found")
    inst = instrument_for(o.contract)
    try:
        limit, stop = price_of(body, "limitPrice", inst), price_of(body, "stopPrice", inst)
        trail = price_of(body, "trailPrice", inst) if o.type == TRAILING_STOP else None   # else ignored, as on place
    except Refused as exc:      # on modify, code 2 is OrderNotFound; a bad price is 3 Rejected
        raise Refused(3, exc.message) from None
    if size is not None and size <= 0:
        raise Refused(3, f"Invalid size {size}")
    try:
        sim.publish_events(sim.engine.modify(oid, size, limit, stop, trail_level=trail))
    except Rejected as exc:
        raise Refused(3, str(exc)) from None
    except MatchError as exc:
        raise Refused(2, str(exc)) from None
    return {}


def order_search(sim: Simulator, body: dict, _req) -> dict:
    sim.acct(body)
    start = parse_iso_field(body, "startTimestamp")
    end = parse_iso_field(body, "endTimestamp") if body.get("endTimestamp") else None
    # suspended bracket children are not returned (spec; GL live: 0 of 321 snapshots)
    orders = [sim.order_json(o) for o in sim.engine.orders.values()
              if o.status != SUSPENDED and o.created_ns >= start and (end is None or o.created_ns <= end)]
    return {"orders": orders}


def order_search_open(sim: Simulator, body: dict, _req) -> dict:
    sim.acct(body)
    return {"orders": [sim.order_json(o) for o in sim.engine.working()]}


def position_search_open(sim: Simulator, body: dict, _req) -> dict:
    sim.acct(body)
    return {"positions": [sim.position_json(p) for p in sim.engine.positions.values() if p.qty != 0]}


def _close(sim: Simulator, body: dict, size_field: bool) -> dict:
    aid = sim.acct(body)
    cid = field_of(body, "contractId", str)
    size = field_of(body, "size", int) if size_field else None
    pos = sim.engine.positions.get(cid)
    codes = (5, 6) if size_field else (2, 5)   # (bad size / not found, order rejected): shifted per endpoint
    if pos is None or pos.qty == 0:
        raise Refused(2, f"Position for {cid} not found")
    if size is not None and (size <= 0 or size > abs(pos.qty)):
        raise Refused(codes[0], f"Invalid close size {size}")
    qty = abs(pos.qty) if size is None else size
    order = Order(sim.engine.new_order_id(), aid, cid, MARKET, SELL if pos.qty > 0 else BUY, qty)
    try:
        sim.publish_events(sim.engine.place(order))
    except MatchError as exc:
        raise Refused(codes[1], str(exc)) from None
    logger.info(f"SIM: CLOSE {cid} {qty} by market order {order.id}")
    return {}


def position_close(sim: Simulator, body: dict, _req) -> dict:
    return _close(sim, body, size_field=False)


def position_partial_close(sim: Simulator, body: dict, _req) -> dict:
    return _close(sim, body, size_field=True)


def trade_search(sim: Simulator, body: dict, _req) -> dict:
    sim.acct(body)
    start = parse_iso_field(body, "startTimestamp")
    end = parse_iso_field(body, "endTimestamp") if body.get("endTimestamp") else None
    return {"trades": [sim.trade_json(t) for t in sim.engine.trades
                       if t.ts_ns >= start and (end is None or t.ts_ns <= end)]}


ROUTES = {
    "/api/Auth/loginKey": login_key,
    "/api/Auth/validate": validate,
    "/api/Auth/logout": logout,
    "/api/Account/search": account_search,
    "/api/Contract/search": contract_search,
    "/api/Contract/searchById": contract_by_id,
    "/api/Contract/available": contract_available,
    "/api/History/retrieveBars": retrieve_bars,
    "/api/Order/place": order_place,
    "/api/Order/cancel": order_cancel,
    "/api/Order/modify": order_modify,
    "/api/Order/search": order_search,
    "/api/Order/searchOpen": order_search_open,
    "/api/Position/searchOpen": position_search_open,
    "/api/Position/closeContract": position_close,
    "/api/Position/partialCloseContract": position_partial_close,
    "/api/Trade/search": trade_search,
}


# --------------------------------------------------------------------------
# SignalR hubs
# --------------------------------------------------------------------------

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
    if error is None and action == "depth" and key == sim.contract:
        # a new depth subscriber gets the current best bid/ask at once, not at the next change
        mkt = sim.engine.markets.get(sim.contract)
        frame = mkt and sim.depth_frame(mkt.bid, mkt.ask, sim.engine.now_ns, 1, force=True)
        if frame:
            await conn.push(frame)
    return True


# --------------------------------------------------------------------------
# control endpoints (tests and operators of the simulator)
# --------------------------------------------------------------------------

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
    if name == "delay":
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


def build_app(sim: Simulator) -> web.Application:
    app = web.Application(client_max_size=1 << 20)
    app["sim"] = sim
    app.router.add_post("/api/{tail:.*}", sim.handle_api)
    app.router.add_get("/api/Status/ping", lambda r: web.Response(text="pong"))
    app.router.add_post("/hubs/{hub}/negotiate", negotiate)
    app.router.add_get("/hubs/{hub}", hub_ws)
    app.router.add_post("/sim/control/{name}", control)
    app.router.add_get("/sim/state", state)
    app.router.add_post("/sim/state", state)

    async def start_market(app: web.Application) -> None:
        app["market_task"] = asyncio.create_task(sim.run_market())

    async def stop_market(app: web.Application) -> None:
        app["market_task"].cancel()
        for c in list(sim.conns):
            await c.ws.close()

    app.on_startup.append(start_market)
    app.on_shutdown.append(stop_market)
    return app
