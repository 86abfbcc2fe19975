"""The engine's order client and an early `accepted`: the gateway answered before the broker did,
and the outcome comes later on the bus as an OrderReply."""
from __future__ import annotations

from common.messages import OrderReply
from tests.unit._engine_kit import Kit, ny

MON = ny(2026, 3, 9, 10, 0)


class EarlyGateway:
    """Answers every command `accepted` with the pending marker, as the gateway does when the
    broker is slow."""

    def __init__(self):
        self.commands = []

    def __call__(self, cmd, hops, on_sent=None):
        self.commands.append(cmd)
        return OrderReply(cmd.key, True, "accepted", "in progress", {"pending": True, "key": cmd.key})


def kit() -> Kit:
    k = Kit(MON)
    k.gw = EarlyGateway()
    k.eng.send = k.gw
    k.advance(1)
    return k


def test_pending_until_the_outcome_then_cleared_by_a_failed_outcome():
    k = kit()
    k.predict(1, 0.9)
    [cmd] = k.gw.commands
    assert k.eng.pending is not None and k.eng.pending.key == cmd.key
    k.advance(1)
    k.predict(1, 0.9)
    assert len(k.gw.commands) == 1                   # no second entry while the first is pending
    k.eng.on_command_outcome(OrderReply(cmd.key, False, "rejected", "errorCode 2 rejected", {"code": 2}))
    assert k.eng.pending is None
    k.advance(1)
    k.predict(1, 0.9)
    assert len(k.gw.commands) == 2                   # a new signal may trade again


def test_an_unknown_outcome_keeps_the_exposure_and_asks_for_status():
    k = kit()
    k.predict(1, 0.9)
    [cmd] = k.gw.commands
    k.eng.on_command_outcome(OrderReply(cmd.key, False, "error", "outcome unknown", {"in_flight": True}))
    assert k.eng.pending is not None and k.eng.pending.unknown and k.eng.need_status


def test_a_good_outcome_leaves_the_pending_entry_to_the_position():
    k = kit()
    k.predict(1, 0.9)
    [cmd] = k.gw.commands
    k.eng.on_command_outcome(OrderReply(cmd.key, True, "accepted", "", {"order_id": 5, "size": 1}))
    assert k.eng.pending is not None and k.eng.pending.key == cmd.key
