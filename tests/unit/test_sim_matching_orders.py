"""The simulator's matching engine for native brackets, trailing stops and stop-limits
(services/sim/matching.py), pure: no sockets, no clock.

The live rules are in ../shared/topstepx_api.md §1.6: signed bracket ticks, children
created suspended (status 8) with the entry, activated at the entry's fill, true OCO;
a trailing stop's trailPrice is an absolute level turned into whole ticks of distance.
Prices are integer ticks (MES: 0.25 points).
"""
from __future__ import annotations

import pytest

from common.instruments import instrument_for
from services.sim.matching import (
    BUY, CANCELLED, FILLED, LIMIT, MARKET, OPEN, REJECTED, SELL, STOP, STOP_LIMIT, SUSPENDED, TRAILING_STOP,
    Bracket, MatchError, MatchingEngine, Order, Rejected, SimAccount, check_brackets,
)

C = "CON.F.US.MES.H26"
MES = instrument_for(C)
P = 20000                          # 5000.00


def engine(bid: int | None = P, ask: int | None = P + 1, last: int | None = P) -> MatchingEngine:
    e = MatchingEngine(SimAccount(26000001, "SIM", 100_000))
    if bid is not None or ask is not None or last is not None:
        e.on_market(C, bid, ask, last, None, 1)
    return e


def order(e: MatchingEngine, type_: int, side: int, size: int = 1, limit: int | None = None,
          stop: int | None = None, tag: str | None = None) -> Order:
    return Order(e.new_order_id(), e.account.id, C, type_, side, size, limit, stop, tag)


def quote(e: MatchingEngine, bid: int, ask: int | None = None, trade: int | None = None, ts: int = 2) -> list:
    """A quote, with a trade when given (then the last price is that trade)."""
    return e.on_market(C, bid, bid + 1 if ask is None else ask, trade, trade, ts)


def order_events(events: list, oid: int | None = None) -> list[Order]:
    return [o for k, o in events if k == "order" and (oid is None or o.id == oid)]


def trades(events: list) -> list:
    return [t for k, t in events if k == "trade"]


SL8, TP12 = Bracket(-8, STOP), Bracket(12, LIMIT)


# --------------------------------------------------------------------------
# native brackets: validation
# --------------------------------------------------------------------------

@pytest.mark.parametrize("side, sl, tp, message", [
    (BUY, Bracket(40, STOP), None, "Invalid stop loss ticks (40). Ticks should be less than zero when longing."),
    (BUY, Bracket(0, STOP), None, "Invalid stop loss ticks (0). Ticks should be less than zero when longing."),
    (SELL, Bracket(-40, STOP), None,
     "Invalid stop loss ticks (-40). Ticks should be greater than zero when shorting."),
    (BUY, None, Bracket(-8, LIMIT),
     "Invalid take profit ticks (-8). Ticks should be greater than zero when longing."),
    (SELL, None, Bracket(8, LIMIT), "Invalid take profit ticks (8). Ticks should be less than zero when shorting."),
    (BUY, Bracket(-8, LIMIT), None, "Invalid stop loss type (1)."),
    (BUY, None, Bracket(8, STOP), "Invalid take profit type (4)."),
])
def test_bracket_ticks_must_be_signed_relative_to_the_entry(side, sl, tp, message):
    with pytest.raises(MatchError) as exc:
        check_brackets(side, sl, tp)
    assert str(exc.value) == message
    e = engine()
    o = order(e, LIMIT, side, limit=P - 4)
    with pytest.raises(MatchError):
        e.place(o, sl, tp)
    assert e.orders == {}                          # nothing created: the caller rejects the entry


def test_signed_brackets_pass_for_both_sides():
    check_brackets(BUY, Bracket(-8, STOP), Bracket(12, LIMIT))
    check_brackets(SELL, Bracket(8, TRAILING_STOP), Bracket(-12, LIMIT))


# --------------------------------------------------------------------------
# native brackets: lifecycle
# --------------------------------------------------------------------------

