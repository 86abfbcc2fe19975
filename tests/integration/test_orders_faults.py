"""Order gateway fault drills against the simulator (real processes, no fakes): rejects, margin,
429 storms, a placement timeout whose order exists, the user hub dropped mid-trade, kill -9 and
restart, the daily loss halt, SIGTERM with an open position."""
from __future__ import annotations

import pytest

from tests.harness.sim import SimProcess
from tests.integration.orders_helpers import Gw, by_leg, closes, positions, price, protected, wait_for, working

pytestmark = pytest.mark.integration


@pytest.fixture
def sim(tmp_path):
    with SimProcess(tmp_path / "sim", speed=1.0) as s:
        yield s


def tagged(sim, prefix: str) -> list[dict]:
    return [o for o in sim.state()["orders"] if (o.get("customTag") or "").startswith(prefix)]


@pytest.fixture
def gw(tmp_path, sim):
    g = Gw(tmp_path, sim, api={"order_timeout_s": 1.0}).start()
    yield g
    g.stop()


def test_reject_is_not_retried(gw, sim):
    price(sim, "6050.00")
    sim.control("reject_orders", count=1, code=2, message="Order rejected (test)")
    rep = gw.enter("LE5000")
    assert not rep.ok and rep.status == "rejected" and rep.detail["code"] == 2, rep
    assert len(tagged(sim, "LE5000:")) == 1 and tagged(sim, "LE5000:")[0]["status"] == 5
    assert not positions(sim)
    # the key keeps its answer; the engine may send a new signal
    assert gw.enter("LE5000").status == "rejected"
    assert gw.enter("LE5001").status == "accepted"


def test_insufficient_margin_reduces_size(gw, sim):
    price(sim, "6050.00")
    sim.control("reject_orders", count=1, code=3, message="Insufficient funds")
    rep = gw.enter("LE5100", size=2)
    assert rep.ok and rep.status == "accepted" and rep.detail["size"] == 1, rep
    entries = tagged(sim, "LE5100:entry:")
    assert [(o["customTag"], o["size"], o["status"]) for o in entries] == [
        ("LE5100:entry:0", 2, 5), ("LE5100:entry:1", 1, 2)]
    wait_for(lambda: protected(sim, 1), 10, what="protection for the reduced size")


def test_429_storm(gw, sim):
    price(sim, "6050.00")
    sim.control("http_error", status=429, count=2, path="/api/Order/place")
    rep = gw.enter("LE5200")
    assert rep.ok and rep.status == "accepted", rep
    assert len(tagged(sim, "LE5200:entry")) == 1
    wait_for(lambda: protected(sim), 10, what="bracket after the 429s")
    gw.cmd("XL5201", "exit", contract=sim.contract_id)
    # a storm longer than the budget: an error, and nothing at the broker
    sim.control("http_error", status=429, count=50, path="/api/Order/place")
    rep = gw.enter("LE5202")
    assert not rep.ok and rep.status == "error" and "429" in rep.message, rep
    assert tagged(sim, "LE5202:") == []
    sim.control("clear")


def test_placement_timeout_order_created_no_duplicate(gw, sim):
    price(sim, "6050.00")
    sim.control("timeout", seconds=4, path="/api/Order/place", count=1)
    rep = gw.enter("LE5300")
    assert rep.ok and rep.status == "accepted", rep
    assert len(tagged(sim, "LE5300:entry")) == 1
    wait_for(lambda: protected(sim), 10, what="bracket after the timeout")
    assert len(positions(sim)) == 1 and positions(sim)[0]["size"] == 1
    # the hub's order event may settle the entry before the held answer times out; the timeout
    # still comes, and is resolved by the tag, not by a second order
    wait_for(lambda: "outcome unknown" in gw.proc.output(), 10, what="the placement's timeout")
    wait_for(lambda: "exists at the broker as order" in gw.proc.output(), 10, what="found by its tag")
    assert len(tagged(sim, "LE5300:entry")) == 1


