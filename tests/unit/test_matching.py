"""The simulator's matching engine (services/sim/matching.py), pure: no sockets, no clock.

Prices are integer ticks (MES: 0.25 points, $1.25 a tick = 125 cents), money integer
cents, fees $0.37 a side per contract (common/instruments.py).
"""
from __future__ import annotations

from decimal import Decimal

import pytest

from common.instruments import instrument_for
from services.sim.matching import (
    BUY, CANCELLED, FILLED, JOIN_ASK, JOIN_BID, LIMIT, MARKET, OPEN, REJECTED, SELL, STOP, MatchError,
    MatchingEngine, Order, SimAccount,
)

C = "CON.F.US.MES.H26"
MES = instrument_for(C)
TV = MES.tick_value_cents          # 125
FEE = MES.fee_per_side_cents       # 37
P = 20000                          # 5000.00
START = 100_000                    # $1,000.00


def engine(slippage: int = 0, limit_fill: str = "touch", bid: int | None = P, ask: int | None = P + 1) -> MatchingEngine:
    e = MatchingEngine(SimAccount(26000001, "SIM", START), slippage_ticks=slippage, limit_fill=limit_fill)
    if bid is not None or ask is not None:
        e.on_market(C, bid, ask, bid, None, 1)
    return e


def order(e: MatchingEngine, type_: int, side: int, size: int = 1, limit: int | None = None,
          stop: int | None = None, tag: str | None = None) -> Order:
    return Order(e.new_order_id(), e.account.id, C, type_, side, size, limit, stop, tag)


def place(e: MatchingEngine, *args, **kw) -> tuple[Order, list]:
    o = order(e, *args, **kw)
    return o, e.place(o)


def kinds(events: list) -> list[str]:
    return [k for k, _ in events]


def trades(events: list) -> list:
    return [obj for k, obj in events if k == "trade"]


def quote(e: MatchingEngine, bid: int, ask: int, trade: int | None = None, ts: int = 2) -> list:
    return e.on_market(C, bid, ask, trade if trade is not None else None, trade, ts)


# --------------------------------------------------------------------------
# market orders
# --------------------------------------------------------------------------

@pytest.mark.parametrize("side, slippage, expect", [
    (BUY, 0, P + 1),        # buy at the ask
    (SELL, 0, P),           # sell at the bid
    (BUY, 2, P + 3),        # slippage against the trader
    (SELL, 2, P - 2),
])
def test_market_fills_at_opposite_quote_plus_slippage(side, slippage, expect):
    e = engine(slippage=slippage)
    o, ev = place(e, MARKET, side, 2)
    assert kinds(ev) == ["order", "order", "trade", "position", "account"]
    assert ev[0][1].status == OPEN and ev[1][1].status == FILLED
    (t,) = trades(ev)
    assert (t.price_ticks, t.size, t.side, t.order_id, t.pnl_cents) == (expect, 2, side, o.id, None)
    assert t.fees_cents == 2 * FEE
    assert o.status == FILLED and o.fill_volume == 2
    assert o.filled_price(MES) == MES.to_price(expect)


def test_market_without_a_quote_is_refused():
    e = engine(bid=None, ask=None)
    with pytest.raises(MatchError):
        e.place(order(e, MARKET, BUY))
    assert not e.trades and e.account.balance_cents == START


def test_join_bid_and_join_ask_rest_at_the_quote_like_limits():
    e = engine()
    jb, ev = place(e, JOIN_BID, BUY)
    assert kinds(ev) == ["order"] and jb.limit_ticks == P and jb.status == OPEN      # joins the bid
    ja, ev = place(e, JOIN_ASK, SELL)
    assert kinds(ev) == ["order"] and ja.limit_ticks == P + 1 and ja.status == OPEN  # joins the ask
    (t,) = trades(quote(e, P - 1, P))              # offer comes down to our bid
    assert t.order_id == jb.id and t.price_ticks == P
    (t,) = trades(quote(e, P + 1, P + 2))          # bid comes up to our offer
    assert t.order_id == ja.id and t.price_ticks == P + 1
    e2 = engine(bid=None, ask=None)
    with pytest.raises(MatchError):
        e2.place(order(e2, JOIN_BID, BUY))


# --------------------------------------------------------------------------
# limit orders
# --------------------------------------------------------------------------