def test_bracket_children_are_created_suspended_with_the_entry():
    e = engine()
    entry = order(e, LIMIT, BUY, 2, limit=P - 4, tag="t1")
    ev = e.place(entry, SL8, TP12)
    created = order_events(ev)
    assert [o.id for o in created] == [entry.id, entry.id + 1, entry.id + 2]
    ent, sl, tp = created
    assert ent.status == OPEN and ent.children == (sl.id, tp.id)
    for child, type_, tag, ticks in ((sl, STOP, "t1-SL", -8), (tp, LIMIT, "t1-TP", 12)):
        assert (child.status, child.type, child.side, child.size, child.tag) == (SUSPENDED, type_, SELL, 2, tag)
        assert (child.limit_ticks, child.stop_ticks) == (None, None)         # no price while suspended
        assert (child.parent_id, child.offset_ticks) == (entry.id, ticks)
    assert (sl.linked_id, tp.linked_id) == (None, sl.id)                    # only the TP carries the link
    assert [o.id for o in e.working()] == [entry.id]                        # hidden from searchOpen


def test_children_without_a_parent_tag_have_no_tag_and_one_bracket_alone_works():
    e = engine()
    entry = order(e, LIMIT, BUY, limit=P - 4)
    (_, sl) = order_events(e.place(entry, SL8, None))
    assert sl.tag is None and sl.linked_id is None and entry.children == (sl.id,)


def test_entry_fill_activates_children_at_fill_price_plus_ticks_and_tp_fill_cancels_sl():
    e = engine()
    entry = order(e, LIMIT, BUY, 2, limit=P - 4, tag="b")
    e.place(entry, SL8, TP12)
    sl_id, tp_id = entry.children
    ev = quote(e, P - 5, P - 4)                     # the ask reaches the limit: the entry fills at P-4
    assert [t.order_id for t in trades(ev)] == [entry.id]
    (sl,) = order_events(ev, sl_id)
    (tp,) = order_events(ev, tp_id)
    assert (sl.status, sl.stop_ticks, sl.limit_ticks, sl.size) == (OPEN, P - 12, None, 2)
    assert (tp.status, tp.limit_ticks, tp.stop_ticks, tp.size) == (OPEN, P + 8, None, 2)
    assert {o.id for o in e.working()} == {sl_id, tp_id}

    ev = quote(e, P + 7, trade=P + 8)              # a trade at the TP's limit (touch)
    assert [(t.order_id, t.price_ticks, t.size) for t in trades(ev)] == [(tp_id, P + 8, 2)]
    assert e.orders[tp_id].status == FILLED
    (sl_done,) = order_events(ev, sl_id)
    assert sl_done.status == CANCELLED                                      # true OCO: status 3
    assert e.positions[C].qty == 0 and e.working() == []


def test_sl_fill_cancels_tp_for_a_short_market_entry():
    e = engine()
    entry = order(e, MARKET, SELL, 1)
    ev = e.place(entry, Bracket(6, STOP), Bracket(-10, LIMIT))
    assert [t.price_ticks for t in trades(ev)] == [P]                       # sold at the bid
    sl_id, tp_id = entry.children
    # the order of events: entry, suspended children, the fill, then the activations
    assert [(o.id, o.status) for o in order_events(ev)] == [
        (entry.id, OPEN), (sl_id, SUSPENDED), (tp_id, SUSPENDED), (entry.id, FILLED), (sl_id, OPEN), (tp_id, OPEN)]
    assert (e.orders[sl_id].side, e.orders[sl_id].stop_ticks) == (BUY, P + 6)
    assert e.orders[tp_id].limit_ticks == P - 10
    assert trades(quote(e, P + 4)) == []                                     # ask P+5: not yet
    ev = quote(e, P + 5)                                                     # ask P+6 reaches the stop
    assert [(t.order_id, t.price_ticks) for t in trades(ev)] == [(sl_id, P + 6)]
    assert e.orders[tp_id].status == CANCELLED and e.positions[C].qty == 0


def test_modifying_one_leg_leaves_the_sibling_unchanged():
    e = engine()
    entry = order(e, MARKET, BUY, 1)
    e.place(entry, SL8, TP12)
    sl_id, tp_id = entry.children
    before = (e.orders[tp_id].limit_ticks, e.orders[tp_id].status, e.orders[tp_id].size)
    ev = e.modify(sl_id, None, None, P - 3)
    assert [o.id for o in order_events(ev)] == [sl_id]
    assert e.orders[sl_id].stop_ticks == P - 3
    assert (e.orders[tp_id].limit_ticks, e.orders[tp_id].status, e.orders[tp_id].size) == before


