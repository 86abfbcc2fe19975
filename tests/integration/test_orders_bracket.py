"""Order gateway against the simulator: bracket flow, OCO, reverse, partial fills (real processes)."""
from __future__ import annotations

from decimal import Decimal

import pytest

from tests.integration.orders_helpers import (  # noqa: F401  (gw, sim: fixtures)
    Gw, closes, by_leg, gw, positions, price, protected, sim, wait_for, working,
)

pytestmark = pytest.mark.integration



def test_entry_with_bracket(gw, sim):
    price(sim, "6050.00")          # bid 6050.00 ask 6050.25: a buy fills at 6050.25
    rep = gw.enter("LE1000", direction=1, size=1, stop=8, target=16)
    assert rep.ok and rep.status == "accepted", rep
    assert rep.detail["order_id"]
    wait_for(lambda: protected(sim), 10, what="stop and target working")
    w = working(sim)
    stop, target = by_leg(w, "stop")[0], by_leg(w, "target")[0]
    assert stop["customTag"] == "LE1000:stop:0" and target["customTag"] == "LE1000:target:0"
    assert stop["type"] == 4 and stop["side"] == 1 and Decimal(str(stop["stopPrice"])) == Decimal("6048.25")
    assert target["type"] == 1 and target["side"] == 1 and Decimal(str(target["limitPrice"])) == Decimal("6054.25")
    fills = wait_for(lambda: gw.fills(), 5, what="entry fill published")
    f = fills[0]
    assert f.leg == "entry" and f.intent_key == "LE1000" and f.signal_id == "LE1000" and f.model_version == "m1"
    assert f.fees_cents == 37 and f.pnl_cents is None
    # repeated key -> first reply, no second order
    again = gw.enter("LE1000", direction=1, size=1, stop=8, target=16)
    assert (again.ok, again.status, again.detail) == (rep.ok, rep.status, rep.detail)
    assert len([o for o in sim.state()["orders"] if o["customTag"] and o["customTag"].startswith("LE1000:entry")]) == 1
    # a second entry while the first is open is refused
    other = gw.enter("LE1001", direction=1, size=1)
    assert other.status == "refused"
    out = gw.proc.output()
    assert "ORDER: MARKET BUY 1 MES @ market" in out
    assert "FILL: BOUGHT 1 MES @ 6050.25" in out
    assert "ORDER: STOP SELL 1 MES @ 6048.25" in out
    assert "ORDER: LIMIT SELL 1 MES @ 6054.25" in out


def test_target_hit_cancels_stop_then_reverse(gw, sim):
    price(sim, "6050.00")
    assert gw.enter("LE2000", direction=1, size=1, stop=8, target=16).status == "accepted"
    wait_for(lambda: protected(sim), 10, what="bracket")
    price(sim, "6054.50")          # through the target at 6054.25
    wait_for(lambda: not positions(sim) and not working(sim), 10, what="target filled and stop cancelled")
    legs = [f.leg for f in wait_for(lambda: len(gw.fills()) >= 2 and gw.fills(), 5, what="fills")]
    assert legs == ["entry", "target"]
    assert "(TARGET HIT)" in gw.proc.output()
    # a new long, then reverse to short: one exit, one short entry, short bracket
    price(sim, "6054.00")
    assert gw.enter("LE2001", direction=1, size=1, stop=8, target=16).status == "accepted"
    wait_for(lambda: protected(sim), 10, what="bracket 2")
    rep = gw.cmd("RS2002", "reverse", contract=sim.contract_id, direction=-1, size=1, stop_ticks=8,
                 target_ticks=16, signal_id="RS2002", model_version="m1")
    assert rep.ok and rep.status == "accepted", rep
    wait_for(lambda: positions(sim) and positions(sim)[0]["type"] == 2 and protected(sim), 10, what="short bracket")
    w = working(sim)
    assert all(o["side"] == 0 for o in w)
    assert by_leg(w, "stop")[0]["customTag"] == "RS2002:stop:0"
    exits = closes(sim)                     # the exit leg: Position/closeContract, untagged at the broker
    assert len(exits) == 1 and exits[0]["status"] == 2
    wait_for(lambda: [f for f in gw.fills() if f.leg == "exit" and f.intent_key == "RS2002"], 5,
             what="the exit fill, attributed to the reverse")


def test_partial_fill_resizes_protection(gw, sim):
    price(sim, "6050.00")
    sim.control("partial_fill", fill=1)
    assert gw.enter("LE3000", direction=1, size=2).status == "accepted"
    wait_for(lambda: protected(sim, 1), 10, what="protection for the first contract")
    price(sim, "6050.25")          # market update: the rest fills
    wait_for(lambda: positions(sim) and positions(sim)[0]["size"] == 2 and protected(sim, 2), 10,
             what="protection resized to 2")
    wait_for(lambda: len([f for f in gw.fills() if f.leg == "entry"]) == 2, 5, what="two entry fills on the bus")


def test_exit_cancels_both_then_closes(gw, sim):
    price(sim, "6050.00")
    assert gw.enter("LE4000", direction=1, size=1).status == "accepted"
    wait_for(lambda: protected(sim), 10, what="bracket")
    rep = gw.cmd("XL4001", "exit", contract=sim.contract_id, signal_id="XL4001", reason="signal")
    assert rep.ok and rep.status == "flat", rep
    st = sim.state()
    assert not st["positions"] and not st["working"]
    assert [f.leg for f in wait_for(lambda: len(gw.fills()) >= 2 and gw.fills(), 5, what="fills")] == ["entry", "exit"]


def test_short_stop_hit_cancels_target(gw, sim):
    price(sim, "6050.00")          # a sell fills at the bid 6050.00
    assert gw.enter("SE8000", direction=-1, size=1, stop=8, target=16).status == "accepted"
    wait_for(lambda: protected(sim), 10, what="short bracket")
    w = working(sim)
    assert by_leg(w, "stop")[0]["side"] == 0 and Decimal(str(by_leg(w, "stop")[0]["stopPrice"])) == Decimal("6052.00")
    assert Decimal(str(by_leg(w, "target")[0]["limitPrice"])) == Decimal("6046.00")
    price(sim, "6052.25")          # ask 6052.50: through the stop
    wait_for(lambda: not positions(sim) and not working(sim), 10, what="stop filled and target cancelled")
    legs = [f.leg for f in wait_for(lambda: len(gw.fills()) >= 2 and gw.fills(), 5, what="fills")]
    assert legs == ["entry", "stop"]
    assert "(STOP HIT)" in gw.proc.output()
    stop_fill = gw.fills()[1]
    assert stop_fill.pnl_cents is not None and stop_fill.pnl_cents < 0 and stop_fill.intent_key == "SE8000"
