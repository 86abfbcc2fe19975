"""A scripted broker for the gateway's unit tests: a fake TopstepX REST client and user hub
with an in-memory book, driven by a script of hooks (run just before a given call), failures
(the next N calls of a method raise) and hub events that the test delivers when it chooses.

It keeps the broker's own rules that matter to the gateway: a market order fills at once, a
filled or cancelled order cannot be cancelled, `closeContract` closes whatever the broker holds
(and refuses when flat), positions net signed fills. Nothing here is the code under test.
"""
from __future__ import annotations

import collections
import functools
import itertools
import threading
import time
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Callable

from common.topstepx.rest import BrokerError, OutcomeUnknown, RateLimited
from services.orders.broker_view import created_ns

ACCT = 7
MARKET, LIMIT, STOP = 2, 1, 4
BUY, SELL = 0, 1


class _Limiter:
    def __init__(self):
        self.n = 200

    def free(self) -> int:
        return self.n


def _api(fn):
    """A broker call: first the scripted delay (outside the lock: calls overlap, as over HTTP),
    then the call itself under the book's lock (the gateway calls from several threads)."""
    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        d = self.delays.get(fn.__name__, self.delay_s)
        if d:
            time.sleep(d)
        with self.lock:
            out = fn(self, *args, **kwargs)
        if self.lose_answers.get(fn.__name__, 0) > 0:
            self.lose_answers[fn.__name__] -= 1
            raise OutcomeUnknown(f"/api/{fn.__name__}: HTTP 504 (done, answer lost)")
        if fn.__name__ in self.crash_after:
            self.crash_after.discard(fn.__name__)
            raise Crash(fn.__name__)
        return out
    return wrapper


class Crash(BaseException):
    """The gateway process dies here (kill -9): raised after the broker has done the call."""


