"""The simulator's state: one account on a matching engine, the replayed market tape, the
JSON shapes of orders/trades/positions/quotes (topstepx_api.md), and the fan-out of market
and account events to hub connections."""
from __future__ import annotations

import asyncio
import collections
import itertools
import time
from datetime import date, timedelta

from loguru import logger

from common.clock import to_ny
from common.contracts import expiry_date, is_expired, quarterly_months
from common.instruments import MONTH_CODES, Instrument, InstrumentError, instrument_for, parse_contract_id
from services.sim.book import Book
from services.sim.config import SimConfig
from services.sim.faults import Faults
from services.sim.hubs import HubConn
from services.sim.market import Replay, Tick
from services.sim.matching import BUY, MatchingEngine, Order, SimAccount, SimPosition, SimTrade
from services.sim.tokens import Tokens
from services.sim.wire import Refused, field_of, inv, iso

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
        self.mute_next: dict[str, int] = {}    # fault: the next N connections per hub go silent
        self.tags: dict[str, int] = {}
        self.rate: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self.paused = False
        self.stall_until = 0.0
        self.session = {"open": None, "high": None, "low": None, "volume": 0}
        self.stats = collections.Counter()
        self.book = Book(cfg.depth_levels)
        # the months listed and traded: the served one (front month at the market's start) and the next
        self.traded = [contract, *[c for c in quarterly_months(self.inst.symbol, expiry_date(contract) -
                                                               timedelta(days=1), 2) if c != contract]][:2]

    # -- contracts -------------------------------------------------------
    def market_day(self) -> date:
        """Today on the simulator's market clock (never the wall clock)."""
        return to_ny(self.engine.now_ns).date()

    def contract_json(self, cid: str) -> dict:
        inst, code, year = parse_contract_id(cid)
        month = date(year, MONTH_CODES.index(code) + 1, 1).strftime("%B %Y")
        return {"id": cid, "name": f"{inst.symbol}{code}{year % 10}",
                "description": f"{inst.description}: {month}", "tickSize": float(inst.tick_size),
                "tickValue": inst.tick_value_cents / 100,
                "activeContract": not is_expired(cid, self.market_day()), "symbolId": inst.symbol_id}

    def contracts(self, live: bool = False) -> list[dict]:
        """What can be traded today: the front month and the next of the served symbol.
        `live: true` lists what a live (funded) account trades: nothing for this practice
        account unless sim.live_contracts."""
        if live and not self.cfg.live_contracts:
            return []
        return [self.contract_json(c) for c in self.traded if not is_expired(c, self.market_day())]

    def contract_by_id(self, cid: str) -> dict | None:
        """Any listed month, or an expired one of a known root (activeContract false, as live)."""
        try:
            parse_contract_id(cid)
        except InstrumentError:
            return None
        if cid in self.traded or is_expired(cid, self.market_day()):
            return self.contract_json(cid)
        return None

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
                "contractDisplayName": self.contract_json(p.contract)["name"]}

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

    def depth_changes(self, bid: int | None, ask: int | None, trade_price: int | None, trade_size: int
                      ) -> list[tuple[int, int, int]]:
        """Move the synthesized book (book.py) to this quote and trade; its changes."""
        if bid is None or ask is None or bid >= ask:
            return []
        return self.book.update(bid, ask, trade_price, trade_size)

    def depth_frame(self, contract: str, changes: list[tuple[int, int, int]], ts_ns: int) -> str | None:
        """GatewayDepth `(contractId, [{timestamp, type, price, volume, currentVolume}])`: one
        entry per changed level (volume 0 = removed), the best bid/ask when they move."""
        if not changes:
            return None
        stamp, inst = iso(ts_ns), self.inst
        return inv("GatewayDepth", contract, [
            {"timestamp": stamp, "type": kind, "price": float(inst.to_price(price)), "volume": vol,
             "currentVolume": vol} for kind, price, vol in changes])

    def depth_snapshot(self, contract: str) -> str | None:
        """What a new depth subscriber gets at once: a Reset, then the whole book."""
        mkt = self.engine.markets.get(self.contract)
        if mkt is None:
            return None
        self.depth_changes(mkt.bid, mkt.ask, None, 0)     # the book may be idle without subscribers
        return self.depth_frame(contract, self.book.snapshot(), self.engine.now_ns)

    def _depth_once(self, bid: int, ask: int, trade_price: int | None, trade_size: int, ts: int):
        """A depth-frame builder that moves the book once, however many contracts ask for it
        (every listed month shows the same book)."""
        memo: list = []

        def build(cid: str) -> str | None:
            if not memo:
                memo.append(self.depth_changes(bid, ask, trade_price, trade_size))
            return self.depth_frame(cid, memo[0], ts)
        return build

    def _fan_out(self, conn: HubConn, frames: dict, build: dict) -> list[str]:
        """The market frames one connection subscribed to, each built once per tick."""
        out = []
        for cid in self.traded:
            for topic in ("trades", "quotes", "depth"):
                if cid in conn.subs[topic]:
                    key = (cid, topic)
                    if key not in frames:
                        frames[key] = build[topic](cid)
                    if frames[key]:
                        out.append(frames[key])
        return out

    async def emit_tick(self, ts: int, t: Tick) -> None:
        self.session["volume"] += t.size
        events = []
        for cid in self.traded:     # every listed month trades on the one tape (no calendar spread)
            events += self.engine.on_market(cid, t.bid, t.ask, t.price, t.price, ts)
        # publish the fills now: the awaits below may yield (a full client queue) to a REST order
        # whose newer position/account snapshot must not be overtaken by these older ones
        self.publish_events(events)
        trade = [{"symbolId": self.inst.symbol_id, "price": float(self.inst.to_price(t.price)),
                  "timestamp": iso(ts), "type": t.aggressor, "volume": t.size}]
        quote = self.quote_json(t.bid, t.ask, t.price, ts)
        build = {"trades": lambda cid: inv("GatewayTrade", cid, trade),
                 "quotes": lambda cid: inv("GatewayQuote", cid, quote),
                 "depth": self._depth_once(t.bid, t.ask, t.price, t.size, ts)}
        frames: dict = {}
        for c in list(self.conns):
            if c.hub == "market" and c.handshaken:
                for frame in self._fan_out(c, frames, build):
                    await c.push(frame)
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
        events = []
        for cid in self.traded:
            events += self.engine.on_market(cid, bid, ask, last, last if trade else None, ts)
        tdata = None
        if trade:   # a trade that fills orders is printed on the market hub too
            self.session["volume"] += 1
            tdata = [{"symbolId": self.inst.symbol_id, "price": float(self.inst.to_price(last)), "timestamp": iso(ts),
                      "type": 0 if last >= ask else 1, "volume": 1}]
        quote = self.quote_json(bid, ask, last, ts)
        build = {"trades": lambda cid: tdata and inv("GatewayTrade", cid, tdata),
                 "quotes": lambda cid: inv("GatewayQuote", cid, quote),
                 "depth": self._depth_once(bid, ask, last if trade else None, 1, ts)}
        frames: dict = {}
        for c in list(self.conns):
            if c.hub == "market" and c.handshaken:
                for frame in self._fan_out(c, frames, build):
                    c.push_nowait(frame)
        self.publish_events(events)

    def acct(self, body: dict) -> int:
        aid = field_of(body, "accountId", int)
        if aid != self.engine.account.id:
            raise Refused(1, f"Account {aid} not found")
        return aid
