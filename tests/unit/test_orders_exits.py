"""Exits are reduce-only and protection stays until the position is gone: the gateway against a
scripted broker (tests/unit/_scripted_broker.py) whose stop fills just before an exit, whose
legs both fill, whose cancels arrive after a fill, and which answers 429 in the middle of a
flatten. The broker records every invariant the gateway breaks (`violations`)."""
from __future__ import annotations

import pytest

from common.clock import EventClock
from common.config import Config
from common.messages import OrderCommand, RiskEvent
from common.topstepx.rest import parse_time
from common.session import SessionCalendar
from common.topstepx.rest import RateLimited
from services.orders.config import OrdersConfig
from services.orders.gateway import Gateway
from services.orders.journal import Journal
from tests.unit._scripted_broker import ACCT, LIMIT, STOP, ScriptedBroker

C = "CON.F.US.MES.H26"


class Kit:
    def __init__(self, tmp_path, **orders):
        self.cfg = Config()
        self.sect = OrdersConfig(**{"flat_verify_s": 0.5, "lookup_timeout_s": 0.5, "user_hub": False, **orders})
        self.broker = ScriptedBroker(C)
        self.published: list = []
        self.journal = Journal(tmp_path / "orders.sqlite")
        self.gw = Gateway(self.cfg, self.sect, self.broker, self.journal, ACCT,
                          lambda msg, key=None, forget=False: self.published.append(msg), EventClock(0),
                          SessionCalendar.from_config(self.cfg.trading))
        assert self.flow(self.gw.reconcile(initial=True))

    def flow(self, gen):
        """Run one of the gateway's flows to its end (the InlineRunner: broker calls in this thread)."""
        task = self.gw.spawn(gen, "test")
        assert task.done and task.error is None, task.error
        return task.result

    def cmd(self, key: str, action: str, **kw):
        rep = self.gw.handle(OrderCommand(key, action, contract=C, **kw))
        self.settle()
        return rep

    def settle(self) -> None:
        """Let the hub events in, as the loop would between callbacks."""
        for _ in range(20):
            if not self.broker.deliver(self.gw):
                return

    def enter(self, key="LE1", direction=1, size=2):
        rep = self.cmd(key, "enter", direction=direction, size=size, stop_ticks=8, target_ticks=16)
        assert rep.ok and rep.status == "accepted", rep
        assert self.broker.signed() == direction * size
        return rep

    def leg(self, name: str) -> dict:
        [o] = [o for o in self.broker.working() if (o.get("customTag") or "").split(":")[1:2] == [name]]
        return o

    def risks(self, kind: str) -> list[RiskEvent]:
        return [m for m in self.published if isinstance(m, RiskEvent) and m.kind == kind and m.active]


@pytest.fixture
def kit(tmp_path):
    k = Kit(tmp_path)
    yield k
    k.journal.close()


def test_entry_is_protected_at_the_broker(kit):
    kit.enter(size=2)
    stop, target = kit.leg("stop"), kit.leg("target")
    assert (stop["type"], stop["side"], stop["size"]) == (STOP, 1, 2)
    assert (target["type"], target["side"], target["size"]) == (LIMIT, 1, 2)
    assert kit.broker.violations == []


def test_stop_filled_just_before_the_exit_command_opens_nothing(kit):
    """The issue's first bug: the broker is flat, the gateway's cache still says long 2."""
    kit.enter(size=2)
    kit.broker.fill(kit.leg("stop")["id"])          # the gateway has not seen this yet
    assert kit.broker.signed() == 0
    rep = kit.cmd("XL1", "exit")
    assert rep.ok and rep.status == "flat", rep
    assert kit.broker.signed() == 0
    assert kit.broker.working() == []               # the target is gone too
    assert [c for c in kit.broker.calls if c[0] == "place_order" and c[1][4] and ":exit:" in c[1][4]] == []
    assert kit.broker.violations == []


