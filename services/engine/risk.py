"""Risk manager: account rules, model-aware entry gates, the spread check and trade sizing.

Pure: state in, decisions out. The engine logs and publishes what comes back.
"""
from __future__ import annotations

from dataclasses import dataclass

from common.instruments import Instrument
from common.messages import Account, Prediction, RiskEvent
from services.engine.sizing import position_size, spread_ok, stop_distance, target_distance

NS = 1_000_000_000

# account rules (RiskEvent kinds)
DAILY_LOSS = "daily_loss"
TRAILING_DRAWDOWN = "trailing_drawdown"
CONSECUTIVE_LOSSES = "consecutive_losses"
MIN_BALANCE = "min_balance"
ACCOUNT_CANNOT_TRADE = "account_cannot_trade"
# entry gates
PREDICTION_STALE = "prediction_stale"
SLOW_FEATURES = "slow_features"
SLOW_INFERENCE = "slow_inference"
FEATURES_OUT_OF_RANGE = "features_out_of_range"
ATR_NOT_WARM = "atr_not_warm"
SPREAD = "spread_too_wide"
SIZE_ZERO = "size_zero"


@dataclass(frozen=True)
class RiskParams:
    max_daily_loss_cents: int = 5000
    starting_capital_cents: int = 100_000
    max_risk_per_trade: float = 0.025
    max_consecutive_losses: int = 5
    min_balance_cents: int | None = None
    max_trailing_drawdown_cents: int | None = None
    max_contracts: int = 2
    stop_atr_multiple: float = 1.5
    min_stop_ticks: int = 4
    max_stop_ticks: int = 40
    reward_risk: float = 1.5
    slippage_buffer_ticks: int = 1
    max_prediction_age_s: float = 3.0
    max_feature_ms: float = 5.0
    max_inference_ms: float = 10.0
    require_atr: bool = True
    range_policy: str = "block"      # model.range_policy: "flag" lets out-of-range inputs through (warm-up never)

    @classmethod
    def from_config(cls, cfg, require_atr: bool = True) -> "RiskParams":
        r, m = cfg.risk, cfg.model
        dd = int(r.max_trailing_drawdown * 100) if r.max_trailing_drawdown is not None else None
        return cls(r.max_daily_loss_cents, r.starting_capital_cents, r.max_risk_per_trade,
                   r.max_consecutive_losses, r.min_balance_cents, dd, r.max_contracts, r.stop_atr_multiple,
                   r.min_stop_ticks, r.max_stop_ticks, r.reward_risk, cfg.execution.slippage_buffer_ticks,
                   m.max_prediction_age_s, m.max_feature_ms, m.max_inference_ms, require_atr,
                   getattr(m, "range_policy", "block"))


@dataclass(frozen=True)
class AccountVerdict:
    blocks: dict[str, str]          # rule -> detail: no new entries
    flatten: tuple[str, str] | None  # (rule, detail): flatten now and halt for the day


def account_rules(p: RiskParams, acct: Account | None, unrealized_cents: int) -> AccountVerdict:
    """Every account rule of risk-management.md against the keeper's numbers (cents, net of fees)."""
    blocks: dict[str, str] = {}
    flatten = None
    if acct is None:
        return AccountVerdict(blocks, None)
    day = acct.realized_day_cents + unrealized_cents
    if day <= -p.max_daily_loss_cents:
        flatten = (DAILY_LOSS, f"day P&L {day / 100:.2f} USD reached -{p.max_daily_loss_cents / 100:.2f}")
    if p.max_trailing_drawdown_cents is not None:
        hw = max(acct.high_water_cents, p.starting_capital_cents)
        equity = acct.balance_cents + unrealized_cents
        if equity < hw - p.max_trailing_drawdown_cents:
            detail = (f"equity {equity / 100:.2f} is more than {p.max_trailing_drawdown_cents / 100:.2f} "
                      f"below the high water {hw / 100:.2f}")
            flatten = flatten or (TRAILING_DRAWDOWN, detail)
            blocks[TRAILING_DRAWDOWN] = detail
    if flatten is not None:
        blocks[flatten[0]] = flatten[1]
    if acct.consecutive_losses >= p.max_consecutive_losses:
        blocks[CONSECUTIVE_LOSSES] = f"{acct.consecutive_losses} losing trades in a row (limit {p.max_consecutive_losses})"
    if p.min_balance_cents is not None and acct.balance_cents <= p.min_balance_cents:
        blocks[MIN_BALANCE] = f"balance {acct.balance_cents / 100:.2f} at or below {p.min_balance_cents / 100:.2f}"
    if not acct.can_trade:
        blocks[ACCOUNT_CANNOT_TRADE] = "broker says the account cannot trade"
    return AccountVerdict(blocks, flatten)


