"""Bad-tick rules: every tick leaves here dropped, repaired (FLAG_REPAIRED) or flagged
(FLAG_SUSPECT), never silently wrong. Shared by the feed and replay.

| kind           | what                                                  | rule                          |
|----------------|-------------------------------------------------------|-------------------------------|
| bad_price      | trade price NaN/inf/<=0/missing                       | drop                          |
| bad_price      | a quote field NaN/inf/<=0 (normalizer kept the old)   | keep, FLAG_REPAIRED           |
| bad_size       | trade volume zero or negative                         | drop                          |
| size_repaired  | trade volume missing or fractional (-> 1 / whole)     | keep, FLAG_REPAIRED           |
| off_grid       | price not a multiple of the tick size (rounded)       | keep, FLAG_REPAIRED           |
| no_exch_time   | exchange timestamp missing (receive time used)        | keep, FLAG_REPAIRED           |
| crossed        | bid - ask > cross_tolerance_ticks                     | drop                          |
| locked         | bid == ask, or crossed within the tolerance           | keep, FLAG_SUSPECT            |
| time_backwards | exch_ns earlier than the last tick's exch_ns          | clamp to the last, FLAG_REPAIRED |
| jump           | price more than jump_ticks from the reference price   | keep, FLAG_SUSPECT; the reference moves only after jump_confirm such ticks in a row |

The reference price for jumps is the last unflagged trade (or quote mid). Pure: no
sockets; `BadTickLog` rate-limits the log lines (once per kind per minute).
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from loguru import logger

from common.messages import FLAG_REPAIRED, FLAG_SUSPECT, Quote, Trade
from common.ticks.normalize import Tick

DROP_KINDS = {"bad_price_trade", "bad_size", "crossed"}
REPAIR_KINDS = {"bad_price", "size_repaired", "off_grid", "no_exch_time", "time_backwards"}


@dataclass
class Sanitizer:
    cross_tolerance_ticks: int = 0
    jump_ticks: int = 200
    jump_confirm: int = 3
    counts: Counter = field(default_factory=Counter)
    last_exch_ns: int = 0
    ref_ticks: int | None = None
    _far: int = 0

    def check(self, tick: Tick) -> tuple[Quote | Trade | None, list[str]]:
        """(message to publish or None when dropped, kinds of problems found)."""
        msg = tick.msg
        kinds = list(tick.issues)
        if isinstance(msg, Trade):
            if "bad_price" in kinds:
                return self._drop(["bad_price_trade"])
            if "bad_size" in kinds:
                return self._drop(kinds)
            price = msg.price_ticks
        else:
            spread = msg.ask_ticks - msg.bid_ticks
            if -spread > self.cross_tolerance_ticks:
                return self._drop(kinds + ["crossed"])
            if spread <= 0:
                kinds.append("locked")
            price = (msg.bid_ticks + msg.ask_ticks) // 2
        if msg.exch_ns < self.last_exch_ns:
            kinds.append("time_backwards")
            msg.exch_ns = self.last_exch_ns
        self.last_exch_ns = msg.exch_ns
        if self.ref_ticks is not None and abs(price - self.ref_ticks) > self.jump_ticks:
            kinds.append("jump")
            self._far += 1
            if self._far >= self.jump_confirm:       # the market really moved
                self.ref_ticks, self._far = price, 0
        else:
            self._far = 0
            if isinstance(msg, Trade) or self.ref_ticks is None:
                self.ref_ticks = price
        flags = 0
        for k in kinds:
            self.counts[k] += 1
            if k in REPAIR_KINDS:
                flags |= FLAG_REPAIRED
            elif k in ("locked", "jump"):
                flags |= FLAG_SUSPECT
        msg.flags |= flags
        return msg, kinds

    def _drop(self, kinds: list[str]) -> tuple[None, list[str]]:
        for k in kinds:
            self.counts[k] += 1
        self.counts["dropped"] += 1
        return None, kinds


class BadTickLog:
    """One WARNING per kind per `every_s` seconds, with the running count."""

    def __init__(self, every_s: float = 60.0, monotonic=time.monotonic):
        self.every_s = every_s
        self.monotonic = monotonic
        self.last: dict[str, float] = {}

    def note(self, kinds: list[str], counts: Counter, what: str) -> bool:
        logged = False
        now = self.monotonic()
        for k in kinds:
            if now - self.last.get(k, -1e18) >= self.every_s:
                self.last[k] = now
                logger.warning(f"FEED: bad tick ({k}): {what} ({counts[k]} so far)")
                logged = True
        return logged
