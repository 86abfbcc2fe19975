"""Position sizing, stop and target distances, bracket prices. Pure integer math.

    size = floor(max_risk_per_trade * B / (S * V + F))

capped by max_contracts and by what the remaining daily loss allowance can absorb.
Zero means skip: never rounded up.
"""
from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction


def stop_distance(atr_ticks: float, stop_atr_multiple: float, min_stop: int, max_stop: int) -> int:
    """round(stop_atr_multiple * ATR) ticks, clamped to [min_stop, max_stop]."""
    raw = Decimal(repr(float(stop_atr_multiple))) * Decimal(repr(float(atr_ticks)))
    ticks = int(raw.to_integral_value(rounding=ROUND_HALF_UP))
    return max(min_stop, min(max_stop, ticks))


def target_distance(stop_ticks: int, reward_risk: float) -> int:
    """stop * reward_risk rounded to whole ticks (at least one tick)."""
    raw = Decimal(int(stop_ticks)) * Decimal(repr(float(reward_risk)))
    return max(1, int(raw.to_integral_value(rounding=ROUND_HALF_UP)))


def risk_per_contract(stop_ticks: int, tick_value_cents: int, round_trip_fee_cents: int) -> int:
    """What one contract loses, in cents, if its stop is hit (fees included)."""
    return int(stop_ticks) * int(tick_value_cents) + int(round_trip_fee_cents)


def position_size(balance_cents: int, stop_ticks: int, tick_value_cents: int, round_trip_fee_cents: int,
                  max_risk_per_trade: float, max_contracts: int,
                  remaining_loss_cents: int | None = None) -> int:
    """Contracts for one trade; 0 means skip the trade."""
    per = risk_per_contract(stop_ticks, tick_value_cents, round_trip_fee_cents)
    if per <= 0 or balance_cents <= 0:
        return 0
    budget = Fraction(repr(float(max_risk_per_trade))) * int(balance_cents)
    size = int(budget // per)
    if remaining_loss_cents is not None:
        size = min(size, max(0, int(remaining_loss_cents)) // per)
    return max(0, min(size, int(max_contracts)))


def bracket_prices(fill_ticks: int, direction: int, stop_ticks: int, target_ticks: int) -> tuple[int, int]:
    """(stop price, target price) in ticks from the actual fill; on the grid by construction."""
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, not {direction!r}")
    return fill_ticks - direction * stop_ticks, fill_ticks + direction * target_ticks


def fill_to_ticks(price: Decimal | str, tick_size: Decimal) -> int:
    """An average fill price (may be off the grid) -> nearest tick."""
    return int((Decimal(str(price)) / tick_size).to_integral_value(rounding=ROUND_HALF_UP))


def spread_ok(spread_ticks: int, slippage_buffer_ticks: int) -> bool:
    """A market entry is refused when the spread is wider than 1 + slippage_buffer_ticks."""
    return spread_ticks <= 1 + slippage_buffer_ticks
