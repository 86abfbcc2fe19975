"""Ticks -> time bars on event time (the exchange timestamps), never on arrival time.

Rules (the same in live, replay and training, because all three use this class):

- A bar covers [start, start + interval). It closes when a later trade, quote or
  feed heartbeat shows an exchange time at or past its end; nothing closes on the
  wall clock, so a replay at any speed gives the same bars.
- Intervals with no trade still produce a bar: flat at the last close, zero
  volume, the last known bid/ask. Gaps longer than `max_gap_s` are not filled
  (a session break, a feed outage): the next bar simply starts later, and a
  consumer sees bar starts that are not contiguous.
- No bar exists before the first trade (there is no price to open it at).
- Out-of-order ticks inside the open bar are folded in (arrival order decides the
  close). A tick for an interval that has already closed is late: it is counted in
  `late_ticks` and dropped, because the bar has been published and must not change.
- Bid/ask on a bar are the last quote seen up to its close (0 when none yet).
"""
from __future__ import annotations

from common.messages import Bar

NS = 1_000_000_000


class BarAggregator:
    def __init__(self, contract: str, interval_s: int = 1, max_gap_s: int = 300):
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self.contract = contract
        self.interval_s = interval_s
        self.interval_ns = interval_s * NS
        self.max_fill = max(0, max_gap_s // interval_s)
        # the open bar (None until the first trade)
        self.start_ns: int | None = None
        self.open = self.high = self.low = self.close = 0
        self.volume = self.buy_volume = self.sell_volume = self.trades = 0
        self.bid = self.ask = 0
        self.late_ticks = 0
        self.breaks = 0          # gaps longer than max_gap_s (not filled)
        self.bars_out = 0

    def _floor(self, ts_ns: int) -> int:
        return ts_ns - ts_ns % self.interval_ns

    def _emit(self) -> Bar:
        self.bars_out += 1
        return Bar(self.contract, self.interval_s, self.start_ns, self.open, self.high, self.low, self.close,
                   self.volume, self.buy_volume, self.sell_volume, self.trades, self.bid, self.ask)

    def _flat(self, start_ns: int) -> None:
        self.start_ns = start_ns
        self.open = self.high = self.low = self.close
        self.volume = self.buy_volume = self.sell_volume = self.trades = 0

    def advance(self, ts_ns: int) -> list[Bar]:
        """Close every bar that ends at or before `ts_ns`; fill short gaps with flat bars."""
        if self.start_ns is None:
            return []
        target = self._floor(ts_ns)
        if target <= self.start_ns:
            return []
        out = [self._emit()]
        missing = (target - self.start_ns) // self.interval_ns - 1
        if missing > self.max_fill:
            self.breaks += 1
        else:
            nxt = self.start_ns + self.interval_ns
            while nxt < target:
                self._flat(nxt)
                out.append(self._emit())
                nxt += self.interval_ns
        self._flat(target)
        return out

    def on_trade(self, price_ticks: int, size: int, aggressor: int, exch_ns: int) -> list[Bar]:
        """Add one trade; returns the bars it closed (oldest first)."""
        if self.start_ns is None:
            self.start_ns = self._floor(exch_ns)
            self.open = self.high = self.low = self.close = price_ticks
            closed: list[Bar] = []
        else:
            if exch_ns < self.start_ns:
                self.late_ticks += 1
                return []
            closed = self.advance(exch_ns)
            if self.trades == 0:
                self.open = self.high = self.low = price_ticks
        if price_ticks > self.high:
            self.high = price_ticks
        if price_ticks < self.low:
            self.low = price_ticks
        self.close = price_ticks
        self.volume += size
        if aggressor > 0:
            self.buy_volume += size
        elif aggressor < 0:
            self.sell_volume += size
        self.trades += 1
        return closed

    def on_quote(self, bid_ticks: int, ask_ticks: int, exch_ns: int) -> list[Bar]:
        if self.start_ns is not None and exch_ns < self.start_ns:
            self.late_ticks += 1
            return []
        closed = self.advance(exch_ns)
        self.bid, self.ask = bid_ticks, ask_ticks
        return closed

    def on_time(self, exch_ns: int) -> list[Bar]:
        """A feed heartbeat: exchange time has reached `exch_ns` (0 means unknown: ignored)."""
        if exch_ns <= 0:
            return []
        return self.advance(exch_ns)


def tick_rule(prices: "list[int] | object") -> list[int]:
    """Aggressor from the tick rule for data without sides: uptick = buy (+1), downtick = sell (-1),
    unchanged = same side as the previous trade, first trade unknown (0)."""
    out: list[int] = []
    prev_p: int | None = None
    side = 0
    for p in prices:
        p = int(p)
        if prev_p is not None:
            if p > prev_p:
                side = 1
            elif p < prev_p:
                side = -1
        out.append(side)
        prev_p = p
    return out


def derived_quote(price_ticks: int, aggressor: int) -> tuple[int, int] | None:
    """The quote implied by a trade when the data has none: a buy lifted the ask (bid one tick
    below), a sell hit the bid (ask one tick above). Unknown side: no quote."""
    if aggressor > 0:
        return price_ticks - 1, price_ticks
    if aggressor < 0:
        return price_ticks, price_ticks + 1
    return None