def prediction_gates(p: RiskParams, pred: Prediction, now_ns: int, bar_interval_s: int = 1) -> dict[str, str]:
    """Model-aware gates: reasons this prediction may not open a position."""
    out: dict[str, str] = {}
    bar_end = pred.bar_start_ns + bar_interval_s * NS
    age_s = (now_ns - bar_end) / NS
    if age_s > p.max_prediction_age_s:
        out[PREDICTION_STALE] = f"prediction {age_s:.1f} s old > {p.max_prediction_age_s:g} s"
    if pred.feature_us > p.max_feature_ms * 1000:
        out[SLOW_FEATURES] = f"features took {pred.feature_us / 1000:.1f} ms > {p.max_feature_ms:g} ms"
    if pred.inference_us > p.max_inference_ms * 1000:
        out[SLOW_INFERENCE] = f"inference took {pred.inference_us / 1000:.1f} ms > {p.max_inference_ms:g} ms"
    if not pred.features_in_range and (p.range_policy != "flag" or "warmup" in pred.out_of_range):
        out[FEATURES_OUT_OF_RANGE] = "features out of the training range: " + (",".join(pred.out_of_range) or "?")
    if p.require_atr and pred.atr_ticks <= 0:
        out[ATR_NOT_WARM] = "ATR not warm yet"
    return out


@dataclass(frozen=True)
class EntryPlan:
    size: int
    stop_ticks: int
    target_ticks: int
    risk_cents: int          # what the trade loses at the stop, fees included


def plan_entry(p: RiskParams, inst: Instrument, atr_ticks: float, balance_cents: int,
               day_pnl_cents: int, open_contracts: int = 0) -> EntryPlan:
    """Stop and target distances and a size (0: skip) for a new position."""
    stop = stop_distance(atr_ticks, p.stop_atr_multiple, p.min_stop_ticks, p.max_stop_ticks)
    target = target_distance(stop, p.reward_risk)
    remaining = p.max_daily_loss_cents + min(0, day_pnl_cents)
    size = position_size(balance_cents, stop, inst.tick_value_cents, inst.round_trip_fee_cents,
                         p.max_risk_per_trade, max(0, p.max_contracts - abs(open_contracts)), remaining)
    return EntryPlan(size, stop, target, size * (stop * inst.tick_value_cents + inst.round_trip_fee_cents))


def spread_gate(p: RiskParams, spread_ticks: int) -> dict[str, str]:
    if spread_ok(spread_ticks, p.slippage_buffer_ticks):
        return {}
    return {SPREAD: f"spread {spread_ticks} ticks > {1 + p.slippage_buffer_ticks} (1 + slippage buffer)"}


class RuleState:
    """Which account rules are active, reported as trips and clears (RiskEvents)."""

    def __init__(self):
        self.active: dict[str, str] = {}

    def update(self, current: dict[str, str], severity: str = "WARNING") -> list[RiskEvent]:
        out = []
        for k, d in current.items():
            if k not in self.active:
                out.append(RiskEvent(k, True, severity, d))
        for k in list(self.active):
            if k not in current:
                out.append(RiskEvent(k, False, "INFO", "cleared"))
        self.active = dict(current)
        return out