def test_stop_fills_between_the_position_read_and_the_close(kit):
    """closeContract closes what the broker holds: refused when flat, never a new position."""
    kit.enter(size=2)
    kit.broker.before("close_contract", lambda: kit.broker.fill(kit.leg("stop")["id"]))
    rep = kit.cmd("XL1", "exit")
    assert rep.ok and rep.status == "flat", rep
    assert kit.broker.signed() == 0 and kit.broker.working() == []
    assert kit.broker.violations == []


def test_exit_closes_first_and_cancels_the_legs_after_flat(kit):
    kit.enter(size=2)
    order = []
    kit.broker.before("close_contract", lambda: order.append(("close", len(kit.broker.working()))))
    rep = kit.cmd("XL1", "exit")
    assert rep.ok and rep.status == "flat" and rep.message == "closed", rep
    assert order == [("close", 2)]                   # both legs still working when the close went out
    assert kit.broker.signed() == 0 and kit.broker.working() == []
    fills = [m for m in kit.published if type(m).__name__ == "Fill"]
    assert fills[-1].leg == "exit" and fills[-1].intent_key == "XL1"   # the untagged close order is ours
    assert kit.broker.violations == []


def test_target_cancel_failure_after_the_close_leaves_nothing_unprotected(kit):
    """The issue's second bug: the cancel of a leg fails. Now the position is already closed and
    the leg is retried until it is gone; the stop was never removed from an open position."""
    kit.enter(size=2)
    kit.broker.fail_5xx("cancel_order", 6)
    rep = kit.cmd("XL1", "exit")
    assert rep.ok and kit.broker.signed() == 0, rep
    assert kit.gw.stale_legs                           # left for the retry
    for _ in range(5):
        kit.flow(kit.gw.periodic())
        kit.settle()
    assert kit.broker.working() == [] and not kit.gw.stale_legs
    assert kit.broker.violations == []


def test_close_failing_keeps_the_stop(kit):
    kit.enter(size=2)
    kit.broker.fail_429("close_contract", 10)
    rep = kit.cmd("XL1", "exit")
    assert not rep.ok and "protection left in place" in rep.message, rep
    assert kit.broker.signed() == 2
    assert {o["type"] for o in kit.broker.working()} == {STOP, LIMIT}
    assert kit.broker.violations == []


def test_429s_in_the_middle_of_a_flatten(kit):
    kit.enter(size=2)
    kit.broker.fail_429("close_contract", 1)
    kit.broker.fail_429("open_positions", 4)
    kit.broker.fail(
        "cancel_order", RateLimited("/api/Order/cancel: HTTP 429 rate limited"), 1)
    rep = kit.cmd("op-flatten-1", "flatten", reason="operator")
    kit.flow(kit.gw.periodic())
    kit.settle()
    assert rep.ok and rep.status == "flat", rep
    assert kit.broker.signed() == 0 and kit.broker.working() == []
    assert kit.broker.violations == []


def test_both_legs_fill_is_an_overfill(kit):
    kit.enter(size=1)
    stop, target = kit.leg("stop"), kit.leg("target")
    kit.broker.fill(target["id"])
    kit.broker.fill(stop["id"])                     # both, before the gateway saw either
    assert kit.broker.signed() == 1 * -1
    kit.settle()
    assert kit.broker.signed() == 0, "the excess is closed at once"
    assert kit.risks("overfill") and kit.risks("overfill")[0].severity == "ERROR"
    assert kit.gw.halted
    assert kit.cmd("LE2", "enter", direction=1, size=1).status == "halted"
    assert kit.broker.violations == []


def test_fill_after_the_cancel_was_sent(kit):
    """The position is closed; the stop fills while its cancel is on the way: short 2 opens."""
    kit.enter(size=2)
    stop_id = kit.leg("stop")["id"]

    def stop_fills_first():
        if kit.broker.book[stop_id]["status"] == 1:
            kit.broker.fill(stop_id)
    kit.broker.before("cancel_order", stop_fills_first)
    rep = kit.cmd("XL1", "exit")
    assert rep.ok, rep
    kit.settle()
    assert kit.broker.signed() == 0
    assert kit.risks("overfill") and kit.gw.halted
    assert kit.broker.working() == []


