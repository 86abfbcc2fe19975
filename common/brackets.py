"""The bracket trade, once: stop and target distances, bracket prices, and how a bracket ends.

The engine sizes and places the bracket with these functions (services/engine/sizing.py
re-exports them); training labels each bar with the outcome of exactly this bracket, and
the backtest closes its positions with it. Pure integer tick math, no sockets.

How a bracket ends on a tape of ticks (the simulator's fill rules, services/sim/matching.py):
- the stop triggers when the bid (long) / ask (short) or a trade reaches the stop price and
  then fills as a market order at the bid (long) / ask (short) of that moment;
- the target is a limit: it fills at its price when the bid (long) / ask (short) reaches it,
  or when a trade prints through it (`limit_fill="through"`, the default, conservative) or at
  it (`"touch"`);
- stop and target on the same event: the stop wins (the pessimistic reading);
- the maximum hold closes at market (bid for a long, ask for a short) at the first event at
  or after the deadline; a tape that ends first closes at its last quote ("end").
The entry itself is a market order: a long pays the ask, a short sells the bid.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

import numpy as np

NO_TRADE = np.iinfo(np.int64).min     # tape rows that are quotes, not trades


def stop_distance(atr_ticks: float, stop_atr_multiple: float, min_stop: int, max_stop: int) -> int:
    """round(stop_atr_multiple * ATR) ticks, clamped to [min_stop, max_stop]."""
    raw = Decimal(repr(float(stop_atr_multiple))) * Decimal(repr(float(atr_ticks)))
    ticks = int(raw.to_integral_value(rounding=ROUND_HALF_UP))
    return max(min_stop, min(max_stop, ticks))


def target_distance(stop_ticks: int, reward_risk: float) -> int:
    """stop * reward_risk rounded to whole ticks (at least one tick)."""
    raw = Decimal(int(stop_ticks)) * Decimal(repr(float(reward_risk)))
    return max(1, int(raw.to_integral_value(rounding=ROUND_HALF_UP)))


def bracket_prices(fill_ticks: int, direction: int, stop_ticks: int, target_ticks: int) -> tuple[int, int]:
    """(stop price, target price) in ticks from the actual fill; on the grid by construction."""
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, not {direction!r}")
    return fill_ticks - direction * stop_ticks, fill_ticks + direction * target_ticks


@dataclass(frozen=True)
class BracketRule:
    """The engine's bracket: stop = stop_atr_multiple x ATR clamped, target = stop x reward_risk,
    closed after max_holding_s. Built from the live config by `from_config`."""
    stop_atr_multiple: float = 1.5
    min_stop_ticks: int = 4
    max_stop_ticks: int = 40
    reward_risk: float = 1.5
    max_holding_s: float = 900.0
    limit_fill: str = "through"

    @classmethod
    def from_config(cls, cfg) -> "BracketRule":
        r = cfg.risk
        return cls(r.stop_atr_multiple, r.min_stop_ticks, r.max_stop_ticks, r.reward_risk,
                   float(cfg.model.max_holding_s))

    def distances(self, atr_ticks: float) -> tuple[int, int]:
        stop = stop_distance(atr_ticks, self.stop_atr_multiple, self.min_stop_ticks, self.max_stop_ticks)
        return stop, target_distance(stop, self.reward_risk)


@dataclass
class Tape:
    """Every market event in time order: quotes (trade = NO_TRADE) and trades (with the book
    standing at that moment). Integer ticks and ns."""
    ts_ns: np.ndarray      # int64
    bid: np.ndarray        # int64 (0 before the first quote)
    ask: np.ndarray        # int64
    trade: np.ndarray      # int64, NO_TRADE on quote rows

    def __len__(self) -> int:
        return len(self.ts_ns)

    def index_at(self, ts_ns: int) -> int:
        """First event at or after ts_ns."""
        return int(np.searchsorted(self.ts_ns, ts_ns, side="left"))


@dataclass(frozen=True)
class Exit:
    index: int          # tape row of the exit (len(tape) - 1 for "end")
    ts_ns: int
    price_ticks: int
    reason: str         # target, stop, max_hold, end


def bracket_exit(tape: Tape, start: int, direction: int, stop_px: int, target_px: int,
                 deadline_ns: int, limit_fill: str = "through") -> Exit:
    """How a bracket entered before tape row `start` ends (module docstring for the rules)."""
    n = len(tape)
    end = int(np.searchsorted(tape.ts_ns, deadline_ns, side="left"))
    bid, ask, tr = tape.bid[start:end], tape.ask[start:end], tape.trade[start:end]
    has = tr != NO_TRADE
    if direction > 0:
        stop_hit = ((bid > 0) & (bid <= stop_px)) | (has & (tr <= stop_px))
        tgt_hit = (bid >= target_px) | (has & ((tr > target_px) if limit_fill == "through" else (tr >= target_px)))
    else:
        stop_hit = ((ask > 0) & (ask >= stop_px)) | (has & (tr >= stop_px))
        tgt_hit = ((ask > 0) & (ask <= target_px)) | \
            (has & ((tr < target_px) if limit_fill == "through" else (tr <= target_px)))
    i_stop = int(np.argmax(stop_hit)) if stop_hit.any() else None
    i_tgt = int(np.argmax(tgt_hit)) if tgt_hit.any() else None
    if i_stop is not None and (i_tgt is None or i_stop <= i_tgt):
        k = start + i_stop
        px = int(tape.bid[k] if direction > 0 else tape.ask[k])
        if px <= 0:
            px = stop_px
        return Exit(k, int(tape.ts_ns[k]), px, "stop")
    if i_tgt is not None:
        k = start + i_tgt
        book = int(tape.bid[k] if direction > 0 else tape.ask[k])
        px = max(book, target_px) if direction > 0 else (min(book, target_px) if book > 0 else target_px)
        return Exit(k, int(tape.ts_ns[k]), px, "target")
    k, reason = (end, "max_hold") if end < n else (n - 1, "end")
    px = int(tape.bid[k] if direction > 0 else tape.ask[k])
    return Exit(k, int(tape.ts_ns[k]), px, reason)


def net_ticks(direction: int, entry_ticks: int, exit_ticks: int, round_trip_fee_cents: int,
              tick_value_cents: int) -> float:
    """A round trip's result per contract in ticks, after the fees (fees converted to ticks)."""
    return direction * (exit_ticks - entry_ticks) - round_trip_fee_cents / tick_value_cents