def test_a_suspended_child_cannot_be_modified_but_can_be_cancelled_alone():
    e = engine()
    entry = order(e, LIMIT, BUY, limit=P - 4)
    e.place(entry, SL8, TP12)
    sl_id, tp_id = entry.children
    with pytest.raises(Rejected):
        e.modify(sl_id, None, None, P - 10)
    (c,) = order_events(e.cancel(sl_id))
    assert (c.id, c.status) == (sl_id, CANCELLED)
    assert e.orders[tp_id].status == SUSPENDED and e.orders[entry.id].status == OPEN


def test_cancelled_entry_cancels_its_suspended_children():
    e = engine()
    entry = order(e, LIMIT, BUY, limit=P - 4)
    e.place(entry, SL8, TP12)
    ev = e.cancel(entry.id)
    assert [(o.id, o.status) for o in order_events(ev)] == [
        (entry.id, CANCELLED), (entry.children[0], CANCELLED), (entry.children[1], CANCELLED)]
    assert all(o.status == CANCELLED for o in e.orders.values())


def test_rejected_entry_creates_and_cancels_its_children():
    e = engine()
    entry = order(e, MARKET, BUY, 1, tag="r")
    ev = e.reject(entry, SL8, TP12)
    assert [(o.status, o.tag) for o in order_events(ev)] == [
        (REJECTED, "r"), (SUSPENDED, "r-SL"), (SUSPENDED, "r-TP"), (CANCELLED, "r-SL"), (CANCELLED, "r-TP")]


def test_entry_size_change_is_followed_by_suspended_children():
    e = engine()
    entry = order(e, LIMIT, BUY, 1, limit=P - 4)
    e.place(entry, SL8, TP12)
    ev = e.modify(entry.id, 3, None, None)
    assert [(o.id, o.size) for o in order_events(ev)] == [(entry.id, 3)] + [(c, 3) for c in entry.children]


def test_partial_entry_fill_sizes_children_to_the_filled_quantity_and_grows_them():
    e = engine()
    e.partial_next(1)
    entry = order(e, MARKET, BUY, 3)
    ev = e.place(entry, SL8, TP12)
    sl_id, tp_id = entry.children
    assert [t.size for t in trades(ev)] == [1]
    assert (e.orders[sl_id].size, e.orders[tp_id].size) == (1, 1)
    assert (e.orders[sl_id].stop_ticks, e.orders[tp_id].limit_ticks) == (P + 1 - 8, P + 1 + 12)
    ev = quote(e, P + 1)                             # the rest fills at the new ask, P+2
    assert [t.size for t in trades(ev)] == [2] and e.orders[entry.id].status == FILLED
    assert [(o.id, o.size) for o in order_events(ev) if o.id != entry.id] == [(sl_id, 3), (tp_id, 3)]
    # the prices stay anchored at the first fill
    assert (e.orders[sl_id].stop_ticks, e.orders[tp_id].limit_ticks) == (P - 7, P + 13)


def test_cancelling_a_partly_filled_entry_keeps_the_active_children():
    e = engine()
    e.partial_next(1, never=True)
    entry = order(e, MARKET, BUY, 2)
    e.place(entry, SL8, TP12)
    e.cancel(entry.id)
    assert [(e.orders[c].status, e.orders[c].size) for c in entry.children] == [(OPEN, 1), (OPEN, 1)]


def test_trailing_stop_loss_bracket_trails_from_the_fill():
    e = engine()
    entry = order(e, MARKET, BUY, 1)
    e.place(entry, Bracket(-4, TRAILING_STOP), None)
    (sl_id,) = entry.children
    sl = e.orders[sl_id]
    assert (sl.type, sl.stop_ticks, sl.trail_ticks) == (TRAILING_STOP, P + 1 - 4, 4)
    quote(e, P + 5, trade=P + 6)
    assert e.orders[sl_id].stop_ticks == P + 2


# --------------------------------------------------------------------------
# trailing stops
# --------------------------------------------------------------------------

