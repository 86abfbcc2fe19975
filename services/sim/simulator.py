"""The simulator's state: one account on a matching engine, the replayed market tape, the
JSON shapes of orders/trades/positions/quotes (topstepx_api.md), and the fan-out of market
and account events to hub connections."""
from __future__ import annotations

import asyncio
import collections
import itertools
import time

from loguru import logger

from common.instruments import INSTRUMENTS, Instrument, instrument_for, parse_contract_id
from services.sim.config import SimConfig
from services.sim.faults import Faults
from services.sim.hubs import HubConn
from services.sim.market import Replay, Tick
from services.sim.matching import BUY, MatchingEngine, Order, SimAccount, SimPosition, SimTrade
from services.sim.tokens import Tokens
from services.sim.wire import Refused, field_of, inv, iso

DOM_BEST_ASK, DOM_BEST_BID = 3, 4      # DomType (topstepx_api.md §2)


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

    def acct(self, body: dict) -> int:
        aid = field_of(body, "accountId", int)
        if aid != self.engine.account.id:
            raise Refused(1, f"Account {aid} not found")
        return aid
