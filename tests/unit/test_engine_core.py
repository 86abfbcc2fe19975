"""The engine core on an EventClock with a fake gateway: every rule end to end, no sockets, no sleeps."""
import pytest

from common.messages import Account, OperatorCommand, OrderEvent, RiskEvent, Signal
from common.clock import to_ny
from tests.unit._engine_kit import CONTRACT, NS, Kit, ny

MON = ny(2026, 3, 9, 10, 0)        # the Monday after the spring DST change


def entries(k):
    return [c for c in k.gw.commands if c.action in ("enter", "reverse")]


def blocked(k):
    return {m.kind.split(":", 1)[1] for m in k.kinds(RiskEvent) if m.kind.startswith("entry_blocked:")}


def test_long_entry_sends_enter_with_size_stop_target_and_deterministic_key(caplog):
    k = Kit(MON)
    k.advance(2)
    p = k.predict(1, 0.78, atr=4.0)
    (cmd,) = k.gw.commands
    assert (cmd.action, cmd.direction, cmd.size, cmd.stop_ticks, cmd.target_ticks) == ("enter", 1, 2, 6, 9)
    assert cmd.key == cmd.signal_id == f"LE{p.bar_start_ns // NS}"
    assert cmd.model_version == "v1" and cmd.contract == CONTRACT
    (sig,) = k.kinds(Signal)
    assert (sig.kind, sig.signal_id, sig.price_ticks) == ("LONG_ENTRY", cmd.key, 24200)


def test_signal_log_line(capsys):
    from loguru import logger
    lines = []
    hid = logger.add(lambda m: lines.append(str(m)), format="{message}")
    try:
        k = Kit(MON)
        k.price = 24201
        k.predict(1, 0.781)
    finally:
        logger.remove(hid)
    assert any(line.startswith("SIGNAL: LONG_ENTRY conf=0.78 price=6050.25") for line in lines)


def test_the_signal_is_announced_once_its_command_is_on_the_wire_and_also_when_the_gateway_is_down():
    k = Kit(MON)
    order = []
    real = k.gw

    def gateway(cmd, hops, on_sent=None):
        order.append(("sent", len(k.kinds(Signal))))
        return real(cmd, hops, on_sent)
    k.eng.send = gateway
    k.predict(1, 0.78)
    assert order == [("sent", 0)] and len(k.kinds(Signal)) == 1     # published after the send, once
    k2 = Kit(MON)
    k2.gw.down = True                                               # never reached: still announced
    k2.predict(1, 0.78)
    assert len(k2.gw.commands) == 1 and len(k2.kinds(Signal)) == 1


def test_no_second_entry_while_one_is_in_flight_then_reverse_and_exit():
    k = Kit(MON)
    k.predict(1, 0.8)
    k.advance(1)
    k.predict(1, 0.9)
    k.predict(-1, 0.9)
    assert len(k.gw.commands) == 1                         # in flight: nothing else
    k.position(1, 2)                                       # filled
    k.advance(1)
    k.predict(1, 0.9)                                      # agrees: hold
    assert len(k.gw.commands) == 1
    k.advance(1)
    p = k.predict(-1, 0.8)
    cmd = k.gw.commands[-1]
    assert (cmd.action, cmd.direction, cmd.size, cmd.key) == ("reverse", -1, 2, f"RS{p.bar_start_ns // NS}")
    k.advance(1)
    k.predict(1, 0.95)
    assert len(k.gw.commands) == 2                         # the reversal is in flight
    k.position(-1, 2)
    k.advance(1)
    p = k.predict(1, 0.7)                                  # against, under the reverse threshold
    cmd = k.gw.commands[-1]
    assert (cmd.action, cmd.key) == ("exit", f"XS{p.bar_start_ns // NS}")
    k.position(0)
    k.advance(1)
    k.predict(-1, 0.7)
    assert k.gw.commands[-1].action == "enter" and k.gw.commands[-1].direction == -1