def test_sell_trailing_stop_follows_the_highest_trade_and_fills_as_market():
    e = engine()
    o = order(e, TRAILING_STOP, SELL, 1)
    (placed,) = order_events(e.place(o, trail_level=P - 4))
    assert (placed.trail_ticks, placed.stop_ticks) == (4, P - 4)
    ev = quote(e, P + 2, trade=P + 3)                # a new high: the stop rises by 3
    assert [o2.stop_ticks for o2 in order_events(ev)] == [P - 1]
    assert order_events(quote(e, P, trade=P + 1)) == []                # a lower trade: the stop stays
    assert e.orders[o.id].stop_ticks == P - 1
    ev = quote(e, P - 1, trade=P - 1)                # the trade reaches the stop: market fill at the bid
    assert [(t.order_id, t.price_ticks, t.side) for t in trades(ev)] == [(o.id, P - 1, SELL)]
    assert e.orders[o.id].status == FILLED


def test_buy_trailing_stop_follows_the_lowest_trade():
    e = engine()
    o = order(e, TRAILING_STOP, BUY, 1)
    e.place(o, trail_level=P + 6)                     # level above the last trade: 6 ticks
    assert e.orders[o.id].stop_ticks == P + 6
    quote(e, P - 5, trade=P - 4)
    assert e.orders[o.id].stop_ticks == P + 2
    quote(e, P - 2, trade=P - 1)
    assert e.orders[o.id].stop_ticks == P + 2 and e.orders[o.id].status == OPEN
    ev = quote(e, P + 1, ask=P + 2)                   # the ask reaches the stop
    assert [(t.price_ticks, t.side) for t in trades(ev)] == [(P + 2, BUY)]


@pytest.mark.parametrize("level, last, message", [
    (None, P, "Trail Distance not set."),
    (P, P, "Trail Distance not set."),
    (P - 1001, P, "Trail Distance exceeds maximum (1000)"),
    (P - 4, None, "Trail Distance cannot be set: no last price for the contract."),
])
def test_trailing_stop_validation(level, last, message):
    e = engine(bid=None if last is None else P, ask=None if last is None else P + 1, last=last)
    o = order(e, TRAILING_STOP, SELL, 1)
    with pytest.raises(MatchError) as exc:
        e.place(o, trail_level=level)
    assert str(exc.value) == message and o.id not in e.orders


def test_trailing_stop_of_exactly_1000_ticks_is_accepted_and_modify_has_no_maximum():
    e = engine()
    o = order(e, TRAILING_STOP, SELL, 1)
    e.place(o, trail_level=P - 1000)
    assert e.orders[o.id].stop_ticks == P - 1000
    quote(e, P + 9, trade=P + 10)
    (mod,) = order_events(e.modify(o.id, None, None, None, trail_level=P + 10 - 2000))
    assert (mod.trail_ticks, mod.stop_ticks) == (2000, P + 10 - 2000)    # the level asked, from the last trade
    quote(e, P + 19, trade=P + 20)
    assert e.orders[o.id].stop_ticks == P + 20 - 2000


def test_trail_level_on_another_order_type_is_rejected():
    e = engine()
    o = order(e, STOP, SELL, 1, stop=P - 4)
    e.place(o)
    with pytest.raises(Rejected):
        e.modify(o.id, None, None, None, trail_level=P - 2)


# --------------------------------------------------------------------------
# stop-limit
# --------------------------------------------------------------------------

def test_sell_stop_limit_triggers_then_rests_as_a_limit():
    e = engine()
    o = order(e, STOP_LIMIT, SELL, 1, limit=P - 3, stop=P - 2)
    e.place(o)
    assert trades(quote(e, P - 1)) == [] and not e.orders[o.id].triggered
    ev = quote(e, P - 5, trade=P - 5)                 # a gap through the stop and the limit
    assert trades(ev) == [] and e.orders[o.id].triggered and e.orders[o.id].status == OPEN
    ev = quote(e, P - 3)                               # back up: the bid reaches the limit
    assert [(t.price_ticks, t.side) for t in trades(ev)] == [(P - 3, SELL)]


def test_buy_stop_limit_fills_at_once_when_marketable_after_the_trigger():
    e = engine()
    o = order(e, STOP_LIMIT, BUY, 1, limit=P + 4, stop=P + 3)
    e.place(o)
    ev = quote(e, P + 2, ask=P + 3)                    # ask reaches the stop; the limit is marketable
    assert [(t.price_ticks, t.side) for t in trades(ev)] == [(P + 3, BUY)]
