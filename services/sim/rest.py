"""The REST half of the simulator: every endpoint POST + JSON, the
success/errorCode/errorMessage envelope, business failures as HTTP 200, 400 for unreadable
bodies (as ASP.NET model binding does), 401 without a valid bearer JWT, 429 past the rate
limit (topstepx_api.md §1)."""
from __future__ import annotations

import asyncio
import hmac
import json
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from aiohttp import web
from loguru import logger

from common.contracts import expiry_date, is_expired
from common.instruments import InstrumentError, instrument_for
from services.sim.market import NS
from services.sim.matching import (
    BUY, JOIN_ASK, JOIN_BID, LIMIT, MARKET, SELL, STOP, STOP_LIMIT, SUSPENDED, TRAILING_STOP, Bracket,
    MatchError, Order, Rejected, check_brackets,
)
from services.sim.wire import BadRequest, Refused, field_of, iso, parse_iso_field, price_of, problem

if TYPE_CHECKING:
    from services.sim.simulator import Simulator


def rate_ok(sim: Simulator, key: str, path: str) -> bool:
    limit, window = ((sim.cfg.bars_rate_limit_per_30s, 30.0) if path == "/api/History/retrieveBars"
                     else (sim.cfg.rate_limit_per_min, 60.0))
    q = sim.rate[f"{key}:{'bars' if window == 30.0 else 'all'}"]
    now = time.monotonic()
    while q and now - q[0] >= window:
        q.popleft()
    if len(q) >= limit:
        return False
    q.append(now)
    return True


async def handle_api(request: web.Request) -> web.StreamResponse:
    sim: Simulator = request.app["sim"]
    path = request.path
    sim.stats["requests"] += 1
    fault = sim.faults.take(sim.faults.http_errors, path)
    if fault is not None:
        return web.Response(status=int(fault.get("status", 500)), text="injected fault")
    delay = sim.faults.take(sim.faults.delays, path)
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
        user = sim.tokens.check(auth[7:] if auth.startswith("Bearer ") else None)
        if user is None:
            return web.Response(status=401)
        if not rate_ok(sim, user, path):
            sim.stats["http_429"] += 1
            return web.Response(status=429, text="Too Many Requests")
    try:
        payload = handler(sim, body, request)
        result = {"success": True, "errorCode": 0, "errorMessage": None, **payload}
    except BadRequest as exc:
        return problem(str(exc))
    except Refused as exc:
        # a failure keeps the answer's fields, null (a failed login answers `token: null`)
        result = {"success": False, "errorCode": exc.code, "errorMessage": exc.message, **NULL_FIELDS.get(path, {})}
        if exc.code == -400:
            return problem(exc.message)
        if getattr(exc, "extra", None):
            result.update(exc.extra)
    hold = sim.faults.take(sim.faults.holds, path)
    if hold is not None:
        await asyncio.sleep(hold.get("seconds", 10))
    return web.json_response(result)


NULL_FIELDS = {
    "/api/Auth/loginKey": {"token": None}, "/api/Auth/validate": {"newToken": None},
    "/api/Account/search": {"accounts": None}, "/api/Contract/search": {"contracts": None},
    "/api/Contract/searchById": {"contract": None}, "/api/Contract/available": {"contracts": None},
    "/api/History/retrieveBars": {"bars": None}, "/api/Order/place": {"orderId": None},
    "/api/Order/search": {"orders": None}, "/api/Order/searchOpen": {"orders": None},
    "/api/Position/searchOpen": {"positions": None}, "/api/Trade/search": {"trades": None},
}


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
    live = field_of(body, "live", bool)
    found = [c for c in sim.contracts(live)
             if not text or text in c["name"].upper() or text in c["id"].upper() or text in c["description"].upper()]
    return {"contracts": found[:20]}


def contract_by_id(sim: Simulator, body: dict, _req) -> dict:
    cid = field_of(body, "contractId", str)
    found = sim.contract_by_id(cid)
    if found is None:
        raise Refused(1, f"Contract {cid} not found")
    return {"contract": found}


def contract_available(sim: Simulator, body: dict, _req) -> dict:
    return {"contracts": sim.contracts(field_of(body, "live", bool))}


BAR_SECONDS = {1: 1, 2: 60, 3: 3600, 4: 86400, 5: 7 * 86400}     # 6 Month and 7 Tick are not fixed widths
UNIT_MONTH, UNIT_TICK = 6, 7