def test_snapshot_and_repeated_predictions_are_not_acted_on():
    k = Kit(MON)
    p = k.predict(1, 0.8)
    k.eng.pending = None
    k.eng.on_prediction(p)                                  # same bar again
    from common.messages import Prediction
    newer = Prediction(CONTRACT, p.bar_start_ns + NS, 1, 0.9, [], "v1", 24200, 4.0, 1, 1.0, 1.0)
    k.eng.on_prediction(newer, snapshot=True)
    assert len(k.gw.commands) == 1


def test_max_holding_exit_from_the_timer():
    k = Kit(MON)
    k.position(1, 1, entry_ns=MON - 899 * NS)
    k.advance(1)
    assert k.gw.commands == []
    k.advance(1.5)
    (cmd,) = k.gw.commands
    assert cmd.action == "exit" and cmd.key.startswith("XL")


def test_max_holding_exit_on_a_prediction_even_under_min_confidence():
    k = Kit(MON)
    k.position(-1, 1, entry_ns=MON - 1000 * NS)
    k.eng.pending = None
    k.gw.commands.clear()
    k.predict(-1, 0.1)
    assert k.gw.commands[-1].action == "exit" and k.gw.commands[-1].key.startswith("XS")


@pytest.mark.parametrize("day,flat_local,entries_stop_local", [
    ((2026, 3, 9), (16, 25), (16, 15)),       # first Monday of EDT
    ((2026, 11, 2), (16, 25), (16, 15)),      # first Monday of EST
    ((2026, 11, 27), (12, 55), (12, 45)),     # day after Thanksgiving: early close, same minutes before
])
def test_end_of_day_no_new_entries_then_flatten_on_new_york_time(day, flat_local, entries_stop_local):
    y, mo, d = day
    stop_ns = ny(y, mo, d, *entries_stop_local)
    flat_ns = ny(y, mo, d, *flat_local)
    k = Kit(stop_ns - 3 * NS)
    k.advance(1)
    k.predict(1, 0.8)
    assert len(entries(k)) == 1                              # 16:14:58: still allowed
    k.position(1, 1)
    k.position(0)
    k.advance(2)
    k.predict(1, 0.8)                                        # 16:15:00: no new entries
    assert len(entries(k)) == 1 and "session" in blocked(k)
    k.position(1, 1)
    k.advance(1)
    k.predict(-1, 0.7)                                       # exits still allowed
    assert k.gw.commands[-1].action == "exit"
    k.position(1, 1)                                         # (say the exit was refused)
    k.eng.pending = None
    k.clock.advance(flat_ns - 2 * NS)
    k.advance(1)
    assert all(c.action != "flatten" for c in k.gw.commands)
    k.advance(1)                                             # flatten time
    fl = [c for c in k.gw.commands if c.action == "flatten"]
    assert len(fl) == 1 and fl[0].key == f"FL{flat_ns // NS}"
    assert to_ny(flat_ns).strftime("%H:%M") == "%02d:%02d" % flat_local
    k.advance(3)
    assert len([c for c in k.gw.commands if c.action == "flatten"]) == 1   # once a day
    k.advance(1)
    k.predict(1, 0.99)                                       # nothing after the flatten
    assert len(entries(k)) == 1


def test_flatten_resent_when_still_holding_after_the_flatten_time():
    k = Kit(ny(2026, 3, 9, 16, 24, 59))
    k.position(1, 1)
    k.advance(1)
    assert [c.action for c in k.gw.commands] == ["flatten"]
    k.eng.pending = None                                     # the flatten was answered, position remains
    k.advance(16)
    assert [c.action for c in k.gw.commands] == ["flatten", "flatten"]
    assert k.gw.commands[0].key != k.gw.commands[1].key


