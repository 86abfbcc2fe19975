"""Reconciliation decisions when the broker disagrees: extra position, missing position, different size."""
from __future__ import annotations

from decimal import Decimal

from services.positions.reconcile import Mismatch, Reconciler, broker_positions, compare, fill_from_trade

MES = "CON.F.US.MES.H26"
MNQ = "CON.F.US.MNQ.H26"


def test_compare_kinds():
    assert compare({MES: 1}, {MES: 1}) == []
    assert compare({}, {MES: 2}) == [Mismatch(MES, "missing", 0, 2)]
    assert compare({MES: -1}, {}) == [Mismatch(MES, "extra", -1, 0)]
    assert compare({MES: 1}, {MES: 2}) == [Mismatch(MES, "size", 1, 2)]
    assert compare({MES: 1}, {MES: -1}) == [Mismatch(MES, "size", 1, -1)]
    assert compare({MES: 1, MNQ: 1}, {MNQ: 1}) == [Mismatch(MES, "extra", 1, 0)]
    assert "broker holds a position" in Mismatch(MES, "missing", 0, 2).text()


def test_forced_check_acts_at_once():
    r = Reconciler()
    d = r.decide({}, {MES: 2}, {11, 12}, forced=True)
    assert d.act and d.ingest == {11, 12} and r.active
    d = r.decide({MES: 2}, {MES: 2}, set(), forced=False)
    assert not d.act and d.resolved and not r.active
    d = r.decide({MES: 2}, {MES: 2}, set(), forced=False)
    assert not d.resolved                                     # cleared once, not twice


def test_a_fill_the_check_ingests_is_no_mismatch():
    """The keeper's last check at shutdown reads the gateway's flatten from Trade/search: keeper +2,
    broker flat and a sell 2 not yet applied is in step, not an alarm (a false alarm on every clean
    stop teaches the operator to ignore alarms)."""
    r = Reconciler()
    d = r.decide({MES: 2}, {}, {41}, forced=True, moves={41: (MES, -2)})
    assert not d.act and not d.mismatches and d.ingest == {41} and not r.active
    # a real mismatch still alarms: the unseen sell covers only one of the two
    d = Reconciler().decide({MES: 2}, {}, {41}, forced=True, moves={41: (MES, -1)})
    assert d.act and d.mismatches == [Mismatch(MES, "extra", 1, 0)]
    # a periodic check counts only the trades it ingests (seen twice)
    r = Reconciler()
    assert r.decide({MES: 2}, {}, {41}, forced=False, moves={41: (MES, -2)}).mismatches
    assert not r.decide({MES: 2}, {}, {41}, forced=False, moves={41: (MES, -2)}).mismatches


def test_periodic_check_needs_two_sightings():
    r = Reconciler()
    # a fill still on its way through the bus: seen once, gone the next time
    d = r.decide({}, {MES: 1}, {5}, forced=False)
    assert not d.act and d.ingest == set() and d.mismatches
    d = r.decide({MES: 1}, {MES: 1}, set(), forced=False)
    assert not d.act and not d.resolved and not r.active
    # a real one: the same disagreement twice
    for kind, ours, broker in (("extra", {MES: 1}, {}), ("missing", {}, {MES: 1}), ("size", {MES: 1}, {MES: 2})):
        r = Reconciler()
        assert not r.decide(ours, broker, set(), forced=False).act
        d = r.decide(ours, broker, set(), forced=False)
        assert d.act and d.mismatches[0].kind == kind and r.active and r.mismatches == 1


def test_unseen_trades_ingested_on_second_sighting():
    r = Reconciler()
    assert r.decide({}, {}, {1, 2}, forced=False).ingest == set()
    assert r.decide({}, {}, {2, 3}, forced=False).ingest == {2}
    assert r.decide({}, {}, {3}, forced=False).ingest == {3}


def test_broker_rows():
    rows = [{"contractId": MES, "type": 2, "size": 3, "averagePrice": 6050.125},
            {"contractId": MNQ, "type": 0, "size": 0, "averagePrice": 0}]
    assert broker_positions(rows) == {MES: (-3, Decimal("6050.125"))}
    trade = {"id": 7, "accountId": 1, "contractId": MES, "creationTimestamp": "2026-11-23T15:00:01.5Z",
             "price": 6050.25, "profitAndLoss": -12.5, "fees": 0.37, "side": 1, "size": 1, "voided": False,
             "orderId": 99}
    f = fill_from_trade(trade, {99: "LE1763910000:stop:0"})
    assert (f.trade_id, f.order_id, f.leg, f.side, f.size, f.price_ticks, f.fees_cents, f.pnl_cents) == \
        (7, 99, "stop", 1, 1, 24201, 37, -1250)
    assert f.signal_id == "LE1763910000" and f.intent_key == "LE1763910000"
    assert f.exch_ns % 1_000_000_000 == 500_000_000
    assert fill_from_trade({**trade, "voided": True}, {}) is None
    g = fill_from_trade({**trade, "profitAndLoss": None}, {99: "op-flatten-5:flatten:0"})
    assert g.leg == "flatten" and g.signal_id == "" and g.pnl_cents is None
    assert fill_from_trade(trade, {}).leg == "unknown"
    # live TopstepX also reports commissions: they count as fees, as the order gateway counts them
    assert fill_from_trade({**trade, "commissions": 0.25}, {}).fees_cents == 62
