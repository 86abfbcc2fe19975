"""The gateway forgets finished orders and old trade ids (Gateway.trim_memory), and still knows a
late event for one of them as its own: the journal keeps the full record."""
from __future__ import annotations

import time

from common import broker_codes as codes
from common.messages import Fill, OrderEvent
from tests.unit._scripted_broker import ACCT
from tests.unit.test_orders_exits import C, kit  # noqa: F401  (the fixture)


def round_trip(kit):  # noqa: F811
    kit.enter("LE1", size=1)
    stop = kit.leg("stop")
    rep = kit.cmd("XL1", "exit")
    assert rep.ok and kit.broker.working() == [], rep
    kit.gw.trim_memory(time.monotonic() + 3600, force=True)     # long after the window
    return stop


def test_a_finished_round_trip_leaves_the_book(kit):  # noqa: F811
    round_trip(kit)
    assert len(kit.gw.book) == 0 and kit.gw.book.pruned_total >= 4     # entry, stop, target, the close
    assert kit.gw.next_attempt("LE1", "stop") == 1                      # attempt 0 is in the journal
    assert kit.gw.next_attempt("XL1", "exit") == 1


def test_a_repeated_report_of_a_pruned_order_is_ignored(kit):  # noqa: F811
    stop = round_trip(kit)
    kit.published.clear()
    kit.gw.on_order({**kit.broker.book[stop["id"]]})                    # Cancelled, as it ended
    kit.flow(kit.gw.reconcile())
    assert [m for m in kit.published if isinstance(m, OrderEvent)] == []
    assert len(kit.gw.book) == 0


def test_a_late_fill_of_a_pruned_stop_is_still_ours(kit):  # noqa: F811
    stop = round_trip(kit)
    kit.published.clear()
    late = {**kit.broker.book[stop["id"]], "status": codes.FILLED, "fillVolume": 1}
    kit.gw.on_order(late)                                               # filled after its cancel: counts
    [ev] = [m for m in kit.published if isinstance(m, OrderEvent)]
    assert (ev.order_id, ev.leg, ev.status, ev.intent_key) == (stop["id"], "stop", codes.FILLED, "LE1")
    kit.gw.trim_memory(time.monotonic() + 7200, force=True)
    kit.gw.on_trade({"id": 990001, "accountId": ACCT, "contractId": C, "creationTimestamp": "2026-11-23T15:00:00Z",
                     "price": 6048.0, "profitAndLoss": None, "fees": 0.37, "side": stop["side"], "size": 1,
                     "voided": False, "orderId": stop["id"]})
    [fill] = [m for m in kit.published if isinstance(m, Fill)]
    assert (fill.leg, fill.intent_key) == ("stop", "LE1")
    assert kit.risks("overfill")                                        # a stop filled on a closed position


def test_a_trade_forgotten_from_memory_is_not_counted_twice(kit):  # noqa: F811
    kit.enter("LE1", size=1)
    [tid] = list(kit.gw.seen_trades)
    raw = next(t for t in kit.broker.fills if t["id"] == tid)
    kit.gw.seen_trades.clear()                                          # as after two trading days
    kit.published.clear()
    pnl = dict(kit.gw.day_pnl)
    kit.gw.on_trade(dict(raw))
    assert [m for m in kit.published if isinstance(m, Fill)] == [] and kit.gw.day_pnl == pnl


def test_seen_trades_keep_the_latest_two_days(kit):  # noqa: F811
    kit.gw.seen_trades.update({1: "2026-11-20", 2: "2026-11-23", 3: "2026-11-24", 4: "2026-11-24"})
    kit.gw.day_pnl.update({"2026-11-19": 1, "2026-11-20": 2, "2026-11-23": 3, "2026-11-24": 4})
    kit.gw.trim_memory(force=True)
    assert kit.gw.seen_trades == {2: "2026-11-23", 3: "2026-11-24", 4: "2026-11-24"}
    assert sorted(kit.gw.day_pnl) == ["2026-11-20", "2026-11-23", "2026-11-24"]


def test_a_pruned_order_past_the_note_is_read_from_the_journal_not_brought_back(kit):  # noqa: F811
    kit.gw.book.remember = 0                                            # every note evicted at once
    stop = round_trip(kit)
    kit.published.clear()
    kit.flow(kit.gw.reconcile())                                        # the session's orders again
    assert [m for m in kit.published if isinstance(m, OrderEvent)] == [] and len(kit.gw.book) == 0
    kit.gw.on_order({**kit.broker.book[stop["id"]], "status": codes.FILLED, "fillVolume": 1})
    [ev] = [m for m in kit.published if isinstance(m, OrderEvent)]
    assert (ev.order_id, ev.leg, ev.status) == (stop["id"], "stop", codes.FILLED)


def test_a_poll_does_not_convert_what_it_already_knows(kit, monkeypatch):  # noqa: F811
    """A poll lists the session's every order and trade; the known, unchanged ones are skipped
    before the broker record is converted (it cost the loop ~8 us each, milliseconds a poll)."""
    round_trip(kit)
    kit.flow(kit.gw.reconcile())                     # notes every pruned order's final status
    from services.orders import events
    converted = []
    for name in ("OrderUpdate", "TradeUpdate"):
        cls = getattr(events, name)
        original = cls.of

        def counted(_cls, raw, original=original):
            converted.append(raw)
            return original(raw)
        monkeypatch.setattr(cls, "of", classmethod(counted))
    kit.flow(kit.gw.reconcile())
    assert converted == []
    assert len(kit.gw.book) == 0
