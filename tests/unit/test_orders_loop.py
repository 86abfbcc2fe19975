"""The gateway's loop never waits on the broker: the real ServiceLoop, the real BrokerPool and
LoopRunner, the real CommandSocket on an ipc:// socket, against the scripted broker answering
4 s late, with a poll stuck in the only ordinary worker, a 5xx burst while placing protection.
Timing bounds here are safety properties (an operator's command is answered within 250 ms), not
speed figures; those are in tests/bench/bench_orders_faults.py."""
from __future__ import annotations

import threading
import time

import pytest

from common.bus import LazyPirateClient, ServiceLoop
from common.messages import OrderCommand, OrderReply
from services.orders import broker_io as IO
from services.orders.broker_io import BrokerPool, LoopRunner, Task
from services.orders.command_socket import CommandSocket
from tests.unit._scripted_broker import LIMIT, STOP
from tests.unit.test_orders_exits import C, Kit


class LoopKit(Kit):
    """The gateway on a ServiceLoop in a background thread, with a 2-worker pool (1 urgent)."""

    def __init__(self, tmp_path, **orders):
        super().__init__(tmp_path, **orders)
        self.loop = ServiceLoop("orders-test")
        self.pool = BrokerPool(workers=2, urgent_workers=1, name="test-broker")
        self.gw.runner = LoopRunner(self.pool, self.loop.call_soon_threadsafe)
        self.loop.every(0.01, self.gw.runner.tick)
        self.beats: list[float] = []
        self.loop.every(1.0, lambda: self.beats.append(time.monotonic()), first_in=0.0)
        self.loop.every(0.02, lambda: self.broker.deliver(self.gw))      # the hub
        self.endpoint = f"ipc://{tmp_path}/cmd.sock"
        self.sock = CommandSocket("orders", self.endpoint, lambda env: self.gw.handle(env.msg), 0.15,
                                  self.gw.command_answered_early).attach(self.loop)
        self.thread = threading.Thread(target=self.loop.run, daemon=True)
        self.thread.start()
        self.client = LazyPirateClient("test", self.endpoint, timeout_ms=2000, retries=0)

    def on_loop(self, fn):
        """Run fn on the loop's thread and wait for its result (the gateway is not thread-safe)."""
        box: list = []
        ev = threading.Event()

        def run():
            try:
                box.append(fn())
            finally:
                ev.set()
        self.loop.call_soon_threadsafe(run)
        assert ev.wait(5), "the loop did not run the call within 5 s"
        return box[0]

    def ask(self, key: str, action: str, **kw) -> tuple[OrderReply, float]:
        t0 = time.perf_counter()
        rep = self.client.request(OrderCommand(key, action, contract=C, **kw)).msg
        return rep, time.perf_counter() - t0

    def wait(self, cond, timeout: float, what: str):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            v = self.on_loop(cond)
            if v:
                return v
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def close(self):
        self.client.close()
        self.loop.stop("test over")
        self.thread.join(5)
        self.pool.stop(1.0)
        self.sock.close()
        self.journal.close()


@pytest.fixture
def lk(tmp_path):
    k = LoopKit(tmp_path)
    yield k
    k.close()


def test_commands_are_answered_at_once_while_rest_is_4s_late(lk):
    lk.broker.delay_s = 4.0
    rep, took = lk.ask("LE1", "enter", direction=1, size=1, stop_ticks=8, target_ticks=16)
    assert took < 0.25 and rep.ok and rep.status == "accepted" and rep.detail == {"pending": True, "key": "LE1"}
    # the same key again while it runs: the same answer, nothing sent twice
    rep2, took2 = lk.ask("LE1", "enter", direction=1, size=1, stop_ticks=8, target_ticks=16)
    assert took2 < 0.25 and rep2.status == "accepted"
    h, took_h = lk.ask("op-halt-1", "halt", reason="operator")
    assert took_h < 0.25 and h.status == "halted"
    s, took_s = lk.ask("op-status-1", "status")
    assert took_s < 0.25 and s.detail["halted"]
    # the outcome follows on the bus
    lk.wait(lambda: [m for m in lk.published if isinstance(m, OrderReply) and m.key == "LE1"], 15,
            "the entry's outcome published")
    assert len(lk.broker.by_tag("LE1:entry:")) == 1


def test_heartbeats_keep_their_cadence_through_a_broker_stall(lk):
    lk.broker.delay_s = 4.0
    lk.on_loop(lambda: lk.gw.spawn_once("periodic", lk.gw.periodic))
    lk.on_loop(lambda: lk.gw.spawn(lk.gw.reconcile(), "reconcile"))
    n = len(lk.beats)
    time.sleep(3.5)
    beats = lk.beats[n:]
    assert len(beats) >= 3, beats
    assert max(b - a for a, b in zip(beats, beats[1:])) < 1.5


def test_halt_drops_a_queued_entry(lk):
    """The only ordinary worker is stuck on a slow poll; an entry waits behind it; the halt drops
    it before it is sent."""
    lk.broker.delays["orders"] = 3.0
    lk.on_loop(lambda: lk.gw.spawn(lk.gw.reconcile(), "slow reconcile"))
    time.sleep(0.2)
    rep, _ = lk.ask("LE1", "enter", direction=1, size=1, stop_ticks=8, target_ticks=16)
    assert rep.status == "accepted" and rep.detail.get("pending")
    h, took = lk.ask("op-halt-1", "halt", reason="operator")
    assert took < 0.25 and h.status == "halted"
    lk.wait(lambda: [m for m in lk.published if isinstance(m, OrderReply) and m.key == "LE1"], 10,
            "the entry's outcome")
    [out] = [m for m in lk.published if isinstance(m, OrderReply) and m.key == "LE1"]
    assert not out.ok, out
    assert lk.broker.count("place_order") == 0