def test_daily_loss_flattens_and_halts_for_the_day_then_next_day_trades():
    k = Kit(MON)
    k.position(1, 1, unrealized=-2000)
    k.eng.on_account(Account(1, 97_000, "2026-03-09", realized_day_cents=-2999))
    assert k.gw.commands == []
    k.position(1, 1, unrealized=-2001)                       # -29.99 - 20.01 = -50.00
    (cmd,) = k.gw.commands
    assert cmd.action == "flatten" and cmd.reason == "daily_loss"
    assert any(m.kind == "daily_loss" and m.active for m in k.kinds(RiskEvent))
    k.position(0)
    k.eng.on_account(Account(1, 95_000, "2026-03-09", realized_day_cents=-5000))
    k.advance(1)
    k.predict(1, 0.9)
    assert len(k.gw.commands) == 1 and "day_halt" in blocked(k)
    # next trading day: the keeper's day P&L starts again at zero
    k.clock.advance(ny(2026, 3, 10, 10, 0))
    k.eng.on_account(Account(1, 95_000, "2026-03-10"))
    k.advance(1)
    k.predict(1, 0.9)
    assert k.gw.commands[-1].action == "enter"


def test_consecutive_losses_and_min_balance_block_entries_and_clear():
    k = Kit(MON, risk={"min_balance": 900})
    k.eng.on_account(Account(1, 100_000, "2026-03-09", consecutive_losses=5))
    k.predict(1, 0.9)
    assert k.gw.commands == [] and "consecutive_losses" in blocked(k)
    k.eng.on_account(Account(1, 90_000, "2026-03-09"))
    k.advance(1)
    k.predict(1, 0.9)
    assert k.gw.commands == [] and "min_balance" in blocked(k)
    k.eng.on_account(Account(1, 90_001, "2026-03-09"))
    assert any(m.kind == "min_balance" and not m.active for m in k.kinds(RiskEvent))
    k.advance(1)
    k.predict(1, 0.9)
    assert k.gw.commands[-1].action == "enter"


def test_trailing_drawdown_flattens():
    k = Kit(MON, risk={"max_trailing_drawdown": 100})
    k.position(1, 1)
    k.eng.on_account(Account(1, 94_999, "2026-03-09", high_water_cents=105_000))
    assert k.gw.commands[-1].action == "flatten" and k.gw.commands[-1].reason == "trailing_drawdown"


def test_size_zero_skips_and_sizing_caps():
    k = Kit(MON)
    k.eng.on_account(Account(1, 30_000, "2026-03-09"))
    k.predict(1, 0.9, atr=4.0)
    assert k.gw.commands == [] and "size_zero" in blocked(k)
    k2 = Kit(MON, risk={"max_contracts": 1})
    k2.predict(-1, 0.9, atr=10.0)
    (cmd,) = k2.gw.commands
    assert (cmd.size, cmd.stop_ticks, cmd.target_ticks) == (1, 15, 23)


def test_spread_check_and_model_gates_block_entries_with_a_logged_risk_event():
    k = Kit(MON)
    k.quote(24200, 24203)                                   # 3 ticks > 1 + buffer 1
    k.predict(1, 0.9)
    assert k.gw.commands == [] and "spread_too_wide" in blocked(k)
    k.quote(24200, 24202)
    k.advance(1)
    stale = Kit(MON)
    stale.advance(1)
    stale.predict(1, 0.9, age_s=5)                          # bar ended 5 s before the clock
    assert stale.gw.commands == [] and "prediction_stale" in blocked(stale)
    k.advance(1)
    k.predict(1, 0.9, inference_us=50_000.0)
    k.advance(1)
    k.predict(1, 0.9, feature_us=9_000.0)
    k.advance(1)
    k.predict(1, 0.9, features_in_range=False, out_of_range=["ret_1"])
    k.advance(1)
    k.predict(1, 0.9, atr=0.0)
    assert k.gw.commands == []
    assert {"slow_inference", "slow_features", "features_out_of_range",
            "atr_not_warm"} <= blocked(k)
    k.advance(1)
    k.predict(1, 0.9)
    assert k.gw.commands[-1].action == "enter"


