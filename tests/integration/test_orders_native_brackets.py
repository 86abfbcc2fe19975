"""Native Auto-OCO brackets against the simulator in both account modes (real processes)."""
from __future__ import annotations

import pytest

from tests.harness.sim import SimProcess
from tests.integration.orders_helpers import Gw, by_leg, positions, price, wait_for, working

pytestmark = pytest.mark.integration


def test_auto_oco_account_gets_native_brackets(tmp_path):
    with SimProcess(tmp_path / "sim", speed=1.0, auto_oco_brackets=True) as sim:
        g = Gw(tmp_path, sim, orders={"native_brackets": "auto"}).start()
        try:
            price(sim, "6050.00")
            assert g.enter("LE1", direction=1, size=1, stop=8, target=16).status == "accepted"
            kids = lambda: [o for o in working(sim) if (o.get("customTag") or "").startswith("LE1:entry:0-")]  # noqa: E731
            wait_for(lambda: len(kids()) == 2, 10, what="the bracket children working")
            assert by_leg(working(sim), "stop") == [] and by_leg(working(sim), "target") == []   # none client-side
            st = g.status()
            assert {o["leg"] for o in st["working_orders"]} == {"stop", "target"}, st
            price(sim, "6054.50")                              # through the target: the broker cancels the SL
            wait_for(lambda: not positions(sim) and not working(sim), 10, what="target filled, sibling cancelled")
            legs = [f.leg for f in wait_for(lambda: len(g.fills()) >= 2 and g.fills(), 5, what="fills")]
            assert legs == ["entry", "target"]
        finally:
            g.stop()


def test_position_brackets_account_falls_back_to_client_side_oco(tmp_path):
    with SimProcess(tmp_path / "sim", speed=1.0, auto_oco_brackets=False) as sim:
        g = Gw(tmp_path, sim, orders={"native_brackets": "auto"}).start()
        try:
            price(sim, "6050.00")
            assert g.enter("LE1", direction=1, size=1).status == "accepted"
            wait_for(lambda: len(by_leg(working(sim), "stop")) == 1 and len(by_leg(working(sim), "target")) == 1, 10,
                     what="client-side bracket")
            assert [o["customTag"] for o in sim.state()["orders"] if "entry" in (o.get("customTag") or "")] == \
                ["LE1:entry:0"]
            assert "client-side OCO from now on" in g.proc.output()
        finally:
            g.stop()
