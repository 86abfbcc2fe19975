"""The gateway's state machines (services/orders/states.py) and the one table of broker codes."""
from __future__ import annotations

import pytest

from common import broker_codes
from services.orders import logic
from services.orders.states import (
    ACTIVE, TRANSITIONS, IllegalTransition, Intent, IntentState as S, after_cancel_sent, next_status,
)


def test_every_state_has_a_row_and_finished_states_are_final():
    assert set(TRANSITIONS) == set(S)
    for st in set(S) - ACTIVE:
        assert TRANSITIONS[st] == frozenset(), st


def test_a_trade_walks_the_table():
    it = Intent("LE1", "CON.F.US.MES.H26", 1, 2, 8, 16)
    assert it.state is S.PLACING and it.in_flight
    it.to(S.WORKING).to(S.OPEN).to(S.OPEN).to(S.CLOSING).to(S.OPEN).to(S.CLOSING).to(S.CLOSED)
    assert not it.active
    with pytest.raises(IllegalTransition):
        it.to(S.OPEN)                     # a closed trade never reopens


@pytest.mark.parametrize("cur,new", [(S.OPEN, S.WORKING), (S.OPEN, S.REJECTED), (S.CLOSING, S.WORKING),
                                     (S.PLACING, S.CLOSING), (S.REJECTED, S.CLOSED), (S.FAILED, S.OPEN)])
def test_illegal_transitions_raise(cur, new):
    it = Intent("k", "c", 1, 1, 8, 16, state=cur)
    with pytest.raises(IllegalTransition):
        it.to(new)


def test_intent_journal_round_trip():
    it = Intent("LE1", "CON.F.US.MES.H26", -1, 2, 8, 16, "sig", "m1", S.OPEN, 1001, 2, 0, 24200, 1002, 1003, 5.0)
    d = it.as_dict()
    assert d["state"] == "open"
    assert Intent.from_dict({**d, "unknown_old_key": 1}) == it


def test_order_status_rules():
    assert next_status(None, broker_codes.OPEN) == broker_codes.OPEN
    assert next_status(broker_codes.OPEN, broker_codes.FILLED) == broker_codes.FILLED
    assert next_status(broker_codes.FILLED, broker_codes.OPEN) == broker_codes.FILLED             # a late event does not revive it
    assert next_status(broker_codes.CANCELLED, broker_codes.OPEN) == broker_codes.CANCELLED
    # our cancel is on its way: still PendingCancel on an Open event, and a fill still counts
    pc = after_cancel_sent(broker_codes.OPEN)
    assert pc == broker_codes.PENDING_CANCEL
    assert next_status(pc, broker_codes.OPEN) == broker_codes.PENDING_CANCEL
    assert next_status(pc, broker_codes.FILLED) == broker_codes.FILLED
    assert next_status(pc, broker_codes.CANCELLED) == broker_codes.CANCELLED
    assert after_cancel_sent(broker_codes.FILLED) == broker_codes.FILLED
    # a fill after the gateway inferred a cancel (order vanished) is still a fill
    assert next_status(broker_codes.CANCELLED, broker_codes.FILLED) == broker_codes.FILLED


def test_one_table_of_codes():
    from services.positions import ledger
    from services.sim import matching
    assert (logic.BUY, logic.SELL, logic.LIMIT, logic.MARKET, logic.STOP) == (broker_codes.BUY, broker_codes.SELL, broker_codes.LIMIT, broker_codes.MARKET, broker_codes.STOP)
    assert matching.WORKING == broker_codes.WORKING and matching.SUSPENDED == broker_codes.SUSPENDED
    assert ledger.TERMINAL == logic.TERMINAL == broker_codes.TERMINAL
    # PendingCancel is neither working (it is no protection) nor finished (it may still fill)
    assert broker_codes.PENDING_CANCEL not in broker_codes.WORKING and broker_codes.PENDING_CANCEL not in broker_codes.TERMINAL and broker_codes.PENDING_CANCEL in broker_codes.LIVE
    assert broker_codes.WORKING | broker_codes.TERMINAL | {broker_codes.NONE, broker_codes.PENDING_CANCEL, broker_codes.SUSPENDED} == set(range(9))
