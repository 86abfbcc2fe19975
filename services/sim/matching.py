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
- stop-limit: triggers like a stop, then rests (and fills) as a limit at its limit price.
- trailing stop: the placed trail level becomes a whole-tick distance from the last trade;
  the stop follows the best last trade since placement (sell: highest - distance, buy:
  lowest + distance) and triggers like a stop.
- native brackets (Auto OCO mode): the entry and its suspended children are created at
  once; the entry's first fill activates them at fill price + signed ticks; one leg's fill
  cancels the other (true OCO). See `place` and `_activate_children`.
- Partial fills: `partial_next(k)` makes the next order fill only k contracts at
  first; the rest fills on the next market update (or never, with rest="never").
"""
from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from decimal import Decimal

from common.broker_codes import (  # noqa: F401  (re-exported to the server and tests)
    BUY, CANCELLED, EXPIRED, FILLED, JOIN_ASK, JOIN_BID, LIMIT, MARKET, OPEN, PENDING, REJECTED, SELL, STOP,
    STOP_LIMIT, SUSPENDED, TRAILING_STOP, WORKING,
)
from common.instruments import Instrument, instrument_for

# SUSPENDED: a bracket child waiting for its entry to fill (seen live); not WORKING: searchOpen hides it
MAX_TRAIL_TICKS = 1000          # topstepx_api.md §1.6: a longer trail is refused


class MatchError(ValueError):
    """An order the engine cannot accept; text goes to errorMessage."""


class Rejected(MatchError):
    """A request on an existing order refused on its merits (modify: errorCode 3, not 2 NotFound)."""


@dataclass(frozen=True)
class Bracket:
    """stopLossBracket / takeProfitBracket: signed ticks from the entry's fill, and the child's type."""
    ticks: int
    type: int


def check_brackets(side: int, stop_loss: Bracket | None, take_profit: Bracket | None) -> None:
    """The live rules: ticks are signed relative to the entry (long: SL < 0 < TP; short: the
    reverse); an unsigned value is refused with the message community clients saw live.
    Child types: the sim takes a Stop or TrailingStop SL and a Limit TP (what clients send;
    other types are undocumented). The reported 4-tick minimum is UNCERTAIN and not enforced."""
    long = side == BUY
    word, sign = ("longing", "less") if long else ("shorting", "greater")
    if stop_loss is not None:
        if stop_loss.type not in (STOP, TRAILING_STOP):
            raise MatchError(f"Invalid stop loss type ({stop_loss.type}).")
        if (stop_loss.ticks >= 0) if long else (stop_loss.ticks <= 0):
            raise MatchError(f"Invalid stop loss ticks ({stop_loss.ticks}). Ticks should be {sign} than zero "
                             f"when {word}.")
    if take_profit is not None:
        if take_profit.type != LIMIT:
            raise MatchError(f"Invalid take profit type ({take_profit.type}).")
        tsign = "greater" if long else "less"
        if (take_profit.ticks <= 0) if long else (take_profit.ticks >= 0):
            raise MatchError(f"Invalid take profit ticks ({take_profit.ticks}). Ticks should be {tsign} than "
                             f"zero when {word}.")


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
    trail_ticks: int | None = None  # trailing stop: distance in whole ticks
    trail_ref: int | None = None    # trailing stop: best last trade so far (sell: highest, buy: lowest)
    parent_id: int | None = None    # bracket child: its entry
    linked_id: int | None = None    # take-profit child: its stop-loss sibling (live: only the TP carries it)
    offset_ticks: int | None = None  # bracket child: signed ticks from the entry's fill (live trailDistance)
    children: tuple[int, ...] = ()  # entry: its bracket children, SL first

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

    def place(self, order: Order, stop_loss: Bracket | None = None, take_profit: Bracket | None = None,
              trail_level: int | None = None) -> list:
        """Accept a validated order; fills at once when it is marketable.

        `trail_level` (ticks) is a trailing stop's trailPrice, an absolute level as the API
        takes it. Brackets create the suspended children in the same call, as live."""
        order.created_ns = order.updated_ns = self.now_ns
        mkt = self.markets.get(order.contract)
        if order.type == MARKET and (mkt is None or mkt.bid is None or mkt.ask is None):
            raise MatchError("No market price available for the contract")
        if order.type in (JOIN_BID, JOIN_ASK) and order.limit_ticks is None:
            # join the best bid / ask: a limit order at that price, resting (not a market order)
            px = None if mkt is None else (mkt.bid if order.type == JOIN_BID else mkt.ask)
            if px is None:
                raise MatchError("No market price available for the contract")
            order.limit_ticks = px
        if order.type == TRAILING_STOP:
            self._set_trail(order, trail_level, mkt, MatchError, check_max=True)
        if stop_loss is not None or take_profit is not None:
            check_brackets(order.side, stop_loss, take_profit)
        if self._partial_next is not None:      # taken only by an order that is accepted
            order.partial_cap, order.partial_never = self._partial_next
            self._partial_next = None
        self.orders[order.id] = order
        kids = self._make_children(order, stop_loss, take_profit)     # before the entry's event: it names them
        events: list = [("order", copy.copy(order))] + kids
        events += self._try_fill(order, self.markets.get(order.contract) or Market(), trade_price=None)
        return events

    def reject(self, order: Order, stop_loss: Bracket | None = None, take_profit: Bracket | None = None) -> list:
        """A refused order keeps its id (as live). With brackets, the children are created with
        the entry, as live, and cancelled at once because the entry never works."""
        order.status = REJECTED
        order.created_ns = order.updated_ns = self.now_ns
        self.orders[order.id] = order
        kids = self._make_children(order, stop_loss, take_profit)
        return [("order", copy.copy(order))] + kids + self._cancel_children(order)

    def cancel(self, order_id: int) -> list:
        """Cancel a working order or a suspended child; an unfilled entry takes its children along."""
        o = self.orders.get(order_id)
        if o is None or (o.status not in WORKING and o.status != SUSPENDED):
            raise MatchError(f"Order {order_id} not found or not working")
        o.status = CANCELLED
        o.updated_ns = self.now_ns
        return [("order", copy.copy(o))] + self._cancel_children(o)

    def modify(self, order_id: int, size: int | None, limit_ticks: int | None, stop_ticks: int | None,
               trail_level: int | None = None) -> list:
        """Move or resize a working order. A bracket leg moves alone (live: the sibling stays)."""
        o = self.orders.get(order_id)
        if o is not None and o.status == SUSPENDED:
            # undocumented live; the sim refuses: a suspended child has no price to move yet
            raise Rejected(f"Order {order_id} is a suspended bracket order; modify it once its entry fills")
        if o is None or o.status not in WORKING:
            raise MatchError(f"Order {order_id} not found or not working")
        if trail_level is not None and o.type != TRAILING_STOP:
            raise Rejected("trailPrice applies to trailing stop orders only")
        if size is not None and size <= o.fill_volume:
            raise MatchError(f"Size {size} is not above the filled volume {o.fill_volume}")
        if trail_level is not None:
            # the doc: no max-distance check on modify; the level becomes a distance from the last trade
            self._set_trail(o, trail_level, self.markets.get(o.contract), Rejected, check_max=False)
        if size is not None:
            o.size = size
        if limit_ticks is not None:
            o.limit_ticks = limit_ticks
        if stop_ticks is not None and o.type != TRAILING_STOP:     # a trailing stop moves by trailPrice
            o.stop_ticks = stop_ticks
        o.updated_ns = self.now_ns
        events: list = [("order", copy.copy(o))]
        for c in self._children(o):
            if c.status == SUSPENDED and c.size != o.size:   # suspended children follow the entry's size
                c.size = o.size
                c.updated_ns = self.now_ns
                events.append(("order", copy.copy(c)))
        return events + self._try_fill(o, self.markets.get(o.contract) or Market(), None)

    # -- trailing stops ----------------------------------------------------
    def _set_trail(self, o: Order, level: int | None, mkt: Market | None, err: type, check_max: bool) -> None:
        """trailPrice is an absolute level; the server keeps whole ticks of distance from the
        last trade (topstepx_api.md §1.6). The side of the level is not checked: its distance
        is what is kept. A zero distance counts as not set (the sim's choice)."""
        if level is None:
            raise err("Trail Distance not set.")
        last = None if mkt is None else mkt.last
        if last is None:
            raise err("Trail Distance cannot be set: no last price for the contract.")
        dist = abs(level - last)
        if dist == 0:
            raise err("Trail Distance not set.")
        if check_max and dist > MAX_TRAIL_TICKS:
            raise err(f"Trail Distance exceeds maximum ({MAX_TRAIL_TICKS})")
        o.trail_ticks, o.trail_ref = dist, last
        o.stop_ticks = last - dist if o.side == SELL else last + dist

    def _trail(self, o: Order, mkt: Market) -> list:
        """Follow the best last trade: a sell stop only rises, a buy stop only falls."""
        if o.type != TRAILING_STOP or o.trail_ticks is None or o.triggered or mkt.last is None:
            return []
        ref = max(o.trail_ref, mkt.last) if o.side == SELL else min(o.trail_ref, mkt.last)
        if ref == o.trail_ref:
            return []
        o.trail_ref = ref
        o.stop_ticks = ref - o.trail_ticks if o.side == SELL else ref + o.trail_ticks
        o.updated_ns = self.now_ns
        return [("order", copy.copy(o))]

    # -- native brackets -------------------------------------------------
    def _children(self, entry: Order) -> list[Order]:
        return [self.orders[i] for i in entry.children]

    def _make_children(self, entry: Order, stop_loss: Bracket | None, take_profit: Bracket | None) -> list:
        """The live shape: status 8, no price, tag + '-SL'/'-TP' (only when the entry has a tag),
        parentOrderId = entry, the TP linked to the SL, size = the entry's."""
        kids = []
        for br, suffix in ((stop_loss, "-SL"), (take_profit, "-TP")):
            if br is None:
                continue
            kids.append(Order(self.new_order_id(), entry.account_id, entry.contract, br.type, 1 - entry.side,
                              entry.size, tag=f"{entry.tag}{suffix}" if entry.tag else None, status=SUSPENDED,
                              created_ns=self.now_ns, updated_ns=self.now_ns, parent_id=entry.id,
                              offset_ticks=br.ticks))
        if stop_loss is not None and take_profit is not None:
            kids[1].linked_id = kids[0].id
        for k in kids:
            self.orders[k.id] = k
        entry.children = tuple(k.id for k in kids)
        return [("order", copy.copy(k)) for k in kids]

    def _cancel_children(self, entry: Order) -> list:
        """An entry that ends unfilled takes its suspended children along (status 3)."""
        events = []
        for c in self._children(entry):
            if c.status == SUSPENDED:
                c.status = CANCELLED
                c.updated_ns = self.now_ns
                events.append(("order", copy.copy(c)))
        return events

    def _activate_children(self, entry: Order, px: int) -> list:
        """After an entry fill: suspended children open at the fill price + their signed ticks;
        every working child is sized to the entry's filled quantity (a partial entry fill
        protects what was filled; a later fill grows the legs; the prices stay anchored at
        the first fill). Activated legs are matched against the current market at once."""
        events = []
        for c in self._children(entry):
            if c.status == SUSPENDED:
                c.status = OPEN
                level = px + c.offset_ticks
                if c.type == LIMIT:
                    c.limit_ticks = level
                else:
                    c.stop_ticks = level
                if c.type == TRAILING_STOP:
                    c.trail_ticks, c.trail_ref = abs(c.offset_ticks), px
                c.size = entry.fill_volume
            elif c.status in WORKING and c.size != entry.fill_volume:
                c.size = entry.fill_volume      # a leg never filled more than the entry did
            else:
                continue
            c.updated_ns = self.now_ns
            events.append(("order", copy.copy(c)))
        mkt = self.markets.get(entry.contract) or Market()
        for c in self._children(entry):
            events += self._try_fill(c, mkt, None)
        return events

    def _oco(self, leg: Order) -> list:
        """One leg filled (even in part): the other goes to status 3, as live."""
        parent = self.orders.get(leg.parent_id)
        events = []
        for c in self._children(parent) if parent is not None else []:
            if c.id != leg.id and (c.status in WORKING or c.status == SUSPENDED):
                c.status = CANCELLED
                c.updated_ns = self.now_ns
                events.append(("order", copy.copy(c)))
        return events

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
            events += self._trail(o, mkt)
            events += self._try_fill(o, mkt, trade_price)
        return events

    def _fill_price(self, o: Order, mkt: Market, trade_price: int | None) -> int | None:
        """The price this order fills at now, or None if it does not."""
        buy = o.side == BUY
        slip = self.slippage_ticks if buy else -self.slippage_ticks
        if o.type in (STOP, TRAILING_STOP, STOP_LIMIT) and not o.triggered:
            stop = o.stop_ticks
            hit = ((mkt.ask is not None and mkt.ask >= stop) or (trade_price is not None and trade_price >= stop)) \
                if buy else ((mkt.bid is not None and mkt.bid <= stop) or (trade_price is not None and trade_price <= stop))
            if not hit:
                return None
            o.triggered = True
        if o.type in (MARKET, STOP, TRAILING_STOP):     # stops only get here once triggered
            px = mkt.ask if buy else mkt.bid
            return None if px is None else px + slip
        if o.type in (LIMIT, JOIN_BID, JOIN_ASK, STOP_LIMIT):   # a triggered stop-limit rests as a limit
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
        events = [("order", copy.copy(o)), ("trade", trade), ("position", copy.copy(pos)),
                  ("account", copy.copy(self.account))]
        if o.children:
            events += self._activate_children(o, px)
        if o.parent_id is not None:
            events += self._oco(o)
        return events