# (mode, side, limit, new bid, new ask, trade, fill price or None)
LIMIT_CASES = [
    # buy limit at P-2 resting (market P/P+1)
    ("touch", BUY, P - 2, P - 3, P - 2, None, P - 2),     # ask touches the limit
    ("through", BUY, P - 2, P - 3, P - 2, None, P - 2),   # quote at the limit: a real offer there
    ("touch", BUY, P - 2, P - 1, P, P - 2, P - 2),        # a trade at the limit
    ("through", BUY, P - 2, P - 1, P, P - 2, None),       # ... is not enough with `through`
    ("through", BUY, P - 2, P - 1, P, P - 3, P - 2),      # a trade through it is, at the limit
    ("touch", BUY, P - 2, P - 1, P, None, None),          # the market stays above
    ("touch", BUY, P - 2, P - 5, P - 4, None, P - 4),     # gapped through: price improvement
    # sell limit at P+3 resting
    ("touch", SELL, P + 3, P + 3, P + 4, None, P + 3),
    ("touch", SELL, P + 3, P + 1, P + 2, P + 3, P + 3),
    ("through", SELL, P + 3, P + 1, P + 2, P + 3, None),
    ("through", SELL, P + 3, P + 2, P + 3, P + 4, P + 3),
    ("touch", SELL, P + 3, P + 1, P + 2, P + 2, None),
]


@pytest.mark.parametrize("mode, side, limit, bid, ask, trade, fill", LIMIT_CASES)
def test_resting_limit_fill_rules(mode, side, limit, bid, ask, trade, fill):
    e = engine(limit_fill=mode)
    o, ev = place(e, LIMIT, side, 1, limit=limit)
    assert kinds(ev) == ["order"] and o.status == OPEN
    ev = quote(e, bid, ask, trade)
    if fill is None:
        assert ev == [] and o.status == OPEN
    else:
        (t,) = trades(ev)
        assert t.price_ticks == fill and o.status == FILLED


@pytest.mark.parametrize("side, limit, fill", [
    (BUY, P + 3, P + 1),     # marketable buy limit fills at the ask, not the limit
    (BUY, P + 1, P + 1),
    (SELL, P - 3, P),        # marketable sell limit fills at the bid
    (SELL, P, P),
])
def test_marketable_limit_fills_at_once_at_the_quote(side, limit, fill):
    e = engine(slippage=3)   # no slippage on limits
    o, ev = place(e, LIMIT, side, 1, limit=limit)
    assert trades(ev)[0].price_ticks == fill and o.status == FILLED


def test_limit_never_fills_worse_than_its_price_with_slippage():
    e = engine(slippage=5)
    o, _ = place(e, LIMIT, BUY, 1, limit=P - 2)
    (t,) = trades(quote(e, P - 3, P - 2))
    assert t.price_ticks == P - 2


# --------------------------------------------------------------------------
# stop orders
# --------------------------------------------------------------------------

# (side, stop, new bid, new ask, trade, fill price or None)
STOP_CASES = [
    (BUY, P + 4, P + 2, P + 3, None, None),           # not reached
    (BUY, P + 4, P + 3, P + 4, None, P + 4),          # ask reaches the stop -> market at the ask
    (BUY, P + 4, P + 5, P + 6, None, P + 6),          # gap: fills at the ask, above the stop
    (BUY, P + 4, P + 2, P + 3, P + 4, P + 3),         # a trade at the stop triggers, fill at the ask
    (SELL, P - 4, P - 3, P - 2, None, None),
    (SELL, P - 4, P - 4, P - 3, None, P - 4),         # bid reaches the stop
    (SELL, P - 4, P - 6, P - 5, None, P - 6),         # gap down
    (SELL, P - 4, P - 3, P - 2, P - 4, P - 3),        # trade at the stop, fill at the bid
]


@pytest.mark.parametrize("side, stop, bid, ask, trade, fill", STOP_CASES)
def test_stop_triggers_on_quote_or_trade_and_fills_as_market(side, stop, bid, ask, trade, fill):
    e = engine()
    o, ev = place(e, STOP, side, 1, stop=stop)
    assert kinds(ev) == ["order"] and o.status == OPEN
    ev = quote(e, bid, ask, trade)
    if fill is None:
        assert ev == [] and o.status == OPEN and not o.triggered
    else:
        (t,) = trades(ev)
        assert t.price_ticks == fill and o.status == FILLED


