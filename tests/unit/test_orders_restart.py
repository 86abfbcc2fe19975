"""Restart is not shutdown: how a SIGTERM is read (stop_kind), what a restart keeps, and a
restart in the middle of a placement, against the scripted broker and a real journal."""
from __future__ import annotations

import pytest

from common.messages import OrderCommand
from services.orders.gateway import Gateway
from services.orders.stop_kind import RESTART, SHUTDOWN, stop_kind
from tests.unit._scripted_broker import ACCT, STOP, Crash
from tests.unit.test_orders_exits import C, Kit


class FakeRpc:
    def __init__(self, state):
        self.supervisor = self
        self.state = state

    def getState(self):                      # noqa: N802 (supervisord's XML-RPC name)
        if isinstance(self.state, Exception):
            raise self.state
        return {"statename": self.state}


def test_stop_kind():
    assert stop_kind("auto", env={}) == SHUTDOWN                      # no supervisord: flatten
    assert stop_kind("auto", env={}, rpc=FakeRpc("SHUTDOWN")) == SHUTDOWN
    assert stop_kind("auto", env={}, rpc=FakeRpc("RUNNING")) == RESTART
    assert stop_kind("auto", env={}, rpc=FakeRpc(OSError("no socket"))) == SHUTDOWN   # cannot tell: flat
    # supervisord refuses every call while it shuts down (Fault 6 SHUTDOWN_STATE): that is the answer
    import xmlrpc.client
    assert stop_kind("auto", env={}, rpc=FakeRpc(xmlrpc.client.Fault(6, "SHUTDOWN_STATE"))) == SHUTDOWN
    assert stop_kind("flatten", env={}, rpc=FakeRpc("RUNNING")) == SHUTDOWN
    assert stop_kind("keep", env={}) == RESTART


@pytest.fixture
def kit(tmp_path):
    k = Kit(tmp_path)
    yield k
    k.journal.close()


def restarted(k: Kit) -> Gateway:
    """A new gateway on the same journal and broker, reconciled as at start."""
    gw = Gateway(k.cfg, k.sect, k.broker, k.journal, ACCT, lambda m, key=None, forget=False: k.published.append(m),
                 k.gw.clock, k.gw.calendar)
    k.gw = gw
    assert k.flow(gw.reconcile(initial=True))
    k.settle()
    return gw


def test_restart_keeps_a_protected_position_and_the_next_gateway_adopts_it(kit):
    kit.enter(size=2)
    assert kit.flow(kit.gw.keep_for_restart())
    assert kit.broker.signed() == 2 and len(kit.broker.working()) == 2
    before = len(kit.broker.book)
    gw = restarted(kit)
    assert kit.broker.signed() == 2 and len(kit.broker.working()) == 2
    assert len(kit.broker.book) == before                           # nothing placed again
    assert gw.intents["LE1"].state.value == "open" and gw.intents["LE1"].stop_oid == kit.leg("stop")["id"]
    rep = kit.cmd("XL1", "exit")                                    # and it can still close it
    assert rep.ok and kit.broker.signed() == 0 and kit.broker.working() == []


def test_restart_closes_a_position_without_a_stop(kit):
    kit.enter(size=1)
    kit.broker.cancel_order(ACCT, kit.leg("stop")["id"])            # someone removed the stop
    kit.broker.violations.clear()
    kit.flow(kit.gw.keep_for_restart())
    assert kit.broker.signed() == 0 and kit.broker.working() == []


def test_shutdown_flattens(kit):
    kit.enter(size=1)
    assert kit.flow(kit.gw.shutdown())
    assert kit.broker.signed() == 0 and kit.broker.working() == []


def test_restart_in_the_middle_of_a_placement(kit):
    """The entry reached the broker, the gateway died before the answer: the next gateway finds it
    by its tag, protects it and answers the resent command with it; nothing is sent twice."""
    kit.broker.crash_after.add("place_order")
    with pytest.raises(Crash):
        kit.gw.handle(OrderCommand("LE9", "enter", contract=C, direction=-1, size=1, stop_ticks=8, target_ticks=16))
    assert kit.broker.signed() == -1 and kit.broker.working() == []   # filled, unprotected
    restarted(kit)
    assert len(kit.broker.by_tag("LE9:entry:")) == 1
    assert {o["type"] for o in kit.broker.working()} == {STOP, 1} and kit.leg("stop")["side"] == 0
    rep = kit.cmd("LE9", "enter", direction=-1, size=1, stop_ticks=8, target_ticks=16)   # the engine resends
    assert rep.ok and rep.status == "accepted" and rep.detail["order_id"] == kit.broker.by_tag("LE9:entry:")[0]["id"]
    assert len(kit.broker.by_tag("LE9:entry:")) == 1
