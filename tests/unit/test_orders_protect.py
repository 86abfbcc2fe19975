"""Protection after an entry fill: the stop and the target are journaled together (one commit,
before either is sent) and then sent side by side; a stop that cannot be placed still ends in a
close, with the target sent meanwhile cancelled once flat. The scripted broker of
tests/unit/_scripted_broker.py; the real LoopRunner and BrokerPool where timing matters."""
from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from common.bus import ServiceLoop
from common.topstepx.rest import BrokerError
from services.orders import broker_io as IO
from services.orders.broker_io import BrokerPool, Join, LoopRunner, Task
from services.orders.journal import Journal
from tests.unit._scripted_broker import LIMIT, STOP
from tests.unit.test_orders_exits import Kit
from tests.unit.test_orders_loop import LoopKit


def test_join_waits_for_flows_spawned_side_by_side():
    """Two calls of 0.2 s each, spawned then joined, take 0.2 s, not 0.4, on the LoopRunner;
    the InlineRunner runs the same flow (its children are done before the join)."""
    def child(n):
        yield IO.call(time.sleep, 0.2, prio=IO.PROTECT)
        return n

    def parent(runner):
        tasks = [runner.spawn(child(n), f"child {n}") for n in (1, 2)]
        yield Join(tasks)
        return [t.result for t in tasks]

    inline = IO.InlineRunner()
    assert inline.spawn(parent(inline), "p").result == [1, 2]
    loop = ServiceLoop("t")
    pool = BrokerPool(workers=2, urgent_workers=1)
    runner = LoopRunner(pool, loop.call_soon_threadsafe)
    try:
        t0 = time.monotonic()
        task: Task = runner.spawn(parent(runner), "p")
        while not task.done and time.monotonic() - t0 < 5:
            loop.run_once(10)
        assert task.done and task.error is None and task.result == [1, 2]
        assert time.monotonic() - t0 < 0.35
        # joining finished tasks (or none) resumes at once
        done = runner.spawn(parent_of_done(runner), "q")
        assert done.done and done.result == "ok"
    finally:
        pool.stop(1.0)


def parent_of_done(runner):
    t = runner.spawn(iter(()), "empty")          # a flow that ends at once
    yield Join([t])
    yield Join([])
    return "ok"


def test_journal_transaction_commits_once_nests_and_rolls_back(tmp_path):
    j = Journal(tmp_path / "j.sqlite")
    other = sqlite3.connect(str(tmp_path / "j.sqlite"))
    try:
        with j.transaction():
            j.put_order("K:stop:0", "K", "stop", 0, {})
            with j.transaction():                       # joins the open one
                j.put_order("K:target:0", "K", "target", 0, {})
            assert other.execute("SELECT COUNT(*) FROM orders").fetchone()[0] == 0    # not committed yet
        assert other.execute("SELECT COUNT(*) FROM orders").fetchone()[0] == 2
        with pytest.raises(RuntimeError):
            with j.transaction():
                j.put_order("K:stop:1", "K", "stop", 1, {})
                raise RuntimeError("boom")
        assert [o["tag"] for o in j.orders()] == ["K:stop:0", "K:target:0"] and not j.db.in_transaction
        j.put_intent("K", "enter", "placing", {"a": 1})
        j.set_intent("K", state="open", data={"a": 2})    # one statement
        assert j.intent("K")["state"] == "open" and j.intent("K")["data"] == {"a": 2}
    finally:
        other.close()
        j.close()



@pytest.fixture
def kit(tmp_path):
    """A gateway on a scripted broker, its journal closed after the test."""
    k = Kit(tmp_path)
    yield k
    k.journal.close()


def test_both_legs_are_committed_before_the_stop_is_sent(kit, tmp_path):
    k = kit
    k.broker.market_fills = False
    k.cmd("LE1", "enter", direction=1, size=1, stop_ticks=8, target_ticks=16)
    seen: list[set] = []

    def look():        # another connection: only what is committed
        with sqlite3.connect(str(tmp_path / "orders.sqlite")) as db:
            seen.append({r[0] for r in db.execute("SELECT tag FROM orders")})
    k.broker.before("place_order", look)
    k.broker.fill(k.broker.by_tag("LE1:entry:0")[0]["id"])
    k.settle()
    assert seen and {"LE1:stop:0", "LE1:target:0"} <= seen[0]
    assert {o["type"] for o in k.broker.working()} == {STOP, LIMIT} and k.broker.violations == []