def test_repeated_identical_blocks_are_rate_limited():
    k = Kit(MON)
    k.eng.on_account(Account(1, 100_000, "2026-03-09", consecutive_losses=9))
    for _ in range(5):
        k.advance(1)
        k.predict(1, 0.9)
    n = len([m for m in k.kinds(RiskEvent) if m.kind == "entry_blocked:consecutive_losses"])
    assert n == 1
    k.advance(31)
    k.predict(1, 0.9)
    assert len([m for m in k.kinds(RiskEvent) if m.kind == "entry_blocked:consecutive_losses"]) == 2


def test_breaker_blocks_entry_but_not_exit_and_reverse_becomes_exit():
    k = Kit(MON)
    k.quote(24200, 24206)                                   # wide spread breaker
    assert "wide_spread" in k.eng.breakers.active
    k.predict(1, 0.9)
    assert k.gw.commands == []
    k.position(1, 1)
    k.advance(1, quote=False)
    k.predict(-1, 0.9)                                       # would reverse; entry blocked -> exit
    (cmd,) = k.gw.commands
    assert cmd.action == "exit" and cmd.key.startswith("XL")
    k.position(0)
    k.quote(24200, 24201)
    assert "wide_spread" not in k.eng.breakers.active


def test_stale_data_and_silent_service_block_entries_until_they_recover():
    k = Kit(MON)
    k.advance(6, quote=False)
    assert "stale_data" in k.eng.breakers.active
    k.predict(1, 0.9)
    assert k.gw.commands == []
    k.quote()
    assert "stale_data" not in k.eng.breakers.active
    k.advance(4, beat=False)
    assert "silent_service" in k.eng.breakers.active
    k.predict(1, 0.9)
    assert k.gw.commands == [] and "breaker_silent_service" in blocked(k)
    k.advance(1)                                             # heartbeats return
    assert "silent_service" not in k.eng.breakers.active
    k.advance(1)
    k.predict(1, 0.9)
    # the gateway was silent too: its view stays stale until its status is read again
    assert k.gw.commands == [] and "gateway_stale" in blocked(k) and k.eng.need_status
    k.eng.sync_status({"in_flight": [], "position": None, "halted": False})
    k.advance(1)
    k.predict(1, 0.9)
    assert k.gw.commands[-1].action == "enter"


def test_reject_storm_from_replies_cools_down():
    k = Kit(MON)
    k.gw.status = "rejected"
    for _ in range(3):
        k.advance(1)
        k.predict(1, 0.9)
    assert len(k.gw.commands) == 3 and "reject_storm" in k.eng.breakers.active
    k.gw.status = "accepted"
    k.advance(1)
    k.predict(1, 0.9)
    assert len(k.gw.commands) == 3
    k.advance(300, step=5)
    assert "reject_storm" not in k.eng.breakers.active
    k.predict(1, 0.9)
    assert k.gw.commands[-1].action == "enter" and len(k.gw.commands) == 4


def test_rejected_entry_order_event_clears_in_flight_and_counts():
    k = Kit(MON)
    k.predict(1, 0.9)
    key = k.gw.commands[0].key
    k.eng.on_order_event(OrderEvent(7, f"{key}:entry:0", CONTRACT, "entry", 0, 2, 1, 5, intent_key=key))
    k.eng.on_order_event(OrderEvent(7, f"{key}:entry:0", CONTRACT, "entry", 0, 2, 1, 5, intent_key=key))
    assert k.eng.pending is None and k.eng.counts["rejects"] == 1
    k.advance(1)
    k.predict(1, 0.9)
    assert len(k.gw.commands) == 2


def test_position_mismatch_blocks_and_flattens_a_position_without_stop():
    k = Kit(MON)
    k.eng.on_risk_event(RiskEvent("position_mismatch", True, "ERROR", "broker 1 keeper 0"))
    k.predict(1, 0.9)
    assert k.gw.commands == [] and "position_mismatch" in k.eng.breakers.active
    k.position(1, 1, stop_order_id=None)
    k.eng.on_risk_event(RiskEvent("position_mismatch", True, "ERROR", "again"))
    assert [c.action for c in k.gw.commands] == ["flatten"]
    k.eng.on_risk_event(RiskEvent("position_mismatch", False, "INFO", "sync"))
    assert "position_mismatch" not in k.eng.breakers.active


