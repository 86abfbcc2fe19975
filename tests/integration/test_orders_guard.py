"""The protection invariant against the broker, the orphan sweep, and the operator-side commands
(halt latched, cancel_all, flatten, status) on a real gateway and simulator."""
from __future__ import annotations

import pytest

from tests.integration.orders_helpers import (  # noqa: F401  (gw, sim: fixtures)
    closes, Gw, by_leg, gw, positions, price, protected, sim, wait_for, working,
)

pytestmark = pytest.mark.integration



def test_missing_stop_is_repaired_and_orphan_swept(gw, sim):
    price(sim, "6050.00")
    assert gw.enter("LE7000").status == "accepted"
    wait_for(lambda: protected(sim), 10, what="bracket")
    stop = by_leg(working(sim), "stop")[0]
    tok = sim.token()
    sim.api("/api/Order/cancel", {"accountId": sim.account_id, "orderId": stop["id"]}, tok)
    wait_for(lambda: any(o["customTag"] == "LE7000:stop:1" for o in working(sim)), 10, what="stop repaired")
    assert protected(sim)
    assert any(r.kind == "protection_invariant" and r.active for r in gw.risks())
    # flat the position behind the gateway's back: its stop and target are orphans now
    sim.api("/api/Position/closeContract", {"accountId": sim.account_id, "contractId": sim.contract_id}, tok)
    wait_for(lambda: not working(sim), 10, what="orphans cancelled")
    # an untagged stray order with no position is swept too
    sim.api("/api/Order/place", {"accountId": sim.account_id, "contractId": sim.contract_id, "type": 4,
                                 "side": 1, "size": 1, "stopPrice": 6040.0}, tok)
    wait_for(lambda: not working(sim), 10, what="stray order cancelled")


def test_halt_cancel_all_flatten_status(gw, sim):
    price(sim, "6050.00")
    assert gw.enter("LE7100", size=2).status == "accepted"
    wait_for(lambda: protected(sim, 2), 10, what="bracket")
    st = gw.status()
    assert st["position"] == {"contract": sim.contract_id, "direction": 1, "size": 2}
    assert {o["leg"] for o in st["working_orders"]} == {"stop", "target"} and not st["halted"]
    h = gw.cmd("op-halt-1", "halt", reason="operator says so")
    assert h.ok and h.status == "halted"
    assert gw.enter("LE7101").status == "halted"
    assert gw.status()["halted"] and gw.status()["halt_reason"] == "operator says so"
    f = gw.cmd("op-flatten-1", "flatten", reason="operator")
    assert f.ok and f.status == "flat", f
    assert not positions(sim) and not working(sim)
    # verified flat over REST; the fill itself comes on the user hub, a moment later
    wait_for(lambda: [x.leg for x in gw.fills()][-1:] == ["flatten"], 5, what="the flatten fill")
    n = len(closes(sim))
    assert n == 1                                                     # one Position/closeContract
    assert gw.cmd("op-flatten-1", "flatten").status == "flat"      # same key: first answer, nothing sent
    assert len(closes(sim)) == n
    assert gw.cmd("op-resume-1", "resume").ok
    assert gw.enter("LE7102").status == "accepted"
    wait_for(lambda: protected(sim), 10, what="bracket after resume")
    c = gw.cmd("op-cancel-1", "cancel_all")
    assert c.ok and not working(sim)


def test_no_entry_while_user_hub_down(tmp_path, sim):
    g = Gw(tmp_path, sim, orders={"hub_min_backoff_s": 4.0, "hub_max_backoff_s": 4.0}).start()
    try:
        price(sim, "6050.00")
        sim.control("drop_ws", hub="user")
        wait_for(lambda: g.status().get("hub") not in (None, "connected"), 5, what="gateway sees the hub down")
        rep = g.enter("LE7200")
        assert rep.status == "refused" and "hub" in rep.message, rep
        assert not sim.state()["orders"]
        wait_for(lambda: g.status().get("entries_ok"), 15, what="hub back and reconciled")
        assert g.enter("LE7201").status == "accepted"
        wait_for(lambda: protected(sim), 10, what="bracket")
    finally:
        g.stop()