def test_a_refused_stop_closes_the_position_and_cancels_the_target_sent_beside_it(kit):
    k = kit
    k.broker.market_fills = False
    k.cmd("LE1", "enter", direction=1, size=1, stop_ticks=8, target_ticks=16)
    k.broker.market_fills = True                    # (the close fills)
    k.broker.fail("place_order", BrokerError("/api/Order/place", 2, "stop refused", {}))   # the stop only
    k.broker.fill(k.broker.by_tag("LE1:entry:0")[0]["id"])
    k.settle()
    assert k.risks("protection_failed")
    assert k.broker.signed() == 0 and k.broker.working() == []
    assert len(k.broker.by_tag("LE1:target:")) == 1 and len(k.broker.by_tag("LE1:stop:")) == 0
    assert k.broker.violations == []


def test_stop_and_target_are_on_the_wire_at_once(tmp_path):
    """Each placement answers 0.4 s late: both legs are working 0.4 s after the fill, not 0.8."""
    lk = LoopKit(tmp_path)
    try:
        lk.on_loop(lambda: lk.gw.__setattr__("hub_reconciled", True))
        lk.broker.market_fills = False
        rep, _ = lk.ask("LE1", "enter", direction=1, size=1, stop_ticks=8, target_ticks=16)
        assert rep.ok
        lk.broker.delays["place_order"] = 0.4
        t0 = time.monotonic()
        lk.broker.fill(lk.broker.by_tag("LE1:entry:0")[0]["id"])
        lk.wait(lambda: len(lk.broker.working()) == 2, 5, "both legs working")
        took = time.monotonic() - t0
        assert took < 0.75, took
        lk.wait(lambda: lk.gw.intents["LE1"].stop_oid and lk.gw.intents["LE1"].target_oid, 2, "both acks")
        assert len(lk.broker.by_tag("LE1:stop:")) == 1 and len(lk.broker.by_tag("LE1:target:")) == 1
        assert lk.broker.violations == []
    finally:
        lk.close()


def test_join_resumes_on_the_loop_thread(tmp_path):
    """The flow after a Join runs where every flow runs (the gateway has no locks)."""
    loop = ServiceLoop("t")
    pool = BrokerPool(workers=2, urgent_workers=1)
    runner = LoopRunner(pool, loop.call_soon_threadsafe)
    where: list = []

    def parent():
        tasks = [runner.spawn(one(), "a"), runner.spawn(one(), "b")]
        yield Join(tasks)
        where.append(threading.current_thread())

    def one():
        yield IO.call(time.sleep, 0.05)
    try:
        task = runner.spawn(parent(), "p")
        end = time.monotonic() + 5
        while not task.done and time.monotonic() < end:
            loop.run_once(10)
        assert task.done and where == [threading.main_thread()]
    finally:
        pool.stop(1.0)


def test_the_stop_goes_out_before_the_fill_is_logged_and_published(tmp_path):
    """Fill and intent are journaled together, then protection starts; the fill's log line and
    its publish come after (inline, the stop is even acknowledged before the Fill is published)."""
    from common.messages import Fill
    k = Kit(tmp_path)
    try:
        k.broker.market_fills = False
        k.cmd("LE1", "enter", direction=1, size=1, stop_ticks=8, target_ticks=16)
        published_at_stop: list[int] = []
        k.broker.before("place_order", lambda: published_at_stop.append(
            sum(isinstance(m, Fill) for m in k.published)))
        k.broker.fill(k.broker.by_tag("LE1:entry:0")[0]["id"])
        k.settle()
        assert published_at_stop == [0]
        assert [m.leg for m in k.published if isinstance(m, Fill)] == ["entry"]
        it = k.journal.intent("LE1")
        assert it["state"] == "open" and it["data"]["filled"] == 1 and k.journal.fill_ids()
    finally:
        k.journal.close()


