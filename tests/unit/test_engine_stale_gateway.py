"""The engine's view of the order gateway goes stale when the gateway does not answer (a status
question or a command): no entry goes out against it until a status answer comes; exits and
flattens still go; operator commands and ticks keep working meanwhile."""
from __future__ import annotations

from common.messages import OperatorCommand, RiskEvent
from services.engine.config import EngineConfig
from tests.unit._engine_kit import Kit, ny

MON = ny(2026, 3, 9, 10, 0)


def test_unanswered_status_blocks_entries_until_a_status_answer():
    k = Kit(MON)
    k.eng.gateway_unanswered("no answer to status in 1 s")
    assert k.eng.need_status and k.eng.gateway_stale
    k.advance(1)
    k.predict(1, 0.9)
    assert k.gw.commands == [], "an entry went out against a stale view of the gateway"
    blocked = [e for e in k.kinds(RiskEvent) if e.kind == "entry_blocked:gateway_stale"]
    assert blocked and "stale" in blocked[0].detail
    assert "gateway_stale" in k.eng.entry_blocks()
    k.eng.sync_status({"in_flight": [], "position": None, "halted": False})
    assert not k.eng.gateway_stale and not k.eng.need_status
    k.advance(1)
    k.predict(1, 0.9)
    assert k.gw.actions() == [("enter", 1)]


def test_unanswered_command_makes_the_view_stale():
    k = Kit(MON)
    k.gw.down = True
    k.predict(1, 0.9)
    assert k.eng.gateway_stale.startswith("gateway status stale: no answer to enter")
    assert k.eng.status()["gateway_stale"] and k.eng.stats()["gateway_stale"] is True


def test_exit_still_goes_out_with_a_stale_view_but_a_reversal_only_exits():
    k = Kit(MON)
    k.position(1)
    k.eng.gateway_unanswered("gateway not connected")
    k.advance(1)
    k.predict(-1, 0.95)          # above reverse_confidence: a reversal, downgraded to an exit
    assert k.gw.actions() == [("exit", 0)], k.gw.actions()


def test_the_last_line_refuses_an_entry_against_a_stale_view():
    """Even a path that skipped entry_blocks (act called directly) sends no entry."""
    k = Kit(MON)
    k.eng.gateway_unanswered("no answer")
    plan = type("Plan", (), {"size": 1, "stop_ticks": 8, "target_ticks": 16, "risk_cents": 1000})()
    assert k.eng.act("LONG_ENTRY", "LE1", None, "test", plan) is None
    assert k.gw.commands == []
    assert k.eng.pending is None


def test_operator_commands_answer_with_a_stale_view():
    k = Kit(MON)
    k.eng.gateway_unanswered("no answer")
    assert k.eng.operator(OperatorCommand("halt", "drill")).ok
    st = k.eng.operator(OperatorCommand("status")).data
    assert st["halted"] and st["gateway_stale"]
    rep = k.eng.operator(OperatorCommand("flatten", "drill", key="op-flatten-1"))
    assert rep.ok and k.gw.actions()[-1] == ("flatten", 0)


def test_config_defaults_keep_the_status_question_short():
    sect = EngineConfig()
    assert sect.status_timeout_s <= 1.0 < sect.heartbeat_s * 2
    assert sect.stale_command_timeout_ms <= 250


def test_a_silent_gateway_makes_the_view_stale_without_any_request():
    k = Kit(MON)
    k.advance(1)
    for _ in range(3):            # every service beats but the gateway
        k.beat(services=("feed", "inference", "positions"))
        k.advance(1, beat=False)
    assert k.eng.gateway_stale.startswith("gateway status stale: no heartbeat from the order gateway")
    assert k.eng.need_status
    k.predict(1, 0.9)
    assert k.gw.commands == []


def test_an_exit_lost_by_a_restarted_gateway_is_sent_again_with_the_same_key():
    k = Kit(MON)
    k.position(1)
    k.advance(1)
    k.predict(-1, 0.7)           # below reverse_confidence: an exit
    assert k.gw.actions() == [("exit", 0)] and k.eng.pending is not None
    exit_key = k.gw.commands[0].key
    k.eng.gateway_unanswered("the order gateway disconnected")     # killed before the outcome
    k.gw.replies.clear()                                            # the restarted one never answered it
    k.eng.sync_status({"in_flight": [], "position": {"contract": "x", "direction": 1, "size": 1}})
    assert [c.key for c in k.gw.commands] == [exit_key, exit_key]
    assert k.eng.pending is not None and k.eng.pending.key == exit_key and not k.eng.gateway_stale
    # bounded: a gateway that keeps losing it is not asked forever
    for _ in range(5):
        k.eng.sync_status({"in_flight": [], "position": None})
    assert len(k.gw.commands) == 1 + 3
    # once flat, nothing is sent again
    k.position(0)
    k.eng.sync_status({"in_flight": [], "position": None})
    assert len(k.gw.commands) == 4


def test_a_done_exit_is_not_sent_again():
    k = Kit(MON)
    k.position(1)
    k.advance(1)
    k.predict(-1, 0.7)
    k.position(0)                # the keeper saw it closed: pending done
    k.eng.sync_status({"in_flight": [], "position": None})
    assert len(k.gw.commands) == 1