def test_entry_overfill_closes_only_the_excess(kit):
    kit.broker.market_fills = False
    rep = kit.cmd("LE1", "enter", direction=1, size=1, stop_ticks=8, target_ticks=16)
    assert rep.ok
    [entry] = kit.broker.by_tag("LE1:entry:")
    kit.broker.market_fills = True
    kit.broker.book[entry["id"]]["size"] = 3       # the broker fills more than was asked
    kit.broker.fill(entry["id"], size=3)
    kit.settle()
    assert kit.broker.signed() == 1
    assert ("partial_close_contract", (C, 2)) in kit.broker.calls
    assert kit.risks("overfill") and kit.gw.halted
    assert kit.leg("stop")["size"] == 1
    assert kit.broker.violations == []


# --------------------------------------------------------------------------
# native Auto-OCO brackets, with the fallback
# --------------------------------------------------------------------------

def test_native_brackets_where_the_account_has_them(kit):
    kit.broker.auto_oco = True
    kit.enter("LE1", direction=1, size=1)
    sl, tp = kit.broker.by_tag("LE1:entry:0-SL")[0], kit.broker.by_tag("LE1:entry:0-TP")[0]
    assert sl["status"] == 1 and sl["stopPrice"] == 6048.0 and tp["limitPrice"] == 6054.0
    assert len(kit.broker.working()) == 2                          # no client-side stop/target besides
    it = kit.gw.intents["LE1"]
    assert it.native and (it.stop_oid, it.target_oid) == (sl["id"], tp["id"])
    assert kit.gw.native_brackets is True and kit.journal.get("native_brackets") is True
    kit.broker.fill(sl["id"])                                      # the broker cancels the sibling itself
    kit.settle()
    assert kit.broker.signed() == 0 and kit.broker.working() == [] and "LE1" not in kit.gw.intents
    assert kit.broker.violations == [] and not kit.risks("overfill")


def test_position_brackets_refusal_falls_back_to_client_side_oco(kit):
    kit.broker.auto_oco = False
    kit.enter("LE1", direction=-1, size=1)
    assert [o["customTag"] for o in kit.broker.by_tag("LE1:entry:")] == ["LE1:entry:0"]   # the same tag, once
    assert {o["type"] for o in kit.broker.working()} == {STOP, LIMIT}
    assert kit.gw.native_brackets is False and kit.journal.get("native_brackets") is False
    n = kit.broker.count("place_order")
    kit.cmd("XL1", "exit")
    kit.enter("LE2", direction=1, size=1)                           # no second try of a bracket
    assert kit.broker.count("place_order") == n + 3


def test_status_reports_the_broker_view(kit):
    kit.enter("LE1", direction=1, size=2)
    st = kit.gw.handle(OrderCommand("s1", "status", contract=C))
    assert st.ok and st.detail["position"] == {"contract": C, "direction": 1, "size": 2}
    assert {o["leg"] for o in st.detail["working_orders"]} == {"stop", "target"} and st.detail["in_flight"] == []
    assert "day_pnl_cents" in st.detail


def test_a_close_with_an_unknown_outcome_is_sent_again(kit):
    """closeContract answered 503 (done or not, nobody knows): sent again, it closes what is left
    or is refused as flat; either way the exit ends flat, the stop removed only after."""
    kit.enter(size=2)
    kit.broker.lose_answers["close_contract"] = 1          # done at the broker, answer lost
    rep = kit.cmd("XL1", "exit")
    assert rep.ok and rep.status == "flat", rep
    assert kit.broker.signed() == 0 and kit.broker.working() == [] and kit.broker.violations == []
    kit.enter("LE2", size=1)
    kit.broker.fail_5xx("close_contract", 2)                # not done at all, twice
    rep = kit.cmd("XL2", "exit")
    assert rep.ok and kit.broker.signed() == 0 and kit.broker.count("close_contract") == 2 + 3