def test_no_wal_checkpoint_while_a_flow_waits_on_the_broker(tmp_path):
    """The loop polls as idle while a stop is in flight; the checkpoint waits for a real idle."""
    class Hot:
        def add_idle_task(self, fn, every_s):
            self.fn = fn
    j = Journal(tmp_path / "j.sqlite")
    hot, busy = Hot(), [True]
    done: list = []
    j.checkpoint = lambda: done.append(1)
    try:
        j.checkpoint_when_idle(hot, busy=lambda: busy[0])
        hot.fn()
        assert done == []
        busy[0] = False
        hot.fn()
        assert done == [1]
    finally:
        del j.checkpoint
        j.close()


class Commits:
    """Counts the journal's write transactions (an explicit BEGIN..COMMIT, or one autocommitted
    write) from the gateway's own connection, until `stop()`."""

    def __init__(self, journal: Journal):
        self.n, self.open, self.on = 0, False, True
        self.journal = journal
        journal.db.set_trace_callback(self.saw)

    def saw(self, sql: str) -> None:
        word = sql.strip().split(None, 1)[0].upper()
        if not self.on:
            return
        if word == "BEGIN":
            self.n, self.open = self.n + 1, True
        elif word in ("COMMIT", "ROLLBACK"):
            self.open = False
        elif word in ("INSERT", "UPDATE", "DELETE") and not self.open:
            self.n += 1

    def stop(self) -> None:
        self.on = False


def test_an_entry_command_is_one_commit_before_its_order_goes_out(kit, tmp_path):
    k = kit
    k.gw.native_brackets = False                         # (no native-bracket try first)
    commits = Commits(k.journal)
    seen: list = []

    def at_send():
        commits.stop()
        with sqlite3.connect(str(tmp_path / "orders.sqlite")) as db:
            seen.append((db.execute("SELECT state FROM intents WHERE key='LE1'").fetchone(),
                         [r[0] for r in db.execute("SELECT tag FROM orders")]))
    k.broker.before("place_order", at_send)
    rep = k.cmd("LE1", "enter", direction=1, size=1, stop_ticks=8, target_ticks=16)
    assert rep.ok and rep.status == "accepted"
    assert commits.n == 1, commits.n
    assert seen == [(("placing",), ["LE1:entry:0"])]
    assert k.journal.intent("LE1")["reply"]["status"] == "accepted"


def test_a_refused_entry_is_answered_and_journaled(kit):
    k = kit
    k.cmd("op-halt", "halt", reason="test")
    rep = k.cmd("LE1", "enter", direction=1, size=1, stop_ticks=8, target_ticks=16)
    assert not rep.ok and rep.status == "halted"
    assert k.journal.intent("LE1")["reply"]["status"] == "halted" and not k.journal.db.in_transaction
    assert k.cmd("LE1", "enter", direction=1, size=1, stop_ticks=8, target_ticks=16) == rep    # idempotent
    assert k.broker.count("place_order") == 0
    assert k.journal.intent("op-halt")["state"] == "done"


def test_a_fill_is_two_commits_before_its_stop_goes_out(kit):
    """The fill with its intent, then the stop's and the target's rows."""
    k = kit
    k.gw.native_brackets = False
    k.broker.market_fills = False
    k.cmd("LE1", "enter", direction=1, size=1, stop_ticks=8, target_ticks=16)
    k.settle()
    commits = Commits(k.journal)
    k.broker.before("place_order", commits.stop)
    k.broker.fill(k.broker.by_tag("LE1:entry:0")[0]["id"])
    k.settle()
    assert commits.n == 2, commits.n
    assert {o["type"] for o in k.broker.working()} == {STOP, LIMIT}


def test_as_record_is_asdict_for_the_journal_s_plain_dataclasses():
    import dataclasses

    from common.messages import Fill, OrderCommand, OrderReply
    from services.orders.journal import as_record
    from services.orders.states import Intent, IntentState
    for obj in (OrderCommand("LE1", "enter", "C", 1, 2, 8, 16, "LE1", "m1"),
                OrderReply("LE1", True, "accepted", "", {"order_id": 5}),
                Fill(1, 2, "C", "entry", 0, 1, 24200, 37, None, 123, intent_key="LE1")):
        assert as_record(obj) == dataclasses.asdict(obj)
    it = Intent("LE1", "C", 1, 2, 8, 16, state=IntentState.OPEN, filled=2, stop_oid=7)
    assert it.as_dict() == {**dataclasses.asdict(it), "state": "open"}
    assert Intent.from_dict(it.as_dict()) == it
