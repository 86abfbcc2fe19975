"""Position sizing, stop and target distances, bracket prices. Pure integer math.

    size = floor(max_risk_per_trade * B / (S * V + F))

capped by max_contracts and by what the remaining daily loss allowance can absorb.
Zero means skip: never rounded up.
"""
from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

from common.brackets import bracket_prices, stop_distance, target_distance  # noqa: F401  (one definition, shared with training and the backtest)


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


def fill_to_ticks(price: Decimal | str, tick_size: Decimal) -> int:
    """An average fill price (may be off the grid) -> nearest tick."""
    return int((Decimal(str(price)) / tick_size).to_integral_value(rounding=ROUND_HALF_UP))


def spread_ok(spread_ticks: int, slippage_buffer_ticks: int) -> bool:
    """A market entry is refused when the spread is wider than 1 + slippage_buffer_ticks."""
    return spread_ticks <= 1 + slippage_buffer_ticks