def test_user_hub_dropped_mid_trade(tmp_path, sim):
    """The target fills while the user hub is down (reconnect backoff 2-4 s): REST polling finds
    the fill during the gap, cancels the stop, and entries wait for the hub + a reconciliation."""
    import time
    g = Gw(tmp_path, sim, orders={"hub_min_backoff_s": 4.0, "hub_max_backoff_s": 4.0}).start()
    try:
        price(sim, "6050.00")
        assert g.enter("LE5400").status == "accepted"
        wait_for(lambda: protected(sim), 10, what="bracket")
        sim.control("drop_ws", hub="user")
        t0 = time.monotonic()
        price(sim, "6054.50")          # the target fills during the gap
        wait_for(lambda: not positions(sim) and not working(sim), 15, what="stop cancelled after the gap")
        fills = wait_for(lambda: len(g.fills()) >= 2 and g.fills(), 10, what="target fill found")
        assert time.monotonic() - t0 < 2.0, "found by REST polling, before the hub came back"
        assert g.status().get("hub") != "connected"
        assert [f.leg for f in fills] == ["entry", "target"]
        wait_for(lambda: g.status().get("entries_ok"), 10, what="hub back and reconciled")
        assert [f.leg for f in g.fills()] == ["entry", "target"]      # nothing twice after the reconnect
    finally:
        g.stop()


def test_kill9_after_entry_and_restart(gw, sim):
    price(sim, "6050.00")
    rep = gw.enter("LE5500")
    assert rep.status == "accepted"
    gw.proc.kill9()
    gw.start()
    wait_for(lambda: protected(sim), 10, what="protection in place after the restart")
    assert len(tagged(sim, "LE5500:entry")) == 1
    assert len(tagged(sim, "LE5500:stop")) == 1 and len(tagged(sim, "LE5500:target")) == 1
    again = gw.enter("LE5500")
    assert (again.status, again.detail) == (rep.status, rep.detail)
    assert len(tagged(sim, "LE5500:entry")) == 1
    # fills are published once across the restart
    wait_for(lambda: [f.leg for f in gw.fills()].count("entry") >= 1, 5, what="the entry fill on the bus")
    gw.status()
    assert [f.leg for f in gw.fills()].count("entry") == 1


def test_daily_loss_halt_latched(tmp_path, sim):
    g = Gw(tmp_path, sim, risk={"max_daily_loss": 5}).start()
    try:
        price(sim, "6050.00")
        assert g.enter("LE5600", stop=8, target=16).status == "accepted"
        wait_for(lambda: protected(sim), 10, what="bracket")
        price(sim, "6047.00")      # through the stop at 6048.25: -$10 and fees
        wait_for(lambda: g.status().get("halted"), 10, what="daily loss halt")
        assert not positions(sim) and not working(sim)
        assert g.enter("LE5601").status == "halted"
        assert not g.cmd("op-resume-1", "resume").ok      # latched for the trading day
        assert any(r.kind == "daily_loss" and r.active for r in g.risks())
        g.proc.kill9()
        g.start()
        assert g.status()["halted"] and g.enter("LE5602").status == "halted"
    finally:
        g.stop()


def test_sigterm_with_open_position(gw, sim):
    price(sim, "6050.00")
    assert gw.enter("LE5700", size=2).status == "accepted"
    wait_for(lambda: protected(sim, 2), 10, what="bracket")
    assert gw.proc.terminate(45) == 0
    st = sim.state()
    assert not st["positions"] and not st["working"]
    assert "SHUTDOWN: flat" in gw.proc.output()


