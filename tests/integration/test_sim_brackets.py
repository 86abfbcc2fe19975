"""The simulator's native Auto-OCO brackets, trailing stops, stop-limits and market depth,
as a client of the real TopstepX sees them (../shared/topstepx_api.md §1.6, §2, §3.3).

A real `python -m services.sim` process with `auto_oco_brackets: true` (the account setting
that makes brackets work live); events are read on the user hub with the pipeline's own
HubClient, the market hub with a raw SignalR WebSocket. The helpers are test_sim_api's.
"""
from __future__ import annotations

import pytest

from tests.harness.procs import wait_for
from tests.harness.sim import SimProcess
from tests.integration.test_sim_api import (
    ORDER_FIELDS, Events, RawHub, Rest, invocations, iso_ago, set_market, started, subscribed, user_client,
)

pytestmark = pytest.mark.integration

LIMIT, MARKET, STOP_LIMIT, STOP, TRAILING_STOP = 1, 2, 3, 4, 5
BUY, SELL = 0, 1
LIVE_FIELDS = {"parentOrderId", "linkedOrderId", "trailPrice", "trailDistance"}


@pytest.fixture
def sim(tmp_path):
    with SimProcess(tmp_path / "sim", speed=20, rate_limit_per_min=100_000, auto_oco_brackets=True) as s:
        yield s


@pytest.fixture
def user(sim):
    ev = Events()
    hub = user_client(sim, ev)
    started(hub)
    wait_for(subscribed(sim, "user", "trades"), 5, what="user subscriptions")
    try:
        yield ev
    finally:
        hub.stop()


def last_of(ev: Events, oid: int) -> dict | None:
    got = [p["data"] for p in ev.data("GatewayUserOrder") if p["data"]["id"] == oid]
    return got[-1] if got else None


def wait_status(ev: Events, oid: int, status: int, what: str) -> dict:
    return wait_for(lambda: (o := last_of(ev, oid)) is not None and o["status"] == status and o, 5, what=what)


def children_of(ev: Events, entry_id: int) -> dict[str, int]:
    """'SL' / 'TP' -> the child's id, told apart by type (4 Stop / 1 Limit)."""
    kids = {p["data"]["id"]: p["data"]["type"] for p in ev.data("GatewayUserOrder")
            if p["data"]["parentOrderId"] == entry_id}
    return {("SL" if t == STOP else "TP"): i for i, t in kids.items()}


def open_ids(rest: Rest, sim: SimProcess) -> set[int]:
    return {o["id"] for o in rest.ok("/api/Order/searchOpen", {"accountId": sim.account_id})["orders"]}


# --------------------------------------------------------------------------
# native brackets
# --------------------------------------------------------------------------