def test_stop_fill_gets_slippage():
    e = engine(slippage=1)
    o, _ = place(e, STOP, SELL, 1, stop=P - 4)
    (t,) = trades(quote(e, P - 4, P - 3))
    assert t.price_ticks == P - 5


# --------------------------------------------------------------------------
# partial fills
# --------------------------------------------------------------------------

def test_partial_fill_then_rest_on_next_market_update():
    e = engine()
    e.partial_next(1)
    o, ev = place(e, MARKET, BUY, 3)
    (t,) = trades(ev)
    assert t.size == 1 and o.status == OPEN and o.fill_volume == 1 and o.remaining == 2
    ev = quote(e, P + 1, P + 2)
    (t2,) = trades(ev)
    assert t2.size == 2 and t2.price_ticks == P + 2 and o.status == FILLED
    assert o.filled_price(MES) == MES.to_price(P + 1) + Decimal("0.25") * 2 / 3
    assert e.positions[C].qty == 3
    # the flag applies to one order only
    o2, ev = place(e, MARKET, BUY, 2)
    assert trades(ev)[0].size == 2 and o2.status == FILLED


def test_partial_fill_rest_never():
    e = engine()
    e.partial_next(2, never=True)
    o, ev = place(e, MARKET, SELL, 5)
    assert trades(ev)[0].size == 2
    for i in range(3):
        assert quote(e, P - i, P - i + 1) == []
    assert o.status == OPEN and o.fill_volume == 2
    assert kinds(e.cancel(o.id)) == ["order"] and o.status == CANCELLED
    assert e.positions[C].qty == -2


def test_partial_fill_on_a_resting_limit():
    e = engine()
    e.partial_next(1)
    o, ev = place(e, LIMIT, BUY, 2, limit=P - 1)
    assert kinds(ev) == ["order"]
    assert trades(quote(e, P - 2, P - 1))[0].size == 1 and o.status == OPEN
    assert trades(quote(e, P - 2, P - 1))[0].size == 1 and o.status == FILLED


# --------------------------------------------------------------------------
# OCO-relevant: stop and target both working; the engine does not cancel the sibling
# --------------------------------------------------------------------------

@pytest.mark.parametrize("hit, bid, ask, price, pnl_ticks", [
    ("target", P + 8, P + 9, P + 8, 7),     # long from P+1, target at P+8
    ("stop", P - 6, P - 5, P - 6, -7),      # stop at P-6
])
def test_stop_and_target_one_fills_the_other_keeps_working(hit, bid, ask, price, pnl_ticks):
    e = engine()
    entry, _ = place(e, MARKET, BUY, 1)
    assert e.positions[C].qty == 1
    stop, ev_s = place(e, STOP, SELL, 1, stop=P - 6)
    target, ev_t = place(e, LIMIT, SELL, 1, limit=P + 8)
    assert kinds(ev_s) == kinds(ev_t) == ["order"]
    assert {o.id for o in e.working(C)} == {stop.id, target.id}
    ev = quote(e, bid, ask)
    (t,) = trades(ev)
    filled, other = (target, stop) if hit == "target" else (stop, target)
    assert t.order_id == filled.id and t.price_ticks == price
    assert t.pnl_cents == pnl_ticks * TV
    assert filled.status == FILLED and other.status == OPEN          # the gateway manages OCO
    pos = [obj for k, obj in ev if k == "position"][-1]
    assert pos.qty == 0
    assert e.account.balance_cents == START + pnl_ticks * TV - 2 * FEE
    # the sibling is still live: the market coming back would open a naked position
    ev = e.cancel(other.id)
    assert kinds(ev) == ["order"] and other.status == CANCELLED
    assert e.working(C) == []
    with pytest.raises(MatchError):
        e.cancel(other.id)             # not working any more
    with pytest.raises(MatchError):
        e.cancel(filled.id)


def test_uncancelled_sibling_opens_a_naked_position():
    e = engine()
    place(e, MARKET, BUY, 1)
    stop, _ = place(e, STOP, SELL, 1, stop=P - 4)
    target, _ = place(e, LIMIT, SELL, 1, limit=P + 4)
    quote(e, P + 4, P + 5)
    assert target.status == FILLED and e.positions[C].qty == 0
    ev = quote(e, P - 4, P - 3)
    assert trades(ev)[0].order_id == stop.id and e.positions[C].qty == -1


