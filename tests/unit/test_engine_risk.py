"""Account rules, model-aware gates, spread gate, rule state transitions."""
import dataclasses

import pytest

from common.instruments import INSTRUMENTS
from common.messages import Account, Prediction
from services.engine import risk as R

NS = 1_000_000_000
P = R.RiskParams()


def acct(**kw):
    base = dict(account_id=1, balance_cents=100_000, trading_day="2026-03-09")
    base.update(kw)
    return Account(**base)


@pytest.mark.parametrize("realized,unrealized,flatten", [
    (0, 0, None), (-4999, 0, None), (-5000, 0, "daily_loss"), (-3000, -2000, "daily_loss"),
    (-3000, -1999, None), (2000, -7000, "daily_loss"), (-6000, 2000, None),
])
def test_daily_loss_on_realized_plus_unrealized(realized, unrealized, flatten):
    v = R.account_rules(P, acct(realized_day_cents=realized), unrealized)
    assert (v.flatten[0] if v.flatten else None) == flatten
    assert (R.DAILY_LOSS in v.blocks) == (flatten is not None)


def test_consecutive_losses_block_entries_only():
    v = R.account_rules(P, acct(consecutive_losses=4), 0)
    assert v.blocks == {}
    v = R.account_rules(P, acct(consecutive_losses=5), 0)
    assert R.CONSECUTIVE_LOSSES in v.blocks and v.flatten is None


def test_min_balance_explicit_and_from_trailing_drawdown():
    p = R.RiskParams(min_balance_cents=95_000)
    assert R.MIN_BALANCE in R.account_rules(p, acct(balance_cents=95_000), 0).blocks
    assert R.MIN_BALANCE not in R.account_rules(p, acct(balance_cents=95_001), 0).blocks
    assert R.account_rules(P, acct(balance_cents=1), 0).blocks.get(R.MIN_BALANCE) is None  # none configured


def test_trailing_drawdown_flattens_and_halts():
    p = R.RiskParams(max_trailing_drawdown_cents=20_000, starting_capital_cents=100_000)
    assert R.account_rules(p, acct(balance_cents=110_000, high_water_cents=125_000), 0).flatten is None
    v = R.account_rules(p, acct(balance_cents=104_999, high_water_cents=125_000), 0)
    assert v.flatten[0] == R.TRAILING_DRAWDOWN and R.TRAILING_DRAWDOWN in v.blocks
    # unrealized counts; high water never below the starting capital
    assert R.account_rules(p, acct(balance_cents=80_000), -1).flatten[0] == R.TRAILING_DRAWDOWN
    assert R.account_rules(p, acct(balance_cents=80_000), 0).flatten is None


def test_broker_cannot_trade_blocks():
    assert R.ACCOUNT_CANNOT_TRADE in R.account_rules(P, acct(can_trade=False), 0).blocks


def test_no_account_yet_no_rules():
    v = R.account_rules(P, None, 0)
    assert v.blocks == {} and v.flatten is None


def pred(**kw):
    base = dict(contract="CON.F.US.MES.H26", bar_start_ns=100 * NS, direction=1, confidence=0.8,
                probs=[0.1, 0.1, 0.8], model_version="v1", close_ticks=24200, atr_ticks=4.0, spread_ticks=1,
                feature_us=100.0, inference_us=200.0)
    base.update(kw)
    return Prediction(**base)


@pytest.mark.parametrize("kw,now_s,gates", [
    ({}, 101, set()),
    ({}, 104, set()),                                    # bar ended at 101: 3 s old is the limit
    ({}, 104.001, {R.PREDICTION_STALE}),
    ({"feature_us": 5001.0}, 101, {R.SLOW_FEATURES}),
    ({"feature_us": 5000.0}, 101, set()),
    ({"inference_us": 10_001.0}, 101, {R.SLOW_INFERENCE}),
    ({"features_in_range": False, "out_of_range": ["ret_5"]}, 101, {R.FEATURES_OUT_OF_RANGE}),
    ({"atr_ticks": 0.0}, 101, {R.ATR_NOT_WARM}),
    ({"atr_ticks": 0.0, "inference_us": 20_000.0}, 200, {R.ATR_NOT_WARM, R.SLOW_INFERENCE, R.PREDICTION_STALE}),
])
def test_prediction_gates(kw, now_s, gates):
    assert set(R.prediction_gates(P, pred(**kw), int(now_s * NS))) == gates


def test_out_of_range_detail_names_the_features():
    g = R.prediction_gates(P, pred(features_in_range=False, out_of_range=["ret_5", "vol_30"]), 101 * NS)
    assert "ret_5,vol_30" in g[R.FEATURES_OUT_OF_RANGE]


def test_range_policy_flag_lets_out_of_range_through_but_never_the_warm_up():
    flag = dataclasses.replace(P, range_policy="flag")
    assert R.prediction_gates(flag, pred(features_in_range=False, out_of_range=["ret_5"]), 101 * NS) == {}
    warm = pred(features_in_range=False, out_of_range=["ret_5", "warmup"])
    assert set(R.prediction_gates(flag, warm, 101 * NS)) == {R.FEATURES_OUT_OF_RANGE}


def test_spread_gate():
    assert R.spread_gate(P, 2) == {}
    assert R.SPREAD in R.spread_gate(P, 3)


def test_plan_entry_caps_by_open_contracts_and_daily_allowance():
    mes = INSTRUMENTS["MES"]
    assert R.plan_entry(P, mes, 4.0, 100_000, 0).size == 2
    assert R.plan_entry(P, mes, 4.0, 100_000, 0, open_contracts=1).size == 1
    assert R.plan_entry(P, mes, 4.0, 100_000, -4200).size == 0         # 800 left < 824 per contract
    p = R.plan_entry(P, mes, 4.0, 100_000, 0)
    assert (p.stop_ticks, p.target_ticks) == (6, 9)


def test_rule_state_reports_trips_and_clears_once():
    s = R.RuleState()
    ev = s.update({"consecutive_losses": "5 in a row"})
    assert [(e.kind, e.active) for e in ev] == [("consecutive_losses", True)]
    assert s.update({"consecutive_losses": "5 in a row"}) == []
    assert [(e.kind, e.active) for e in s.update({})] == [("consecutive_losses", False)]