def test_native_bracket_lifecycle(sim, user):
    ev, rest = user, Rest(sim)
    set_market(sim, 5000.00, 5000.25)
    j = rest.place(LIMIT, BUY, 2, limitPrice=4999.00, customTag="b1",
                   stopLossBracket={"ticks": -8, "type": STOP}, takeProfitBracket={"ticks": 12, "type": LIMIT})
    assert j["success"] is True, j
    entry = j["orderId"]
    wait_for(lambda: len(children_of(ev, entry)) == 2, 5, what="suspended children on the user hub")
    kids = children_of(ev, entry)
    sl, tp = last_of(ev, kids["SL"]), last_of(ev, kids["TP"])
    for o, tag, ticks in ((sl, "b1-SL", -8), (tp, "b1-TP", 12)):
        assert set(o) >= ORDER_FIELDS | LIVE_FIELDS
        assert (o["status"], o["side"], o["size"], o["customTag"]) == (8, SELL, 2, tag)
        assert (o["limitPrice"], o["stopPrice"]) == (None, None)
        assert (o["trailDistance"], o["trailPrice"]) == (ticks, ticks * 0.25)
    assert (sl["linkedOrderId"], tp["linkedOrderId"]) == (None, sl["id"])
    assert last_of(ev, entry)["parentOrderId"] is None
    # suspended children are invisible to REST
    assert open_ids(rest, sim) == {entry}
    searched = rest.ok("/api/Order/search", {"accountId": sim.account_id, "startTimestamp": iso_ago(sim)})["orders"]
    assert {o["id"] for o in searched} == {entry}

    # the entry fills at 4999.00: the children open at 4999.00 - 8 and + 12 ticks
    set_market(sim, 4998.75, 4999.00)
    sl = wait_status(ev, kids["SL"], 1, "SL activated")
    tp = wait_status(ev, kids["TP"], 1, "TP activated")
    assert (sl["stopPrice"], sl["limitPrice"], sl["size"]) == (4997.00, None, 2)
    assert (tp["limitPrice"], tp["stopPrice"], tp["size"]) == (5002.00, None, 2)
    assert last_of(ev, entry)["status"] == 2
    assert open_ids(rest, sim) == {kids["SL"], kids["TP"]}

    # moving the SL leaves the TP as it was
    n_tp = sum(1 for p in ev.data("GatewayUserOrder") if p["data"]["id"] == kids["TP"])
    rest.ok("/api/Order/modify", {"accountId": sim.account_id, "orderId": kids["SL"], "stopPrice": 4998.00})
    wait_for(lambda: last_of(ev, kids["SL"])["stopPrice"] == 4998.00, 5, what="SL moved")
    tp_now = {o["id"]: o for o in rest.ok("/api/Order/searchOpen", {"accountId": sim.account_id})["orders"]}
    assert (tp_now[kids["TP"]]["limitPrice"], tp_now[kids["TP"]]["status"]) == (5002.00, 1)
    assert sum(1 for p in ev.data("GatewayUserOrder") if p["data"]["id"] == kids["TP"]) == n_tp

    # the TP fills: the SL goes to status 3 (true OCO) and the position is flat
    set_market(sim, 5002.00, 5002.25)
    wait_status(ev, kids["TP"], 2, "TP filled")
    wait_status(ev, kids["SL"], 3, "SL cancelled by OCO")
    wait_for(lambda: ev.data("GatewayUserPosition")[-1]["data"]["size"] == 0, 5, what="flat position")
    trades = rest.ok("/api/Trade/search", {"accountId": sim.account_id, "startTimestamp": iso_ago(sim)})["trades"]
    assert [(t["orderId"], t["price"], t["size"]) for t in trades] == [(entry, 4999.0, 2), (kids["TP"], 5002.0, 2)]
    assert open_ids(rest, sim) == set()


@pytest.mark.parametrize("side, sl, tp, message", [
    (BUY, 40, None, "Invalid stop loss ticks (40). Ticks should be less than zero when longing."),
    (SELL, -40, None, "Invalid stop loss ticks (-40). Ticks should be greater than zero when shorting."),
    (BUY, None, -12, "Invalid take profit ticks (-12). Ticks should be greater than zero when longing."),
    (SELL, None, 12, "Invalid take profit ticks (12). Ticks should be less than zero when shorting."),
])
def test_unsigned_or_wrong_sign_ticks_are_rejected(sim, side, sl, tp, message):
    rest = Rest(sim)
    set_market(sim, 5000.00)
    extra = {}
    if sl is not None:
        extra["stopLossBracket"] = {"ticks": sl, "type": STOP}
    if tp is not None:
        extra["takeProfitBracket"] = {"ticks": tp, "type": LIMIT}
    j = rest.place(MARKET, side, 1, **extra)
    assert (j["success"], j["errorCode"], j["errorMessage"]) == (False, 2, message)
    assert sim.state()["orders"] == [] and sim.state()["trades"] == []


def test_cancelled_or_rejected_entry_cancels_its_suspended_children(sim, user):
    ev, rest = user, Rest(sim)
    set_market(sim, 5000.00)
    br = {"stopLossBracket": {"ticks": -8, "type": STOP}, "takeProfitBracket": {"ticks": 8, "type": LIMIT}}
    entry = rest.place(LIMIT, BUY, 1, limitPrice=4990.00, **br)["orderId"]
    wait_for(lambda: len(children_of(ev, entry)) == 2, 5, what="suspended children")
    rest.ok("/api/Order/cancel", {"accountId": sim.account_id, "orderId": entry})
    for kid in children_of(ev, entry).values():
        wait_status(ev, kid, 3, "child cancelled with its entry")

    sim.control("reject_orders", count=1, code=3, message="Insufficient funds")
    j = rest.place(MARKET, BUY, 1, customTag="rej", **br)
    assert (j["success"], j["errorCode"]) == (False, 3)
    wait_for(lambda: len(children_of(ev, j["orderId"])) == 2, 5, what="children of the rejected entry")
    assert wait_status(ev, j["orderId"], 5, "entry rejected")
    for name, kid in children_of(ev, j["orderId"]).items():
        assert wait_status(ev, kid, 3, "child cancelled")["customTag"] == f"rej-{name}"
    assert sim.state()["trades"] == [] and open_ids(rest, sim) == set()