# --------------------------------------------------------------------------
# positions, P&L, fees, balance
# --------------------------------------------------------------------------

def fill(e: MatchingEngine, side: int, size: int, px: int) -> list:
    """A market order filled at exactly `px` (quote set around it)."""
    e.on_market(C, px if side == SELL else px - 1, px if side == BUY else px + 1, None, None, 3)
    return e.place(order(e, MARKET, side, size))


# each step: (side, size, price, expected pnl cents or None, position qty after, avg ticks after as Decimal)
POSITION_SCENARIOS = {
    "long round trip": [
        (BUY, 1, P, None, 1, Decimal(P)),
        (SELL, 1, P + 4, 4 * TV, 0, Decimal(0)),
    ],
    "short round trip, loss": [
        (SELL, 2, P, None, -2, Decimal(P)),
        (BUY, 2, P + 3, -3 * 2 * TV, 0, Decimal(0)),
    ],
    "scale in, average, scale out": [
        (BUY, 1, P, None, 1, Decimal(P)),
        (BUY, 3, P + 4, None, 4, Decimal(P + 3)),            # (P + 3(P+4)) / 4 = P + 3
        (SELL, 2, P + 5, 2 * 2 * TV, 2, Decimal(P + 3)),
        (SELL, 2, P + 1, -2 * 2 * TV, 0, Decimal(0)),
    ],
    "reversal through zero": [
        (BUY, 2, P, None, 2, Decimal(P)),
        (SELL, 5, P + 2, 2 * 2 * TV, -3, Decimal(P + 2)),    # closes 2, opens 3 short at the fill
        (BUY, 3, P - 1, 3 * 3 * TV, 0, Decimal(0)),
    ],
    "short reversal to long": [
        (SELL, 1, P, None, -1, Decimal(P)),
        (BUY, 3, P - 2, 2 * TV, 2, Decimal(P - 2)),
        (SELL, 2, P - 2, 0, 0, Decimal(0)),
    ],
}


@pytest.mark.parametrize("steps", POSITION_SCENARIOS.values(), ids=POSITION_SCENARIOS.keys())
def test_positions_netted_with_average_price_and_exact_pnl(steps):
    e = engine()
    balance = START
    for side, size, px, pnl, qty, avg in steps:
        ev = fill(e, side, size, px)
        (t,) = trades(ev)
        assert (t.price_ticks, t.size, t.pnl_cents) == (px, size, pnl)
        assert t.fees_cents == size * FEE
        balance += (pnl or 0) - size * FEE
        pos = [obj for k, obj in ev if k == "position"][-1]
        acct = [obj for k, obj in ev if k == "account"][-1]
        assert pos.qty == qty
        assert pos.avg_price(MES) == MES.tick_size * avg
        assert acct.balance_cents == e.account.balance_cents == balance


def test_round_trip_pnl_is_exact_to_the_cent_with_a_fractional_average():
    """Average P+0.5 ticks: whatever each closing fill shows, the realized P&L of the round
    trip is exactly sell proceeds minus buy cost (3 ticks = $3.75), fees $0.37 a side."""
    e = engine()
    fill(e, BUY, 1, P)
    fill(e, BUY, 1, P + 1)
    assert e.positions[C].avg_price(MES) == MES.to_price(P) + Decimal("0.125")
    t1 = trades(fill(e, SELL, 1, P + 2))[0]
    t2 = trades(fill(e, SELL, 1, P + 2))[0]
    assert e.positions[C].qty == 0
    assert t1.pnl_cents + t2.pnl_cents == 3 * TV
    assert sum(t.fees_cents for t in e.trades) == 4 * FEE == 148
    assert e.account.balance_cents == START + 3 * TV - 4 * FEE == 100_227