def test_kill9_during_placement_resend_gets_first_answer(gw, sim):
    """Killed while Order/place is in flight (the broker creates the order and answers late);
    the gateway had answered `accepted` (pending) at once; the engine's resend of the same key
    reaches the restarted gateway and gets the entry's real answer."""
    from common.messages import OrderCommand
    price(sim, "6050.00")
    sim.control("timeout", seconds=3, path="/api/Order/place", count=1)
    cmd = OrderCommand("LE5800", "enter", contract=sim.contract_id, direction=1, size=1, stop_ticks=8,
                       target_ticks=16, signal_id="LE5800", model_version="m1")
    early = gw.client.request(cmd, timeout_ms=1000, retries=0).msg
    assert early.status == "accepted" and early.detail == {"pending": True, "key": "LE5800"}, early
    gw.proc.kill9()
    gw.start()
    rep = gw.client.request(cmd).msg
    assert rep.ok and rep.status == "accepted", rep
    entries = tagged(sim, "LE5800:entry")
    assert len(entries) == 1 and rep.detail["order_id"] == entries[0]["id"]
    wait_for(lambda: protected(sim), 10, what="protection after the restart")
    assert len(positions(sim)) == 1 and positions(sim)[0]["size"] == 1


def test_unconfirmable_entry_is_flattened(tmp_path, sim):
    """REST only (no user hub): the placement times out and the order search keeps failing, so the
    outcome cannot be confirmed: the gateway answers 'error' (in flight), never resends, and closes
    the position it cannot vouch for after unknown_flatten_s."""
    g = Gw(tmp_path, sim, api={"order_timeout_s": 1.0},
           orders={"user_hub": False, "unknown_flatten_s": 5.0, "lookup_timeout_s": 1.5}).start()
    try:
        price(sim, "6050.00")
        sim.control("timeout", seconds=2, path="/api/Order/place", count=1)
        sim.control("http_error", status=500, count=-1, path="/api/Order/search")
        rep = g.enter("LE5900")
        assert not rep.ok and rep.status == "error" and rep.detail.get("in_flight"), rep
        assert g.enter("LE5901").status == "refused"          # in flight counts as exposure
        wait_for(lambda: not positions(sim) and not working(sim) and
                 closes(sim), 20,
                 what="unconfirmed entry closed")
        assert len(tagged(sim, "LE5900:entry")) == 1
        assert any(r.kind == "order_unknown" for r in g.risks())
        sim.control("clear")
    finally:
        g.stop()


def test_restart_cancels_protection_of_a_flat_position(gw, sim):
    price(sim, "6050.00")
    assert gw.enter("LE6100").status == "accepted"
    wait_for(lambda: protected(sim), 10, what="bracket")
    gw.proc.kill9()
    # flattened behind the dead gateway's back: closeContract leaves the stop and target working
    sim.api("/api/Position/closeContract", {"accountId": sim.account_id, "contractId": sim.contract_id})
    assert len(working(sim)) == 2
    gw.start()
    wait_for(lambda: not working(sim), 10, what="orphaned protection cancelled at start")
    assert gw.status()["in_flight"] == [] and gw.enter("LE6101").status == "accepted"


def test_a_broker_started_afresh_leaves_no_ghost_orders_in_the_journal(tmp_path, gw, sim):
    """The simulator keeps nothing between runs. A gateway whose journal still holds the last
    run's working stop and target must not report, sweep or count them as protection."""
    price(sim, "6050.00")
    assert gw.enter("LE6200").status == "accepted"
    wait_for(lambda: protected(sim), 10, what="bracket")
    gw.proc.kill9()
    sim.stop()
    with SimProcess(tmp_path / "sim2", port=sim.port, speed=0) as fresh:
        price(fresh, "6050.00")
        gw.sim = fresh
        gw.start()
        wait_for(lambda: gw.status().get("working_orders") == [], 15,
                 what=f"ghost orders dropped: {gw.status().get('working_orders')}")
        assert "unknown to the broker; marked cancelled" in gw.proc.output()
        wait_for(lambda: gw.status().get("in_flight") == [], 15,
                 what=f"the last run's intent closed (the fresh broker is flat): {gw.status().get('in_flight')}")
        r = gw.enter("LE6201")
        assert r.status == "accepted", (r, gw.status())
        wait_for(lambda: protected(fresh), 10, what="a new bracket at the fresh broker")
        gw.stop()       # while the fresh broker is up: its shutdown flatten needs one
        assert not positions(fresh) and not working(fresh)