# --------------------------------------------------------------------------
# trailing stops and stop-limits
# --------------------------------------------------------------------------

def test_trailing_stop_validation_trails_and_fills(sim, user):
    ev, rest = user, Rest(sim)
    set_market(sim, 5000.00, 5000.25, last=5000.00)
    j = rest.place(TRAILING_STOP, SELL, 1)
    assert (j["success"], j["errorCode"], j["errorMessage"]) == (False, 2, "Trail Distance not set.")
    assert isinstance(j["orderId"], int)                          # a rejected order keeps its id
    j = rest.place(TRAILING_STOP, SELL, 1, trailPrice=5000.00 - 1001 * 0.25)
    assert (j["errorCode"], j["errorMessage"]) == (2, "Trail Distance exceeds maximum (1000)")
    j = rest.place(TRAILING_STOP, SELL, 1, trailPrice=4999.10)   # off the tick grid
    assert (j["success"], j["errorCode"]) == (False, 2)

    # trailPrice is for trailing stops only: sent as 0 with a limit order it is not read
    assert rest.place(LIMIT, BUY, 1, limitPrice=4990.00, trailPrice=0)["success"] is True

    oid = rest.place(TRAILING_STOP, SELL, 1, trailPrice=4999.00)["orderId"]
    o = wait_status(ev, oid, 1, "trailing stop open")
    # read back as a distance: 4 ticks, 1.00 in price; the stop sits 4 ticks under the last trade
    assert (o["type"], o["trailDistance"], o["trailPrice"], o["stopPrice"]) == (TRAILING_STOP, 4, 1.0, 4999.0)
    set_market(sim, 5001.00, 5001.25, last=5001.25)              # a new high trade: the stop follows
    wait_for(lambda: last_of(ev, oid)["stopPrice"] == 5000.25, 5, what="stop trailed up")
    set_market(sim, 5000.50, 5000.75, last=5000.75)              # lower: it stays
    stops = {o["id"]: o["stopPrice"] for o in rest.ok("/api/Order/searchOpen", {"accountId": sim.account_id})["orders"]}
    assert stops[oid] == 5000.25
    rest.ok("/api/Order/modify", {"accountId": sim.account_id, "orderId": oid, "trailPrice": 5000.25})
    o = wait_for(lambda: (o := last_of(ev, oid))["trailDistance"] == 2 and o, 5, what="trail modified")
    assert (o["stopPrice"], o["trailPrice"]) == (5000.25, 0.5)
    set_market(sim, 5000.25, 5000.50, last=5000.25)              # the bid reaches the stop
    wait_status(ev, oid, 2, "trailing stop filled")
    (t,) = rest.ok("/api/Trade/search", {"accountId": sim.account_id, "startTimestamp": iso_ago(sim)})["trades"]
    assert (t["orderId"], t["price"], t["side"]) == (oid, 5000.25, SELL)


def test_stop_limit_triggers_then_rests_at_its_limit(sim, user):
    ev, rest = user, Rest(sim)
    set_market(sim, 5000.00)
    j = rest.place(STOP_LIMIT, SELL, 1, stopPrice=4999.50)
    assert (j["success"], j["errorCode"]) == (False, 2)           # a stop-limit needs both prices
    oid = rest.place(STOP_LIMIT, SELL, 1, stopPrice=4999.50, limitPrice=4999.25)["orderId"]
    o = wait_status(ev, oid, 1, "stop-limit open")
    assert (o["type"], o["stopPrice"], o["limitPrice"]) == (STOP_LIMIT, 4999.50, 4999.25)
    set_market(sim, 4998.50, 4998.75, last=4998.50)              # gaps through stop and limit: no fill
    set_market(sim, 4998.75)
    assert sim.state()["trades"] == [] and open_ids(rest, sim) == {oid}
    set_market(sim, 4999.25)                                     # back to the limit: it fills there
    wait_status(ev, oid, 2, "stop-limit filled")
    (t,) = sim.state()["trades"]
    assert (t["orderId"], t["price"]) == (oid, 4999.25)


# --------------------------------------------------------------------------
# market depth
# --------------------------------------------------------------------------