def test_many_odd_lots_conserve_pnl():
    e = engine()
    buys = [(1, P), (2, P + 1), (3, P + 3), (1, P + 2)]
    for size, px in buys:
        fill(e, BUY, size, px)
    cost = sum(s * px for s, px in buys)
    sells = [(2, P + 5), (1, P - 1), (3, P + 4), (1, P + 7)]
    for size, px in sells:
        fill(e, SELL, size, px)
    proceeds = sum(s * px for s, px in sells)
    assert e.positions[C].qty == 0
    assert sum(t.pnl_cents or 0 for t in e.trades) == (proceeds - cost) * TV
    assert e.account.balance_cents == START + (proceeds - cost) * TV - 14 * FEE


def test_fees_and_pnl_on_es_use_its_own_spec():
    es = "CON.F.US.EP.H26"
    inst = instrument_for(es)
    e = MatchingEngine(SimAccount(1, "SIM", START))
    e.on_market(es, P, P + 1, P, None, 1)
    e.place(Order(e.new_order_id(), 1, es, MARKET, BUY, 1))
    e.on_market(es, P + 2, P + 3, P + 2, None, 2)
    (t,) = trades(e.place(Order(e.new_order_id(), 1, es, MARKET, SELL, 1)))
    assert t.pnl_cents == 1 * inst.tick_value_cents == 1250 and t.fees_cents == 140
    assert e.account.balance_cents == START + 1250 - 280


def test_position_close_event_has_size_zero_and_new_position_gets_new_id():
    e = engine()
    ev = fill(e, BUY, 1, P)
    first = [obj for k, obj in ev if k == "position"][0]
    ev = fill(e, SELL, 1, P)
    closed = [obj for k, obj in ev if k == "position"][0]
    assert closed.id == first.id and closed.qty == 0
    ev = fill(e, SELL, 1, P)
    again = [obj for k, obj in ev if k == "position"][0]
    assert again.id != first.id and again.qty == -1


# --------------------------------------------------------------------------
# reject, cancel, modify, ids
# --------------------------------------------------------------------------

def test_rejected_order_still_gets_an_id_and_an_event():
    e = engine()
    o = order(e, MARKET, BUY, 1)
    ev = e.reject(o)
    assert kinds(ev) == ["order"] and ev[0][1].status == REJECTED and ev[0][1].id == o.id
    assert e.orders[o.id].status == REJECTED
    assert e.working() == [] and not e.trades and e.account.balance_cents == START
    with pytest.raises(MatchError):
        e.cancel(o.id)


def test_ids_are_unique_and_int64_sized():
    e = engine()
    ids = [e.new_order_id() for _ in range(100)]
    assert len(set(ids)) == 100 and all(2**31 < i < 2**63 for i in ids)


def test_modify_moves_a_working_order_and_fills_when_marketable():
    e = engine()
    o, _ = place(e, LIMIT, BUY, 2, limit=P - 4)
    ev = e.modify(o.id, None, P - 2, None)
    assert kinds(ev) == ["order"] and o.limit_ticks == P - 2
    ev = e.modify(o.id, 3, P + 1, None)           # now marketable: fills at the ask
    (t,) = trades(ev)
    assert t.size == 3 and t.price_ticks == P + 1 and o.status == FILLED
    with pytest.raises(MatchError):
        e.modify(o.id, None, P, None)


def test_modify_size_not_below_filled_volume():
    e = engine()
    e.partial_next(1, never=True)
    o, _ = place(e, MARKET, BUY, 3)
    with pytest.raises(MatchError):
        e.modify(o.id, 1, None, None)
    e.modify(o.id, 2, None, None)
    assert o.size == 2 and o.remaining == 1


def test_modify_stop_price_triggers_it():
    e = engine()
    o, _ = place(e, STOP, SELL, 1, stop=P - 5)
    ev = e.modify(o.id, None, None, P)         # bid is at P: triggers now
    assert trades(ev)[0].price_ticks == P and o.status == FILLED


def test_events_are_snapshots_not_live_objects():
    e = engine()
    o, ev = place(e, LIMIT, BUY, 1, limit=P - 1)
    snap = ev[0][1]
    quote(e, P - 2, P - 1)
    assert o.status == FILLED and snap.status == OPEN


def test_market_clock_only_moves_forward():
    e = engine()
    e.on_market(C, P, P + 1, None, None, 100)
    e.on_market(C, P, P + 1, None, None, 50)
    assert e.now_ns == 100
    o, _ = place(e, MARKET, BUY)
    assert o.created_ns == 100 and e.trades[-1].ts_ns == 100