def test_operator_halt_resume_flatten_status():
    k = Kit(MON)
    r = k.eng.operator(OperatorCommand("halt", "lunch"))
    assert r.ok and r.data["halted"] and r.data["breakers"] == ["manual_halt"]
    k.predict(1, 0.9)
    assert k.gw.commands == []
    r = k.eng.operator(OperatorCommand("resume"))
    assert r.ok and not r.data["halted"] and r.data["breakers"] == []
    k.advance(1)
    k.predict(1, 0.9)
    assert k.gw.commands[-1].action == "enter"
    k.position(1, 2)
    r = k.eng.operator(OperatorCommand("flatten", "op", key="op-flatten-1"))
    assert r.ok and k.gw.commands[-1].action == "flatten" and k.gw.commands[-1].key == "op-flatten-1"
    r = k.eng.operator(OperatorCommand("status"))
    assert r.data["position"] == {"contract": CONTRACT, "direction": 1, "size": 2}
    assert not k.eng.operator(OperatorCommand("dance")).ok


def test_restart_waits_for_gateway_status_and_respects_in_flight_keys():
    k = Kit(MON, synced=False)
    k.predict(1, 0.9)
    assert k.gw.commands == [] and "gateway_status_unknown" in blocked(k)
    k.eng.sync_status({"in_flight": ["LE1773064799"], "position": None})
    k.advance(1)
    k.predict(1, 0.9)
    assert k.gw.commands == []                               # an entry is still in flight
    k.position(1, 1)
    assert k.eng.pending is None
    k.advance(1)
    k.predict(1, 0.9)
    assert k.gw.commands == []                               # long already


def test_restart_uses_gateway_position_when_keeper_is_silent():
    k = Kit(MON, synced=False)
    k.eng.position_known = False
    k.eng.pos_dir = 0
    k.eng.sync_status({"in_flight": [], "position": {"contract": CONTRACT, "direction": -1, "size": 1}})
    k.predict(-1, 0.9)
    assert k.gw.commands == []


def test_gateway_silence_keeps_exposure_until_its_status_is_read():
    k = Kit(MON)
    k.gw.down = True
    k.predict(1, 0.9)
    assert k.eng.pending is not None and k.eng.pending.unknown and k.eng.need_status
    k.gw.down = False
    k.advance(1)
    k.predict(1, 0.9)
    assert len(k.gw.commands) == 1
    k.eng.sync_status({"in_flight": [], "position": None})  # it never got there
    assert k.eng.pending is None
    k.advance(1)
    k.predict(1, 0.9)
    assert len(k.gw.commands) == 2


def test_pending_timeout_asks_for_status():
    k = Kit(MON)
    k.predict(1, 0.9)
    k.eng.need_status = False
    k.advance(11)
    assert k.eng.need_status
    key = k.gw.commands[0].key
    k.eng.sync_status({"in_flight": [key], "position": None})
    assert k.eng.pending is not None and not k.eng.need_status


def test_price_shock_from_quotes_blocks_entries_for_60s():
    k = Kit(MON)
    k.predict(0, 0.9, atr=2.0)                               # warms the ATR
    k.quote(24200, 24201)
    k.quote(24210, 24211)
    assert "price_shock" in k.eng.breakers.active
    k.price = 24210
    k.advance(59)
    assert "price_shock" in k.eng.breakers.active
    k.advance(2)
    assert "price_shock" not in k.eng.breakers.active


def test_feed_status_lost_trips_stale_data_at_once_and_a_quote_clears_it():
    k = Kit(MON)
    k.eng.on_feed_status("reconnecting", "hub closed")
    assert "stale_data" in k.eng.breakers.active
    k.predict(1, 0.9)
    assert k.gw.commands == []
    k.quote()
    assert "stale_data" not in k.eng.breakers.active
    k.eng.on_feed_status("subscribed")
    assert "stale_data" not in k.eng.breakers.active