def test_an_entry_is_one_intent_write_and_a_refusal_is_remembered_by_its_key(kit):
    writes = []                                                   # (broker calls so far, statement)
    kit.journal.db.set_trace_callback(lambda sql: writes.append((kit.broker.count("place_order"), sql))
                                      if "intents" in sql and "'LE1'" in sql else None)
    kit.enter("LE1", size=1)
    before_send = [sql for n, sql in writes if n == 0]
    assert len(before_send) == 1 and "'placing'" in before_send[0]   # no "new" row first, then the intent
    placed = kit.broker.count("place_order")
    kit.gw.set_halt("test", "manual")
    rep = kit.cmd("LE2", "enter", direction=1, size=1)
    assert rep.status == "halted"
    kit.gw.clear_halt()
    again = kit.cmd("LE2", "enter", direction=1, size=1)          # the same key: the same answer, no order
    assert (again.ok, again.status) == (False, "halted") and kit.broker.count("place_order") == placed
    assert Journal(kit.journal.path).intent("LE2")["reply"]["status"] == "halted"


def test_a_poll_asks_only_for_what_is_new_but_reaches_back_to_every_live_order(kit):
    kit.enter(size=1)
    stop = kit.leg("stop")
    assert kit.flow(kit.gw.reconcile())                       # the newest records are known from here
    for _ in range(30):                                       # a busy day: many orders since the stop
        kit.broker.stamp()
    kit.broker.searches.clear()
    assert kit.flow(kit.gw.reconcile())
    (_, o_since), (_, t_since) = kit.broker.searches
    stop_s = parse_time(stop["creationTimestamp"]) / 1e9
    assert o_since <= stop_s and o_since > 0                  # windowed, and the live stop is in it
    newest_trade = max(parse_time(t["creationTimestamp"]) for t in kit.broker.fills) / 1e9
    assert t_since == newest_trade - 60
    assert kit.gw.stats["reconciles_windowed"] == 2
    kit.gw.next_full = 0.0                                    # every FULL_EVERY_S the whole session again
    kit.broker.searches.clear()
    assert kit.flow(kit.gw.reconcile())
    assert [s for _, s in kit.broker.searches] == [0.0, 0.0] and kit.gw.stats["reconciles_full"] >= 2


def test_a_windowed_poll_that_sees_a_stop_missing_repairs_only_after_a_full_one_sees_it_too(kit):
    kit.enter(size=1)
    stop = kit.leg("stop")
    kit.broker.book[stop["id"]]["status"] = 3                 # cancelled at the broker, no event
    kit.gw.busy_until.clear()                                 # (just protected: the check waits 3 s)
    placed = kit.broker.count("place_order")
    assert kit.flow(kit.gw.reconcile()) and kit.gw.want_full  # windowed: seen, not repaired
    assert kit.broker.count("place_order") == placed and kit.gw.stats["reconciles_windowed"] == 1
    assert kit.flow(kit.gw.reconcile())                       # full: seen again, repaired
    assert kit.broker.count("place_order") == placed + 1 and not kit.gw.want_full
    assert [o for o in kit.broker.working() if (o.get("customTag") or "").split(":")[1:2] == ["stop"]]


def test_an_unreadable_creation_time_costs_a_full_search_not_an_order(kit):
    kit.enter(size=1)
    stop = kit.leg("stop")
    assert kit.flow(kit.gw.reconcile())
    kit.broker.book[stop["id"]]["creationTimestamp"] = "yesterday-ish"
    kit.gw.book.get(stop["id"]).created_ns = 0           # as if first reported so
    kit.gw.on_order(dict(kit.broker.book[stop["id"]]))   # no exception on the hub's thread of work
    kit.broker.searches.clear()
    assert kit.flow(kit.gw.reconcile())
    assert [s for _, s in kit.broker.searches] == [0.0, 0.0]      # the whole session
    assert kit.gw.book.get(stop["id"]).working
