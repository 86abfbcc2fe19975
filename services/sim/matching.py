"""The simulator's matching engine: orders, fills, positions, P&L. No sockets, no asyncio.

Prices are integer ticks, money integer cents. Every call returns the events it
caused, in order, as (kind, object) pairs: ("order", Order), ("trade", SimTrade),
("position", SimPosition), ("account", SimAccount). The server turns them into
user-hub messages; tests read them directly.

Fill rules (documented in services/sim/README.md):
- market: at the opposite best quote (buy at ask, sell at bid) plus `slippage_ticks`
  against the trader; refused when there is no quote yet.
- limit: fills at its limit price when the market reaches it: `touch` (ask <= limit
  for a buy, or a trade at/below it) or `through` (strictly beyond); a limit that is
  marketable on arrival fills at once at the quote (price improvement).
- stop: triggers when a trade or the quote reaches the stop price (buy: ask or trade
  >= stop; sell: bid or trade <= stop) and then fills as a market order.
- Partial fills: `partial_next(k)` makes the next order fill only k contracts at
  first; the rest fills on the next market update (or never, with rest="never").
"""
from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from decimal import Decimal

from common.instruments import Instrument, instrument_for

LIMIT, MARKET, STOP_LIMIT, STOP, TRAILING_STOP, JOIN_BID, JOIN_ASK = 1, 2, 3, 4, 5, 6, 7
BUY, SELL = 0, 1
OPEN, FILLED, CANCELLED, EXPIRED, REJECTED, PENDING = 1, 2, 3, 4, 5, 6
WORKING = {OPEN, PENDING}


class MatchError(ValueError):
    """An order the engine cannot accept; text goes to errorMessage."""


@dataclass
class Order:
    id: int
    account_id: int
    contract: str
    type: int
    side: int
    size: int
    limit_ticks: int | None = None
    stop_ticks: int | None = None
    tag: str | None = None
    status: int = OPEN
    fill_volume: int = 0
    fill_cost_ticks: int = 0        # sum of price_ticks * qty, for the average fill price
    created_ns: int = 0
    updated_ns: int = 0
    triggered: bool = False
    partial_cap: int | None = None  # contracts allowed to fill before the cap lifts
    partial_never: bool = False

    @property
    def remaining(self) -> int:
        return self.size - self.fill_volume

    def filled_price(self, inst: Instrument) -> Decimal | None:
        if not self.fill_volume:
            return None
        return inst.tick_size * Decimal(self.fill_cost_ticks) / Decimal(self.fill_volume)


@dataclass
class SimTrade:
    id: int
    account_id: int
    contract: str
    order_id: int
    side: int
    size: int
    price_ticks: int
    fees_cents: int
    pnl_cents: int | None        # None on an opening fill
    ts_ns: int
    voided: bool = False


@dataclass
class SimPosition:
    id: int
    account_id: int
    contract: str
    qty: int = 0                  # signed: + long, - short
    cost_ticks: int = 0           # sum of entry price_ticks * |qty| of the open lots
    created_ns: int = 0

    def avg_price(self, inst: Instrument) -> Decimal:
        if not self.qty:
            return Decimal(0)
        return inst.tick_size * Decimal(self.cost_ticks) / Decimal(abs(self.qty))


@dataclass
class SimAccount:
    id: int
    name: str
    balance_cents: int
    can_trade: bool = True
    simulated: bool = True


@dataclass
class Market:
    bid: int | None = None
    ask: int | None = None
    last: int | None = None