def bar_key(ts: int, unit: int, number: int) -> int:
    """The start (ns UTC) of the bar holding `ts`: fixed widths from the epoch (weeks from a
    Thursday, as the epoch's), months by the calendar in UTC."""
    if unit == UNIT_MONTH:
        d = datetime.fromtimestamp(ts // NS, tz=timezone.utc)
        m = (d.year * 12 + d.month - 1) // number * number
        return int(datetime(m // 12, m % 12 + 1, 1, tzinfo=timezone.utc).timestamp()) * NS
    width = BAR_SECONDS[unit] * number * NS
    return ts - ts % width


def bar_end(key: int, unit: int, number: int) -> int:
    if unit == UNIT_MONTH:
        d = datetime.fromtimestamp(key // NS, tz=timezone.utc)
        m = d.year * 12 + d.month - 1 + number
        return int(datetime(m // 12, m % 12 + 1, 1, tzinfo=timezone.utc).timestamp()) * NS
    return key + BAR_SECONDS[unit] * number * NS


def retrieve_bars(sim: Simulator, body: dict, _req) -> dict:
    cid = field_of(body, "contractId", str)
    field_of(body, "live", bool)
    start, end = parse_iso_field(body, "startTime"), parse_iso_field(body, "endTime")
    unit, number, limit = field_of(body, "unit", int), field_of(body, "unitNumber", int), field_of(body, "limit", int)
    partial = field_of(body, "includePartialBar", bool)
    if cid not in sim.traded:
        raise Refused(1, f"Contract {cid} not found")
    if unit not in BAR_SECONDS and unit not in (UNIT_MONTH, UNIT_TICK):
        raise Refused(2, f"Unit {unit} is invalid")
    if number <= 0:
        raise Refused(3, f"UnitNumber {number} is invalid")
    if limit <= 0 or limit > 20000:
        raise Refused(4, f"Limit {limit} is invalid")
    now = sim.engine.now_ns          # the market clock: nothing after it has traded yet
    bars: dict[int, list] = {}       # key -> [o, h, l, c, v, ticks in it]
    r = sim.replay
    n_in = 0
    for t in r.ticks:
        ts = t.ts_ns + r.offset
        if ts < start or ts >= min(end, now + 1):
            continue
        k = (n_in // number) if unit == UNIT_TICK else bar_key(ts, unit, number)
        n_in += 1
        b = bars.get(k)
        if b is None:
            bars[k] = [t.price, t.price, t.price, t.price, t.size, 1, ts]
        else:
            b[1] = max(b[1], t.price)
            b[2] = min(b[2], t.price)
            b[3] = t.price
            b[4] += t.size
            b[5] += 1
    if not partial and bars:
        # the bar still forming at the market clock (or a tick bar short of its count) is left out
        last = max(bars)
        if (bars[last][5] < number) if unit == UNIT_TICK else bar_end(last, unit, number) > now:
            del bars[last]
    inst = sim.inst
    out = [{"t": iso(b[6] if unit == UNIT_TICK else k), "o": float(inst.to_price(b[0])),
            "h": float(inst.to_price(b[1])), "l": float(inst.to_price(b[2])), "c": float(inst.to_price(b[3])),
            "v": b[4]}
           for k, b in sorted(bars.items(), reverse=True)]
    return {"bars": out[:limit]}


def order_place(sim: Simulator, body: dict, _req) -> dict:
    aid = sim.acct(body)
    cid = field_of(body, "contractId", str)
    type_ = field_of(body, "type", int)
    side = field_of(body, "side", int)
    size = field_of(body, "size", int)
    tag = field_of(body, "customTag", str, required=False)
    try:
        inst = instrument_for(cid)
    except InstrumentError:
        raise Refused(8, f"Contract {cid} not found") from None
    if is_expired(cid, sim.market_day()):
        raise Refused(9, f"Contract {cid} is not active (expired {expiry_date(cid)})")
    if cid not in sim.traded:       # what is not listed cannot be traded (Contract/available)
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

    if side not in (BUY, SELL):
        refuse(2, f"Invalid side {side}")
    # StopLimit (3): the place page lists only 1,2,4,5,6,7 and its placeability is UNCERTAIN
    # (topstepx_api.md §2); the sim accepts it (triggers at stopPrice, then rests at limitPrice)
    if type_ not in (LIMIT, MARKET, STOP, STOP_LIMIT, TRAILING_STOP, JOIN_BID, JOIN_ASK):
        refuse(2, f"Order type {type_} is not supported")
    if size <= 0:
        refuse(2, f"Invalid size {size}")
    if size > sim.cfg.max_order_size:
        refuse(2, f"Order size {size} exceeds the maximum order size of {sim.cfg.max_order_size}")
    exposure = position_exposure(sim, cid, side) + size
    if exposure > sim.cfg.max_position_size:
        refuse(2, f"Maximum position size exceeded: {exposure} contracts {'long' if side == BUY else 'short'} "
                  f"with working orders; the account's limit is {sim.cfg.max_position_size}")
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


def position_exposure(sim: Simulator, cid: str, side: int) -> int:
    """Contracts on `side` if every working order on that side filled: the account limit is
    checked against this worst case, as a risk desk does (opposite orders do not offset it)."""
    sign = 1 if side == BUY else -1
    pos = sim.engine.positions.get(cid)
    qty = sign * pos.qty if pos is not None else 0
    pending = sum(o.size - o.fill_volume for o in sim.engine.working(cid) if o.side == side and o.parent_id is None)
    return max(qty, 0) + pending


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