class BookClient:
    """A client-side order book built only from GatewayDepth, as a third-party client would:
    Reset (6) clears, Bid (2) / Ask (1) set a level, volume 0 removes it."""

    def __init__(self):
        self.bids: dict[float, int] = {}
        self.asks: dict[float, int] = {}
        self.removed = 0
        self.resets = 0

    def apply(self, entries: list[dict]) -> None:
        for d in entries:
            assert set(d) == {"timestamp", "type", "price", "volume", "currentVolume"}, d
            if d["type"] == 6:
                self.bids.clear()
                self.asks.clear()
                self.resets += 1
            elif d["type"] in (1, 2):
                side = self.asks if d["type"] == 1 else self.bids
                if d["volume"] == 0:
                    assert d["price"] in side, f"removal of a level never set: {d}"
                    del side[d["price"]]
                    self.removed += 1
                else:
                    side[d["price"]] = d["volume"]

    def check(self, levels: int = 10) -> None:
        assert len(self.bids) == levels and len(self.asks) == levels, (self.bids, self.asks)
        assert max(self.bids) < min(self.asks), "crossed book"


def depth_entries(hub, seconds: float, until=None) -> list[list[dict]]:
    recs = hub.records(seconds, until=until)
    return [r["arguments"][1] for r in invocations(recs, "GatewayDepth")]


def test_market_depth_is_a_book_with_levels_removals_and_a_reset(sim):
    depth, quotes = RawHub(sim, "market"), RawHub(sim, "market")
    book = BookClient()
    try:
        depth.send({"type": 1, "target": "SubscribeContractMarketDepth", "arguments": [sim.contract_id],
                    "invocationId": "d"})
        quotes.send({"type": 1, "target": "SubscribeContractQuotes", "arguments": [sim.contract_id],
                     "invocationId": "q"})
        # the live tape (speed 20): a Reset and the whole book first, then changes; never crossed
        frames = depth_entries(depth, 4)
        assert len(frames) > 5 and frames[0][0]["type"] == 6
        for f in frames:
            book.apply(f)
            book.check()
        assert book.resets == 1 and book.removed > 0
        quotes.records(2, until=lambda r: isinstance(r, dict) and r.get("invocationId") == "q")

        set_market(sim, 5000.00, 5000.25)           # pauses the tape: a jump far from the tape's prices
        for f in depth_entries(depth, 3, until=lambda r: isinstance(r, dict) and r.get("target") == "GatewayDepth"):
            book.apply(f)
        book.check()
        assert (max(book.bids), min(book.asks)) == (5000.00, 5000.25)
        assert sorted(book.asks)[:3] == [5000.25, 5000.50, 5000.75] and sorted(book.bids)[-2:] == [4999.75, 5000.0]

        set_market(sim, 5001.00, 5001.50)
        (upd,) = depth_entries(depth, 3, until=lambda r: isinstance(r, dict) and r.get("target") == "GatewayDepth")
        before = book.removed
        book.apply(upd)
        book.check()
        assert book.removed - before >= 4                 # 5000.25..5001.25 are asks no more
        assert [(d["type"], d["price"]) for d in upd if d["type"] in (3, 4)] == [(4, 5001.00), (3, 5001.50)]

        size = book.asks[5001.50]
        set_market(sim, 5001.00, 5001.50, last=5001.50)   # a 1-lot trade at the ask eats the level
        (upd,) = depth_entries(depth, 3, until=lambda r: isinstance(r, dict) and r.get("target") == "GatewayDepth")
        book.apply(upd)
        assert book.asks[5001.50] == max(1, size - 1) and [d["price"] for d in upd] == [5001.50]
        got = quotes.records(3, until=lambda r: isinstance(r, dict) and r.get("target") == "GatewayQuote")
        assert invocations(got, "GatewayQuote") and not invocations(got, "GatewayDepth")

        # a second subscriber gets a Reset and the same book at once
        late = RawHub(sim, "market")
        try:
            late.send({"type": 1, "target": "SubscribeContractMarketDepth", "arguments": [sim.contract_id],
                       "invocationId": "l"})
            (snap,) = depth_entries(late, 3, until=lambda r: isinstance(r, dict) and r.get("target") == "GatewayDepth")
            other = BookClient()
            other.apply(snap)
            assert snap[0]["type"] == 6 and (other.bids, other.asks) == (book.bids, book.asks)
        finally:
            late.close()

        depth.send({"type": 1, "target": "UnsubscribeContractMarketDepth", "arguments": [sim.contract_id],
                    "invocationId": "u"})
        depth.records(3, until=lambda r: isinstance(r, dict) and r.get("invocationId") == "u")
        set_market(sim, 5002.00)
        quotes.records(3, until=lambda r: isinstance(r, dict) and r.get("target") == "GatewayQuote")
        assert not invocations(depth.records(0.5), "GatewayDepth")     # unsubscribed: nothing more
        assert sim.state()["stats"]["subscribe_depth"] == 2
    finally:
        depth.close()
        quotes.close()
