"""The gateway's state machines (services/orders/states.py) and the one table of broker codes."""
from __future__ import annotations

import pytest

from common import broker_codes as B
from services.orders import logic as L
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
    assert next_status(None, B.OPEN) == B.OPEN
    assert next_status(B.OPEN, B.FILLED) == B.FILLED
    assert next_status(B.FILLED, B.OPEN) == B.FILLED             # a late event does not revive it
    assert next_status(B.CANCELLED, B.OPEN) == B.CANCELLED
    # our cancel is on its way: still PendingCancel on an Open event, and a fill still counts
    pc = after_cancel_sent(B.OPEN)
    assert pc == B.PENDING_CANCEL
    assert next_status(pc, B.OPEN) == B.PENDING_CANCEL
    assert next_status(pc, B.FILLED) == B.FILLED
    assert next_status(pc, B.CANCELLED) == B.CANCELLED
    assert after_cancel_sent(B.FILLED) == B.FILLED
    # a fill after the gateway inferred a cancel (order vanished) is still a fill
    assert next_status(B.CANCELLED, B.FILLED) == B.FILLED


def test_one_table_of_codes():
    from services.positions import ledger
    from services.sim import matching
    assert (L.BUY, L.SELL, L.LIMIT, L.MARKET, L.STOP) == (B.BUY, B.SELL, B.LIMIT, B.MARKET, B.STOP)
    assert matching.WORKING == B.WORKING and matching.SUSPENDED == B.SUSPENDED
    assert ledger.TERMINAL == L.TERMINAL == B.TERMINAL
    # PendingCancel is neither working (it is no protection) nor finished (it may still fill)
    assert B.PENDING_CANCEL not in B.WORKING and B.PENDING_CANCEL not in B.TERMINAL and B.PENDING_CANCEL in B.LIVE
    assert B.WORKING | B.TERMINAL | {B.NONE, B.PENDING_CANCEL, B.SUSPENDED} == set(range(9))