@dataclass
class MatchingEngine:
    account: SimAccount
    slippage_ticks: int = 0
    limit_fill: str = "touch"       # touch | through
    orders: dict[int, Order] = field(default_factory=dict)
    trades: list[SimTrade] = field(default_factory=list)
    positions: dict[str, SimPosition] = field(default_factory=dict)
    markets: dict[str, Market] = field(default_factory=dict)
    now_ns: int = 0
    _order_ids: itertools.count = field(default_factory=lambda: itertools.count(3_300_000_001))
    _trade_ids: itertools.count = field(default_factory=lambda: itertools.count(1_100_000_001))
    _position_ids: itertools.count = field(default_factory=lambda: itertools.count(400_000_001))
    _partial_next: tuple[int, bool] | None = None

    # -- orders ----------------------------------------------------------
    def new_order_id(self) -> int:
        return next(self._order_ids)

    def partial_next(self, fill_now: int, never: bool = False) -> None:
        self._partial_next = (fill_now, never)

    def place(self, order: Order) -> list:
        """Accept a validated order; fills at once when it is marketable."""
        order.created_ns = order.updated_ns = self.now_ns
        if self._partial_next is not None:
            order.partial_cap, order.partial_never = self._partial_next
            self._partial_next = None
        mkt = self.markets.get(order.contract)
        if order.type == MARKET and (mkt is None or mkt.bid is None or mkt.ask is None):
            raise MatchError("No market price available for the contract")
        if order.type in (JOIN_BID, JOIN_ASK) and order.limit_ticks is None:
            # join the best bid / ask: a limit order at that price, resting (not a market order)
            px = None if mkt is None else (mkt.bid if order.type == JOIN_BID else mkt.ask)
            if px is None:
                raise MatchError("No market price available for the contract")
            order.limit_ticks = px
        self.orders[order.id] = order
        events: list = [("order", copy.copy(order))]
        events += self._try_fill(order, self.markets.get(order.contract) or Market(), trade_price=None)
        return events

    def reject(self, order: Order) -> list:
        order.status = REJECTED
        order.created_ns = order.updated_ns = self.now_ns
        self.orders[order.id] = order
        return [("order", copy.copy(order))]

    def cancel(self, order_id: int) -> list:
        o = self.orders.get(order_id)
        if o is None or o.status not in WORKING:
            raise MatchError(f"Order {order_id} not found or not working")
        o.status = CANCELLED
        o.updated_ns = self.now_ns
        return [("order", copy.copy(o))]

    def modify(self, order_id: int, size: int | None, limit_ticks: int | None, stop_ticks: int | None) -> list:
        o = self.orders.get(order_id)
        if o is None or o.status not in WORKING:
            raise MatchError(f"Order {order_id} not found or not working")
        if size is not None:
            if size <= o.fill_volume:
                raise MatchError(f"Size {size} is not above the filled volume {o.fill_volume}")
            o.size = size
        if limit_ticks is not None:
            o.limit_ticks = limit_ticks
        if stop_ticks is not None:
            o.stop_ticks = stop_ticks
        o.updated_ns = self.now_ns
        return [("order", copy.copy(o))] + self._try_fill(o, self.markets.get(o.contract) or Market(), None)

    def working(self, contract: str | None = None) -> list[Order]:
        return [o for o in self.orders.values() if o.status in WORKING and (contract is None or o.contract == contract)]

    # -- market ----------------------------------------------------------
    def on_market(self, contract: str, bid: int | None, ask: int | None, last: int | None,
                  trade_price: int | None, ts_ns: int) -> list:
        """New quote and/or trade: trigger stops, fill limits, finish partial fills."""
        if ts_ns > self.now_ns:
            self.now_ns = ts_ns
        mkt = self.markets.setdefault(contract, Market())
        if bid is not None:
            mkt.bid = bid
        if ask is not None:
            mkt.ask = ask
        if last is not None:
            mkt.last = last
        events: list = []
        for o in sorted(self.working(contract), key=lambda o: o.id):
            if o.partial_cap is not None and o.fill_volume > 0 and not o.partial_never:
                o.partial_cap = None       # the rest of a partial fill arrives now
            events += self._try_fill(o, mkt, trade_price)
        return events

    def _fill_price(self, o: Order, mkt: Market, trade_price: int | None) -> int | None:
        """The price this order fills at now, or None if it does not."""
        buy = o.side == BUY
        slip = self.slippage_ticks if buy else -self.slippage_ticks
        if o.type == MARKET or (o.type == STOP and o.triggered):
            px = mkt.ask if buy else mkt.bid
            return None if px is None else px + slip
        if o.type == STOP:
            stop = o.stop_ticks
            hit = ((mkt.ask is not None and mkt.ask >= stop) or (trade_price is not None and trade_price >= stop)) \
                if buy else ((mkt.bid is not None and mkt.bid <= stop) or (trade_price is not None and trade_price <= stop))
            if not hit:
                return None
            o.triggered = True
            px = mkt.ask if buy else mkt.bid
            return None if px is None else px + slip
        if o.type in (LIMIT, JOIN_BID, JOIN_ASK):
            lim = o.limit_ticks
            through = self.limit_fill == "through"
            if buy:
                if mkt.ask is not None and mkt.ask <= lim:
                    return mkt.ask if mkt.ask < lim else lim
                if trade_price is not None and (trade_price < lim or (not through and trade_price == lim)):
                    return lim
            else:
                if mkt.bid is not None and mkt.bid >= lim:
                    return mkt.bid if mkt.bid > lim else lim
                if trade_price is not None and (trade_price > lim or (not through and trade_price == lim)):
                    return lim
            return None
        return None

    def _try_fill(self, o: Order, mkt: Market, trade_price: int | None) -> list:
        if o.status not in WORKING or o.remaining <= 0:
            return []
        px = self._fill_price(o, mkt, trade_price)
        if px is None:
            return []
        qty = o.remaining
        if o.partial_cap is not None:
            qty = min(qty, max(0, o.partial_cap - o.fill_volume))
            if qty == 0:
                return []
        return self._execute(o, qty, px)

    def _execute(self, o: Order, qty: int, px: int) -> list:
        inst = instrument_for(o.contract)
        o.fill_volume += qty
        o.fill_cost_ticks += px * qty
        o.updated_ns = self.now_ns
        if o.fill_volume >= o.size:
            o.status = FILLED
        signed = qty if o.side == BUY else -qty
        pos = self.positions.get(o.contract)
        if pos is None or pos.qty == 0:
            pos = SimPosition(next(self._position_ids), self.account.id, o.contract, created_ns=self.now_ns)
            self.positions[o.contract] = pos
        pnl: int | None = None
        if pos.qty and (pos.qty > 0) != (signed > 0):
            closing = min(abs(signed), abs(pos.qty))
            direction = 1 if pos.qty > 0 else -1
            # realized on the closed lots at the average entry, in whole ticks: the cost taken
            # off the position is the cost the P&L is computed on, so a round trip's P&L sums
            # to exactly (proceeds - cost) * tick_value, to the cent, whatever the average
            removed = pos.cost_ticks * closing // abs(pos.qty)
            pnl = (px * closing - removed) * direction * inst.tick_value_cents
            pos.cost_ticks -= removed
            pos.qty += closing * (1 if signed > 0 else -1)
            rest = abs(signed) - closing
            if pos.qty == 0:
                pos.cost_ticks = 0
            if rest:
                pos.qty = rest if signed > 0 else -rest
                pos.cost_ticks = px * rest
                pos.created_ns = self.now_ns
        else:
            pos.qty += signed
            pos.cost_ticks += px * qty
        fees = inst.fee_per_side_cents * qty
        trade = SimTrade(next(self._trade_ids), self.account.id, o.contract, o.id, o.side, qty, px, fees, pnl,
                         self.now_ns)
        self.trades.append(trade)
        self.account.balance_cents += (pnl or 0) - fees
        return [("order", copy.copy(o)), ("trade", trade), ("position", copy.copy(pos)),
                ("account", copy.copy(self.account))]