class ScriptedGateway:
    def __init__(self, *replies):
        from common.messages import OrderReply
        self.replies = list(replies)
        self.commands = []
        self.R = OrderReply

    def __call__(self, cmd, hops, on_sent=None):
        self.commands.append(cmd)
        status, ok, detail = self.replies.pop(0) if self.replies else ("accepted", True, {})
        return self.R(cmd.key, ok, status, "", detail)


def test_gateway_reply_kinds():
    k = Kit(MON)
    k.eng.send = gw = ScriptedGateway(("error", False, {"in_flight": True}))
    k.predict(1, 0.9)                                      # outcome unknown: exposure until status
    assert k.eng.pending is not None and k.eng.pending.unknown and k.eng.need_status
    k.eng.sync_status({"in_flight": [gw.commands[0].key], "position": None})
    k.advance(1)
    k.predict(1, 0.9)
    assert len(gw.commands) == 1
    k.position(1, 1)
    k.eng.send = gw = ScriptedGateway(("refused", True, {}))
    k.advance(1)
    k.predict(-1, 0.9)                                     # reverse: exited, entry refused -> expect flat
    assert gw.commands[0].action == "reverse" and k.eng.pending.target == 0
    k.position(0)
    assert k.eng.pending is None
    k.eng.send = gw = ScriptedGateway(("flat", True, {}))
    k.eng.operator(OperatorCommand("flatten"))
    assert k.eng.pending is None                           # already flat: nothing to wait for
    k.eng.send = gw = ScriptedGateway(("refused", False, {}))
    k.advance(1)
    k.predict(1, 0.9)
    assert k.eng.pending is None and k.eng.counts["rejects"] == 1    # the unknown-outcome error only


def test_a_reject_seen_as_reply_and_order_event_counts_once():
    k = Kit(MON)
    k.eng.send = ScriptedGateway(("rejected", False, {"order_id": 41, "code": 7}))
    k.predict(1, 0.9)
    key = k.eng.send.commands[0].key
    k.eng.on_order_event(OrderEvent(41, f"{key}:entry:0", CONTRACT, "entry", 0, 2, 1, 5, intent_key=key))
    assert k.eng.counts["rejects"] == 1 and len(k.eng.breakers.rejects) == 1


def test_the_gateways_own_halt_blocks_entries_until_it_resumes():
    """A halt the gateway latched (operator, or its own daily-loss guard) is mirrored: the engine
    stops sending entries the gateway would refuse, and sends them again once it resumes."""
    k = Kit(MON)
    k.eng.on_risk_event(RiskEvent("daily_loss", True, "ERROR", "day P&L -100000 cents"), "orders")
    k.predict(1, 0.9)
    assert k.gw.commands == [] and "gateway_halt" in blocked(k)
    assert k.eng.operator(OperatorCommand("status")).data["gateway_halt"] == "day P&L -100000 cents"
    k.eng.on_risk_event(RiskEvent("halt", True, "WARNING", "x"), "positions")     # not the gateway's
    k.eng.on_risk_event(RiskEvent("halt", False, "WARNING", "new trading day"), "orders")
    k.advance(1)
    k.predict(1, 0.9)
    assert k.gw.commands[-1].action == "enter"


def test_a_halted_reply_or_status_sets_the_gateway_halt():
    k = Kit(MON)
    k.gw.status = "halted"
    k.predict(1, 0.9)
    assert len(k.gw.commands) == 1 and k.eng.gateway_halt
    k.gw.status = "accepted"
    k.advance(1)
    k.predict(1, 0.9)
    assert len(k.gw.commands) == 1                      # not sent again while halted
    k.eng.sync_status({"in_flight": [], "position": None, "halted": False})
    k.advance(1)
    k.predict(1, 0.9)
    assert len(k.gw.commands) == 2