class ScriptedBroker:
    def __init__(self, contract: str, price: str = "6050.00"):
        self.contract = contract
        self.px = Decimal(price)
        self.book: dict[int, dict] = {}
        self.pos: dict[str, int] = {}              # contract -> signed quantity
        self.avg: dict[str, Decimal] = {}
        self.fills: list[dict] = []
        self.calls: list[tuple[str, tuple]] = []
        self.hooks: dict[str, list[Callable[[], None]]] = collections.defaultdict(list)
        self.failures: dict[str, list[Exception]] = collections.defaultdict(list)
        self.events: list[tuple[str, dict]] = []   # hub events not yet delivered
        self.ids = itertools.count(1001)
        self.tids = itertools.count(5001)
        self.limiter = _Limiter()
        self.market_fills = True
        self.violations: list[str] = []            # the invariants the gateway broke, as they happened
        self.lock = threading.RLock()
        self.delay_s = 0.0                         # every call answers this late
        self.delays: dict[str, float] = {}         # per method
        self.crash_after: set[str] = set()         # the caller dies once this call has been done
        self.lose_answers: dict[str, int] = {}     # method -> n: done at the broker, the answer lost (a 5xx)
        self.auto_oco = False                      # the account's bracket mode: Auto OCO (True) or Position
        self.children: dict[int, tuple[int, int, int, int]] = {}   # entry -> (sl id, tp id, sl ticks, tp ticks)
        # the broker's clock for creationTimestamp: a second per record, so a search's window
        # (startTimestamp) is honoured as the broker does and a window that misses a record shows
        self.clock_s = 1_795_964_400.0             # 2026-11-30T14:00:00Z
        self.searches: list[tuple[str, float]] = []   # (orders|trades, the window's start, epoch s)

    def stamp(self) -> str:
        self.clock_s += 1.0
        return datetime.fromtimestamp(self.clock_s, tz=timezone.utc).isoformat()

    # -- script ----------------------------------------------------------
    def before(self, method: str, fn: Callable[[], None]) -> None:
        """Run fn once, just before the next call of `method` is handled."""
        self.hooks[method].append(fn)

    def fail(self, method: str, exc: Exception, count: int = 1) -> None:
        self.failures[method].extend([exc] * count)

    def fail_429(self, method: str, count: int = 1) -> None:
        self.fail(method, RateLimited(f"/api/{method}: HTTP 429 rate limited"), count)

    def fail_5xx(self, method: str, count: int = 1) -> None:
        self.fail(method, OutcomeUnknown(f"/api/{method}: HTTP 503"), count)

    def _enter(self, method: str, *args) -> None:
        self.calls.append((method, args))
        hooks, self.hooks[method] = self.hooks[method], []
        for fn in hooks:
            fn()
        if self.failures[method]:
            raise self.failures[method].pop(0)

    def count(self, method: str) -> int:
        return sum(1 for m, _ in self.calls if m == method)

    # -- book ------------------------------------------------------------
    def signed(self, contract: str | None = None) -> int:
        return self.pos.get(contract or self.contract, 0)

    def working(self, contract: str | None = None) -> list[dict]:
        return [o for o in self.book.values() if o["status"] in (1, 6)
                and (contract is None or o["contractId"] == contract)]

    def by_tag(self, prefix: str) -> list[dict]:
        return [o for o in self.book.values() if (o.get("customTag") or "").startswith(prefix)]

    def _emit(self, target: str, data: dict) -> None:
        self.events.append((target, dict(data)))

    def deliver(self, gw) -> int:
        """Hand the pending hub events to the gateway (as its loop would, one at a time)."""
        n = 0
        while self.events:
            with self.lock:
                target, data = self.events.pop(0)
            gw.on_hub(target, [{"action": 1, "data": data}])
            n += 1
        return n

    def drop_events(self) -> None:
        self.events.clear()

    def fill(self, oid: int, size: int | None = None, price: str | Decimal | None = None) -> None:
        """The broker fills (part of) an order: trade, order and position events."""
        with self.lock:
            self._fill(oid, size, price)

    def _fill(self, oid: int, size: int | None = None, price: str | Decimal | None = None) -> None:
        o = self.book[oid]
        assert o["status"] in (1, 6), f"order {oid} is not working"
        qty = size or (o["size"] - o["fillVolume"])
        px = Decimal(str(price)) if price is not None else \
            Decimal(str(o.get("stopPrice") or o.get("limitPrice") or self.px))
        c = o["contractId"]
        sgn = 1 if o["side"] == BUY else -1
        before = self.pos.get(c, 0)
        after = before + sgn * qty
        pnl = None
        if before and (before > 0) != (sgn > 0):
            closed = min(abs(before), qty)
            pnl = (px - self.avg[c]) * (1 if before > 0 else -1) * closed * 5
        if after == 0:
            self.pos.pop(c, None)
            self.avg.pop(c, None)
        else:
            if before == 0 or (before > 0) != (after > 0):
                self.avg[c] = px
            elif (before > 0) == (sgn > 0):
                self.avg[c] = (self.avg[c] * abs(before) + px * qty) / abs(after)
            self.pos[c] = after
        leg = ((o.get("customTag") or "").split(":") + ["", ""])[1]
        if leg in ("exit", "flatten", "eod") and (abs(after) > abs(before) or (before > 0) != (after > 0) and after):
            self.violations.append(f"{o['customTag']} took the position from {before:+d} to {after:+d}")
        o["fillVolume"] += qty
        o["filledPrice"] = float(px)
        if o["fillVolume"] >= o["size"]:
            o["status"] = 2
        kids = self.children.get(oid)
        if kids is not None:                       # Auto-OCO: the children go live at the fill
            sl, tp, slt, tpt = kids
            for cid, ticks, key in ((sl, slt, "stopPrice"), (tp, tpt, "limitPrice")):
                k = self.book[cid]
                if k["status"] in (8, 1):
                    k.update({"status": 1, "size": o["fillVolume"], key: float(px + Decimal(ticks) * Decimal("0.25"))})
                    self._emit("GatewayUserOrder", k)
        for entry, (sl, tp, _, _) in self.children.items():
            if oid in (sl, tp):                    # true OCO: the sibling is cancelled
                other = self.book[tp if oid == sl else sl]
                if other["status"] in (1, 6, 8):
                    other["status"] = 3
                    self._emit("GatewayUserOrder", other)
        t = {"id": next(self.tids), "accountId": ACCT, "contractId": c, "creationTimestamp": self.stamp(),
             "price": float(px), "profitAndLoss": None if pnl is None else float(pnl), "fees": 0.37,
             "side": o["side"], "size": qty, "voided": False, "orderId": oid}
        self.fills.append(t)
        self._emit("GatewayUserTrade", t)
        self._emit("GatewayUserOrder", o)
        self._emit("GatewayUserPosition", self._pos_json(c))

    def _pos_json(self, c: str) -> dict:
        q = self.pos.get(c, 0)
        return {"id": 1, "accountId": ACCT, "contractId": c, "type": 1 if q > 0 else 2 if q < 0 else 0,
                "size": abs(q), "averagePrice": float(self.avg.get(c, 0))}

    def _new_order(self, c: str, type_: int, side: int, size: int, tag: str | None,
                   limit: Any = None, stop: Any = None) -> dict:
        oid = next(self.ids)
        o = {"id": oid, "accountId": ACCT, "contractId": c, "type": type_, "side": side, "size": size,
             "status": 1, "customTag": tag, "fillVolume": 0, "limitPrice": limit, "stopPrice": stop,
             "filledPrice": None, "creationTimestamp": self.stamp()}
        self.book[oid] = o
        self._emit("GatewayUserOrder", o)
        if type_ == MARKET and self.market_fills:
            self.fill(oid, price=self.px)
        return o

    # -- the TopstepXClient surface the gateway uses -----------------------
    @_api
    def place_order(self, account_id, contract_id, type_, side, size, *, limit_price=None, stop_price=None,
                    custom_tag=None, stop_loss_ticks=None, take_profit_ticks=None) -> int:
        self._enter("place_order", contract_id, type_, side, size, custom_tag)
        if custom_tag and any(o.get("customTag") == custom_tag for o in self.book.values()):
            raise BrokerError("/api/Order/place", 2, "customTag already used", {})
        if stop_loss_ticks is not None and not self.auto_oco:
            raise BrokerError("/api/Order/place", 2, "Brackets cannot be used with Position Brackets. Please "
                              "disable Position Brackets or switch to Auto OCO Brackets in your platform settings.", {})
        if stop_loss_ticks is None:
            return self._new_order(contract_id, type_, side, size, custom_tag,
                                   None if limit_price is None else float(limit_price),
                                   None if stop_price is None else float(stop_price))["id"]
        fills, self.market_fills = self.market_fills, False
        entry = self._new_order(contract_id, type_, side, size, custom_tag)
        self.market_fills = fills
        kids = []
        for sfx, t in (("-SL", STOP), ("-TP", LIMIT)):
            k = self._new_order(contract_id, t, 1 - side, size, custom_tag + sfx)
            k["status"] = 8
            self._emit("GatewayUserOrder", k)
            kids.append(k["id"])
        self.children[entry["id"]] = (kids[0], kids[1], stop_loss_ticks, take_profit_ticks)
        if type_ == MARKET and self.market_fills:
            self.fill(entry["id"], price=self.px)
        return entry["id"]

    @_api
    def cancel_order(self, account_id, order_id) -> None:
        self._enter("cancel_order", order_id)
        o = self.book.get(order_id)
        if o is None or o["status"] not in (1, 6):
            raise BrokerError("/api/Order/cancel", 1, f"Order {order_id} not found or not open", {})
        o["status"] = 3
        c = o["contractId"]
        if o["type"] == STOP and self.pos.get(c) and not [w for w in self.working(c) if w["type"] == STOP]:
            self.violations.append(f"stop {order_id} cancelled while {self.pos[c]:+d} open")
        self._emit("GatewayUserOrder", o)

    @_api
    def modify_order(self, account_id, order_id, *, size=None, limit_price=None, stop_price=None) -> None:
        self._enter("modify_order", order_id, size)
        o = self.book.get(order_id)
        if o is None or o["status"] not in (1, 6):
            raise BrokerError("/api/Order/modify", 1, "not open", {})
        if size is not None:
            o["size"] = size
        self._emit("GatewayUserOrder", o)

    @_api
    def close_contract(self, account_id, contract_id) -> None:
        self._enter("close_contract", contract_id)
        q = self.pos.get(contract_id, 0)
        if not q:
            raise BrokerError("/api/Position/closeContract", 2, f"Position for {contract_id} not found", {})
        self._new_order(contract_id, MARKET, SELL if q > 0 else BUY, abs(q), None)

    @_api
    def partial_close_contract(self, account_id, contract_id, size) -> None:
        self._enter("partial_close_contract", contract_id, size)
        q = self.pos.get(contract_id, 0)
        if not q:
            raise BrokerError("/api/Position/partialCloseContract", 6, f"Position for {contract_id} not found", {})
        if size <= 0 or size > abs(q):
            raise BrokerError("/api/Position/partialCloseContract", 5, f"Invalid close size {size}", {})
        self._new_order(contract_id, MARKET, SELL if q > 0 else BUY, size, None)

    @_api
    def open_positions(self, account_id) -> list[dict]:
        self._enter("open_positions")
        return [self._pos_json(c) for c, q in self.pos.items() if q]

    @_api
    def open_orders(self, account_id) -> list[dict]:
        self._enter("open_orders")
        return [dict(o) for o in self.working()]

    def orders_search(self) -> list[dict]:
        return [dict(o) for o in self.book.values()]

    @_api
    def orders(self, account_id, start, end=None) -> list[dict]:
        self._enter("orders")
        return self._since("orders", start, self.orders_search())

    def trades_search(self) -> list[dict]:
        return [dict(t) for t in self.fills]

    @_api
    def trades(self, account_id, start, end=None) -> list[dict]:
        self._enter("trades")
        return self._since("trades", start, self.trades_search())

    def _since(self, name: str, start, records: list[dict]) -> list[dict]:
        s = start.timestamp() if isinstance(start, datetime) else float(start)
        self.searches.append((name, s))
        return [r for r in records if created_ns(r) / 1e9 >= s]
