"""Market-hub events -> Quote / Trade, shared by the feed and replay.

What the real hub sends (topstepx_api.md §3.3) and how it is read:
- every market event has two arguments `(contractId, data)`; events for another
  contract are ignored (counted as `other_contract`);
- GatewayQuote: `bestBid`, `bestAsk`, `lastPrice`, `timestamp`/`lastUpdated`, any of
  them possibly missing or null (partial update): a quote is merged into the last
  full quote, and nothing is emitted until bid and ask are both known;
- GatewayTrade: `data` is a list of trades or a single trade; `price`, `volume`,
  `type` (0 buy aggressor -> +1, 1 sell -> -1, else 0), `timestamp`; a missing or
  fractional `volume` is repaired (1 lot / whole lots, "size_repaired"), zero or
  negative is "bad_size";
- prices become integer ticks via the contract table. An off-grid price is
  rounded to the nearest tick and reported as issue "off_grid" (the sanitiser
  flags it); NaN, inf, zero, negative or non-numeric prices are reported as
  "bad_price" and never merged;
- a missing or unparseable exchange timestamp is replaced by the receive time
  (issue "no_exch_time").
Other events (GatewayDepth, GatewayLogout, ...) are ignored here.

Pure: no sockets, no clocks; the receive time is passed in.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

from common.instruments import Instrument, instrument_for
from common.messages import Quote, Trade
from common.topstepx.rest import parse_time


@dataclass(slots=True)
class Tick:
    """A normalized message plus what was wrong with the raw one (for the sanitiser)."""
    msg: Quote | Trade
    issues: tuple[str, ...] = ()


def _price(inst: Instrument, value) -> tuple[int | None, str | None]:
    """(ticks, issue). issue is 'bad_price' (unusable) or 'off_grid' (rounded)."""
    if value is None:
        return None, None
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        return None, "bad_price"
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None, "bad_price"
    if not math.isfinite(f) or f <= 0:
        return None, "bad_price"
    q = f / float(inst.tick_size)
    ticks = round(q)
    if abs(q - ticks) > 1e-6:
        return ticks, "off_grid"
    return ticks, None


_last_time: tuple[str, int] = ("", 0)     # the last timestamp string parsed and its ns


def _time(value, fallback_ns: int) -> tuple[int, str | None]:
    global _last_time
    if isinstance(value, str) and value:
        if value == _last_time[0]:  # a burst's ticks share one timestamp: parse it once
            return _last_time[1], None
        try:
            ns = parse_time(value)
            if ns > 0:
                _last_time = (value, ns)          # one binding: safe for a reader on another thread
                return ns, None
        except (ValueError, OverflowError):
            pass
    return fallback_ns, "no_exch_time"


@dataclass
class Normalizer:
    contract: str
    inst: Instrument = field(init=False)
    bid: int | None = None
    ask: int | None = None
    last: int | None = None
    counts: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.inst = instrument_for(self.contract)

    def on_event(self, target: str, args: list, recv_ns: int) -> list[Tick]:
        """One hub invocation -> zero or more ticks, in the order they arrived."""
        if target not in ("GatewayQuote", "GatewayTrade"):
            self.counts["ignored_" + target] += 1
            return []
        if not isinstance(args, list) or len(args) < 2:
            self.counts["malformed"] += 1
            return []
        contract, data = args[0], args[1]
        if contract != self.contract:
            self.counts["other_contract"] += 1
            return []
        if target == "GatewayQuote":
            t = self.quote(data, recv_ns)
            return [t] if t is not None else []
        return self.trades(data, recv_ns)

    def quote(self, data, recv_ns: int) -> Tick | None:
        if not isinstance(data, dict):
            self.counts["malformed"] += 1
            return None
        issues: list[str] = []
        for key, attr in (("bestBid", "bid"), ("bestAsk", "ask"), ("lastPrice", "last")):
            ticks, issue = _price(self.inst, data.get(key))
            if issue:
                issues.append(issue)
            if ticks is not None:
                setattr(self, attr, ticks)
        if self.bid is None or self.ask is None:
            self.counts["partial_before_full"] += 1
            return None
        exch_ns, issue = _time(data.get("timestamp") or data.get("lastUpdated"), recv_ns)
        if issue:
            issues.append(issue)
        last = self.last if self.last is not None else self.bid
        self.counts["quotes"] += 1
        return Tick(Quote(self.contract, self.bid, self.ask, last, exch_ns, recv_ns), tuple(dict.fromkeys(issues)))

    def trades(self, data, recv_ns: int) -> list[Tick]:
        items = data if isinstance(data, list) else [data]
        out = []
        for item in items:
            if not isinstance(item, dict):
                self.counts["malformed"] += 1
                continue
            issues: list[str] = []
            ticks, issue = _price(self.inst, item.get("price"))
            if ticks is None:
                self.counts["bad_trade_price"] += 1
                out.append(Tick(Trade(self.contract, 0, 0, 0, 0, recv_ns), ("bad_price",)))
                continue
            if issue:
                issues.append(issue)
            raw_size = item.get("volume")
            if raw_size is None or isinstance(raw_size, bool) or not isinstance(raw_size, (int, float)) \
                    or not math.isfinite(raw_size):
                size = 1
                issues.append("size_repaired")      # unknown size: count it as one lot
            elif raw_size <= 0:
                size = 0
                issues.append("bad_size")           # a trade of nothing: dropped
            else:
                size = max(1, int(raw_size))
                if size != raw_size:
                    issues.append("size_repaired")
            side = item.get("type")
            aggressor = 1 if side == 0 else -1 if side == 1 else 0
            exch_ns, issue = _time(item.get("timestamp"), recv_ns)
            if issue:
                issues.append(issue)
            self.last = ticks
            self.counts["trades"] += 1
            out.append(Tick(Trade(self.contract, ticks, int(size), aggressor, exch_ns, recv_ns),
                            tuple(dict.fromkeys(issues))))
        return out
