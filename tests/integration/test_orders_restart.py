"""Restart is not shutdown, under a real supervisord: `supervisorctl restart orders` keeps a
protected position (the same stop and target at the broker, nothing placed again) and the new
gateway adopts it; supervisord's own shutdown cancels, flattens and verifies."""
from __future__ import annotations

import time

import pytest

from common.bus import LazyPirateClient
from tests.harness.pipeline import Pipeline
from tests.integration.orders_helpers import Gw, positions, price, protected, sim, wait_for, working  # noqa: F401

pytestmark = pytest.mark.integration


def test_restart_keeps_a_protected_position_shutdown_flattens(tmp_path, sim):
    g = Gw(tmp_path, sim)                       # its config; the process runs under supervisord
    with Pipeline(tmp_path, g.cfg_path, services=("orders",)) as p:
        g.client = LazyPirateClient("test", g.cfg.bus.orders_cmd, timeout_ms=3000, retries=3)
        wait_for(lambda: g.status().get("entries_ok"), 30, 0.2, "gateway ready")
        price(sim, "6050.00")
        assert g.enter("LE1").status == "accepted"
        wait_for(lambda: protected(sim), 10, what="bracket")
        kept = sorted(o["id"] for o in working(sim))
        n_orders = len(sim.state()["orders"])
        p.restart("orders")
        assert positions(sim) and positions(sim)[0]["size"] == 1, "the restart closed the position"
        assert sorted(o["id"] for o in working(sim)) == kept, "the restart touched the protection"
        wait_for(lambda: g.status().get("entries_ok"), 30, 0.2, "restarted gateway ready")
        st = g.status()
        assert st["position"] == {"contract": sim.contract_id, "direction": 1, "size": 1}, st
        assert {o["leg"] for o in st["working_orders"]} == {"stop", "target"} and st["in_flight"] == []
        time.sleep(2.0)                          # a few reconciliations: nothing is placed again
        assert len(sim.state()["orders"]) == n_orders and sorted(o["id"] for o in working(sim)) == kept
        assert "keeping" in (p.logs / "orders.out").read_text()
        g.client.close()
    # supervisord's shutdown: the session ends, the gateway flattens
    assert not positions(sim) and not working(sim)