def test_protection_does_not_wait_behind_a_stuck_poll(lk):
    lk.on_loop(lambda: lk.gw.__setattr__("hub_reconciled", True))
    rep, _ = lk.ask("LE1", "enter", direction=1, size=1, stop_ticks=8, target_ticks=16)
    assert rep.ok
    lk.wait(lambda: len(lk.broker.working()) == 2, 5, "bracket")
    # the ordinary worker is now stuck for 4 s on a poll; a partial fill of more contracts must
    # still get its protection resized at once by the urgent worker
    lk.broker.delays["orders"] = 4.0
    lk.on_loop(lambda: lk.gw.spawn(lk.gw.reconcile(), "slow reconcile"))
    time.sleep(0.2)
    t0 = time.monotonic()
    lk.broker.fill(lk.broker.by_tag("LE1:stop:")[0]["id"])          # the stop fills: cancel the target
    lk.wait(lambda: lk.broker.working() == [], 3, "the other leg cancelled while the poll is stuck")
    assert time.monotonic() - t0 < 2.0
    assert lk.broker.violations == []


def test_5xx_burst_while_placing_protection(tmp_path):
    k = Kit(tmp_path)
    try:
        k.broker.before("place_order", lambda: None)            # the entry goes through
        k.broker.fail_5xx("place_order", 0)
        k.broker.market_fills = True
        rep = k.gw.handle(OrderCommand("LE1", "enter", contract=C, direction=1, size=1, stop_ticks=8,
                                       target_ticks=16))
        assert rep.ok
        k.broker.fail_5xx("place_order", 2)                    # the stop's first two tries: HTTP 503
        k.settle()
        stop = [o for o in k.broker.working() if o["type"] == STOP]
        assert len(stop) == 1 and len([o for o in k.broker.working() if o["type"] == LIMIT]) == 1
        assert k.broker.signed() == 1 and k.broker.violations == []
    finally:
        k.journal.close()


def test_flatten_goes_ahead_of_queued_work():
    pool = BrokerPool(workers=2, urgent_workers=1)
    order: list[str] = []
    gate = threading.Event()
    try:
        done = threading.Event()
        # block both workers
        pool.submit(IO.call(gate.wait, 5, prio=IO.POLL), lambda r, e: None)
        pool.submit(IO.call(gate.wait, 5, prio=IO.EXIT), lambda r, e: None)
        time.sleep(0.1)
        for name, prio in (("poll", IO.POLL), ("entry", IO.ENTRY), ("protect", IO.PROTECT), ("flatten", IO.FLATTEN)):
            pool.submit(IO.call(order.append, name, prio=prio), lambda r, e: None)
        assert pool.drop(IO.ENTRY, "flatten") == 1
        pool.submit(IO.call(done.set, prio=IO.POLL), lambda r, e: None)
        gate.set()
        assert done.wait(5)
        assert order[:2] == ["flatten", "protect"] and "entry" not in order
    finally:
        gate.set()
        pool.stop(1.0)


def test_a_call_past_its_deadline_is_not_sent():
    pool = BrokerPool(workers=1, urgent_workers=0)
    gate = threading.Event()
    got: list = []
    sent: list = []
    try:
        pool.submit(IO.call(gate.wait, 5, prio=IO.POLL), lambda r, e: None)
        time.sleep(0.1)                              # the worker is now inside the slow call
        pool.submit(IO.call(sent.append, 1, prio=IO.ENTRY, deadline_s=0.1), lambda r, e: got.append(e))
        time.sleep(0.3)
        gate.set()
        t0 = time.monotonic()
        while not got and time.monotonic() - t0 < 5:
            time.sleep(0.01)
        assert isinstance(got[0], IO.DeadlineExceeded) and sent == []
    finally:
        gate.set()
        pool.stop(1.0)


def test_inline_and_loop_runners_run_the_same_flow():
    def flow():
        a = yield IO.call(lambda: 2)
        yield IO.Sleep(0.01)
        try:
            yield IO.call(lambda: 1 / 0)
        except ZeroDivisionError:
            a += 1
        return a
    assert IO.InlineRunner().spawn(flow(), "f").result == 3
    loop = ServiceLoop("t")
    pool = BrokerPool(workers=2)
    r = LoopRunner(pool, loop.call_soon_threadsafe)
    loop.every(0.005, r.tick)
    try:
        task: Task = r.spawn(flow(), "f")
        end = time.monotonic() + 5
        while not task.done and time.monotonic() < end:
            loop.run_once(10)
        assert task.done and task.result == 3
    finally:
        pool.stop(1.0)


def test_5xx_on_the_stop_whose_order_exists_makes_no_second_stop(tmp_path):
    """The stop reached the broker but its answer was a 504: the same tag is sent again, the
    broker refuses it as used, and the gateway takes the existing order (no second stop)."""
    k = Kit(tmp_path)
    try:
        rep = k.gw.handle(OrderCommand("LE1", "enter", contract=C, direction=1, size=1, stop_ticks=8, target_ticks=16))
        assert rep.ok
        k.broker.lose_answers["place_order"] = 1          # the stop's answer is lost
        k.settle()
        stops = [o for o in k.broker.book.values() if o["type"] == STOP]
        assert len(stops) == 1 and stops[0]["status"] == 1 and stops[0]["customTag"] == "LE1:stop:0"
        assert k.gw.intents["LE1"].stop_oid == stops[0]["id"]
        assert k.broker.violations == []
    finally:
        k.journal.close()
