"""The position ledger: fills in, positions, round trips and the day's statistics out. No sockets.

Arithmetic
- Fill prices are integer ticks; open lots are kept FIFO with their price in ticks
  (a `Fraction` only when a position was adopted from the broker's average price),
  so every closing piece's gross P&L is an exact integer number of cents:
  (exit - entry) * direction * size * tick value.
- The displayed average entry price is the broker's convention (average cost:
  scale-ins average, partial exits leave it unchanged), exact as a Fraction of ticks.
- A round trip runs from flat to flat (or to a reversal through zero, where the one
  fill closes a trip and opens the next). Its P&L is gross minus every fee of its
  fills, in integer cents. Fees come from the fill (the broker's), else the
  instrument table (fee per side x contracts).
- Realized day P&L = closing pieces' gross minus fees paid today (the spec: fees count).
- Unrealized P&L marks open lots at the liquidation price (bid for a long, ask for a short;
  last trade price when there is no quote).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from typing import Any, Callable

from common.broker_codes import LIVE, NONE, TERMINAL  # noqa: F401  (the one table of broker codes)
from common.instruments import instrument_for
from common.messages import Account, Fill, OrderEvent, Position, RoundTrip

WORKING = LIVE | {NONE}         # a protective order not yet finished (an event without a status counts)

# leg of the order that closed the position -> round trip exit reason (docs/interfaces.md)
EXIT_REASONS = {"target": "target", "stop": "stop", "exit": "signal", "flatten": "flatten", "eod": "eod",
                "repair": "repair", "entry": "signal"}


def exit_reason(leg: str) -> str:
    return EXIT_REASONS.get(leg or "", "broker" if leg in ("", "unknown", None) else leg)


def leg_from_tag(tag: str | None) -> str:
    """Broker customTag `key:leg:attempt` -> leg ('' when the tag is not ours)."""
    if not tag:
        return ""
    parts = tag.rsplit(":", 2)
    return parts[1] if len(parts) == 3 else ""


def round_cents(x: Fraction | int) -> int:
    """Exact integer when it is one (always, for fills on the tick grid); half-even otherwise."""
    if isinstance(x, int):
        return x
    x = Fraction(x)
    if x.denominator == 1:
        return x.numerator
    return int((Decimal(x.numerator) / Decimal(x.denominator)).to_integral_value(rounding=ROUND_HALF_EVEN))


def price_str(ticks: Fraction | int, contract: str) -> str:
    """Ticks (possibly fractional) -> price string: '6050.25', or up to 6 decimals off the grid."""
    inst = instrument_for(contract)
    f = Fraction(ticks)
    d = Decimal(f.numerator) * inst.tick_size / Decimal(f.denominator)
    if d == d.quantize(Decimal("0.01")):
        return f"{d:.2f}"
    return str(d.quantize(Decimal("0.000001"), rounding=ROUND_HALF_EVEN).normalize())


def frac_to_json(f: Fraction) -> list[int]:
    return [f.numerator, f.denominator]


def frac_from_json(v: Any) -> Fraction:
    if isinstance(v, list):
        return Fraction(int(v[0]), int(v[1]))
    return Fraction(v)


@dataclass
class OpenTrip:
    """The open position of one contract and the round trip it belongs to."""
    contract: str
    direction: int
    lots: list[list]                      # FIFO [[price_ticks Fraction, size], ...]
    avg: Fraction                         # average-cost entry price in ticks (broker convention)
    entry_ns: int
    max_size: int
    entry_tc: Fraction = Fraction(0)      # sum(entry price x size) over the trip's entry fills
    entry_qty: int = 0
    exit_tc: Fraction = Fraction(0)
    exit_qty: int = 0
    gross_cents: int = 0                  # closing pieces so far
    fees_cents: int = 0                   # every fill of the trip
    signal_id: str = ""
    model_version: str = ""
    adopted: bool = False                 # taken over from the broker, entry unknown

    @property
    def size(self) -> int:
        return sum(s for _, s in self.lots)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["lots"] = [[frac_to_json(Fraction(p)), s] for p, s in self.lots]
        for k in ("avg", "entry_tc", "exit_tc"):
            d[k] = frac_to_json(getattr(self, k))
        return d

    @classmethod
    def from_json(cls, d: dict) -> "OpenTrip":
        d = dict(d)
        d["lots"] = [[frac_from_json(p), int(s)] for p, s in d["lots"]]
        for k in ("avg", "entry_tc", "exit_tc"):
            d[k] = frac_from_json(d[k])
        return cls(**d)


@dataclass
class Protective:
    stop_order_id: int | None = None
    stop_ticks: int | None = None
    target_order_id: int | None = None
    target_ticks: int | None = None


@dataclass
class Mark:
    bid: int | None = None
    ask: int | None = None
    last: int | None = None


class Ledger:
    """Every number the keeper publishes, derived from fills, order events and quotes."""

    def __init__(self, starting_balance_cents: int, day_of: Callable[[int], str],
                 fee_source: str = "broker"):
        self.day_of = day_of
        self.fee_source = fee_source            # broker: the fill's fees (table when 0); table: always the table
        self.day = ""
        self.account_id = 0
        self.balance_cents = starting_balance_cents
        self.high_water_cents = starting_balance_cents
        self.can_trade = True
        self.realized_day_cents = 0
        self.fees_day_cents = 0
        self.consecutive_losses = 0
        self.trades_today = 0
        self.open: dict[str, OpenTrip] = {}
        self.protective: dict[str, Protective] = {}
        self.marks: dict[str, Mark] = {}
        self.trips: list[RoundTrip] = []        # closed round trips of self.day
        self.seen: dict[int, str] = {}          # trade id -> trading day it was applied on
        self.fills_applied = 0
        self.duplicates = 0
        self.last_ns = 0

    # -- time and the trading day ----------------------------------------
    def advance(self, ts_ns: int) -> bool:
        """Move the ledger clock; roll the day at the trading-day boundary. True when it rolled."""
        if ts_ns <= 0:
            return False
        self.last_ns = max(self.last_ns, ts_ns)
        day = self.day_of(ts_ns)
        if not self.day:
            self.day = day
            return False
        if day > self.day:
            self.roll(day)
            return True
        return False

    def roll(self, day: str) -> None:
        """End of trading day: the balance is a candidate for the high-water mark; day stats restart."""
        self.high_water_cents = max(self.high_water_cents, self.balance_cents)
        self.day = day
        self.realized_day_cents = 0
        self.fees_day_cents = 0
        self.consecutive_losses = 0
        self.trades_today = 0
        self.trips = []
        # keep de-duplication memory for yesterday too (a late snapshot may repeat its fills)
        keep = {d for d in self.seen.values() if d >= day} | {day}
        recent = sorted(set(self.seen.values()))[-2:]
        keep |= set(recent)
        self.seen = {k: v for k, v in self.seen.items() if v in keep}

    # -- fills -------------------------------------------------------------
    def fee_for(self, fill: Fill) -> int:
        table = instrument_for(fill.contract).fee_per_side_cents * fill.size
        if self.fee_source == "table":
            return table
        return fill.fees_cents if fill.fees_cents > 0 else table

    def apply_fill(self, fill: Fill, count_balance: bool = True) -> list[RoundTrip]:
        """Apply one half-turn; returns the round trips it closed (0, or 1; a reversal closes 1
        and opens the next). A trade id seen before is ignored."""
        if fill.trade_id in self.seen:
            self.duplicates += 1
            return []
        if fill.size <= 0:
            return []
        self.advance(fill.exch_ns)
        self.seen[fill.trade_id] = self.day or self.day_of(fill.exch_ns)
        self.fills_applied += 1
        inst = instrument_for(fill.contract)
        signed = fill.size if fill.side == 0 else -fill.size
        fees = self.fee_for(fill)
        self.fees_day_cents += fees
        self.realized_day_cents -= fees
        if count_balance:
            self.balance_cents -= fees
        price = Fraction(fill.price_ticks)
        closed: list[RoundTrip] = []
        trip = self.open.get(fill.contract)
        remaining = fill.size
        fee_left = fees
        if trip is not None and trip.direction * signed < 0:
            close_qty = min(remaining, trip.size)
            close_fee = fees * close_qty // fill.size if close_qty < fill.size else fees
            fee_left = fees - close_fee
            gross = 0
            left = close_qty
            while left > 0:
                lot = trip.lots[0]
                take = min(left, lot[1])
                gross += round_cents((price - lot[0]) * trip.direction * take * inst.tick_value_cents)
                lot[1] -= take
                left -= take
                if lot[1] == 0:
                    trip.lots.pop(0)
            trip.gross_cents += gross
            trip.fees_cents += close_fee
            trip.exit_tc += price * close_qty
            trip.exit_qty += close_qty
            self.realized_day_cents += gross
            if count_balance:
                self.balance_cents += gross
            remaining -= close_qty
            if trip.size == 0:
                closed.append(self._close(trip, fill))
                trip = None
            # average cost is unchanged by a partial exit
        if remaining > 0:
            if trip is None:
                trip = OpenTrip(fill.contract, 1 if signed > 0 else -1, [], price, fill.exch_ns, 0,
                                signal_id=fill.signal_id, model_version=fill.model_version)
                self.open[fill.contract] = trip
            old = trip.size
            trip.avg = (trip.avg * old + price * remaining) / (old + remaining)
            trip.lots.append([price, remaining])
            trip.entry_tc += price * remaining
            trip.entry_qty += remaining
            trip.fees_cents += fee_left
            trip.max_size = max(trip.max_size, trip.size)
            if not trip.signal_id and fill.signal_id:
                trip.signal_id, trip.model_version = fill.signal_id, fill.model_version
        return closed

    def _close(self, trip: OpenTrip, fill: Fill) -> RoundTrip:
        del self.open[trip.contract]
        self.protective.pop(trip.contract, None)
        entry = trip.entry_tc / trip.entry_qty if trip.entry_qty else trip.avg
        exit_ = trip.exit_tc / trip.exit_qty
        per_contract = (exit_ - entry) * trip.direction
        if trip.entry_qty and trip.entry_qty == trip.exit_qty:
            ticks = round_cents(per_contract)
        else:   # adopted lots: the closing pieces' gross tells the ticks
            inst = instrument_for(trip.contract)
            ticks = round_cents(Fraction(trip.gross_cents, inst.tick_value_cents * trip.exit_qty))
        pnl = trip.gross_cents - trip.fees_cents
        rt = RoundTrip(trip.contract, trip.direction, trip.max_size, price_str(entry, trip.contract),
                       price_str(exit_, trip.contract), trip.entry_ns, fill.exch_ns, ticks, pnl,
                       trip.fees_cents, exit_reason(fill.leg), trip.signal_id, trip.model_version)
        self.trips.append(rt)
        self.trades_today += 1
        if pnl < 0:
            self.consecutive_losses += 1
        else:
            self.consecutive_losses = 0
        return rt

    # -- order events and quotes ---------------------------------------------
    def apply_order_event(self, ev: OrderEvent) -> bool:
        """Stop and target prices and order ids from the gateway's order events. True if changed."""
        if ev.leg not in ("stop", "target"):
            return False
        p = self.protective.setdefault(ev.contract, Protective())
        before = dataclasses.astuple(p)
        if ev.leg == "stop":
            if ev.status in WORKING:
                p.stop_order_id, p.stop_ticks = ev.order_id, ev.stop_ticks
            elif p.stop_order_id == ev.order_id:
                p.stop_order_id = p.stop_ticks = None
        else:
            if ev.status in WORKING:
                p.target_order_id, p.target_ticks = ev.order_id, ev.limit_ticks
            elif p.target_order_id == ev.order_id:
                p.target_order_id = p.target_ticks = None
        return dataclasses.astuple(p) != before

    def apply_quote(self, contract: str, bid: int | None, ask: int | None, last: int | None) -> None:
        m = self.marks.setdefault(contract, Mark())
        if bid:
            m.bid = bid
        if ask:
            m.ask = ask
        if last:
            m.last = last

    def mark_ticks(self, contract: str, direction: int) -> int | None:
        m = self.marks.get(contract)
        if m is None:
            return None
        px = m.bid if direction > 0 else m.ask
        return px if px else m.last

    def unrealized_cents(self, contract: str) -> int:
        trip = self.open.get(contract)
        if trip is None:
            return 0
        mark = self.mark_ticks(contract, trip.direction)
        if mark is None:
            return 0
        tv = instrument_for(contract).tick_value_cents
        return round_cents(sum(((mark - p) * trip.direction * s * tv for p, s in trip.lots), Fraction(0)))

    def total_unrealized_cents(self) -> int:
        return sum(self.unrealized_cents(c) for c in self.open)

    # -- broker adoption -------------------------------------------------
    def adopt(self, contract: str, signed_qty: int, avg_price: Decimal | None, ts_ns: int) -> None:
        """Make the ledger hold what the broker holds (after a mismatch the fills could not explain)."""
        old = self.open.pop(contract, None)
        if signed_qty == 0:
            self.protective.pop(contract, None)
            return
        inst = instrument_for(contract)
        if avg_price is not None:
            avg = Fraction(Decimal(avg_price) / inst.tick_size)
        elif old is not None:
            avg = old.avg
        else:
            m = self.mark_ticks(contract, 1 if signed_qty > 0 else -1)
            avg = Fraction(m or 0)
        direction = 1 if signed_qty > 0 else -1
        size = abs(signed_qty)
        keep_old = old is not None and old.direction == direction
        trip = OpenTrip(contract, direction, [[avg, size]], avg,
                        old.entry_ns if keep_old else ts_ns, size,
                        entry_tc=avg * size, entry_qty=size,
                        fees_cents=old.fees_cents if keep_old else 0,
                        signal_id=old.signal_id if keep_old else "",
                        model_version=old.model_version if keep_old else "", adopted=True)
        self.open[contract] = trip

    # -- views ---------------------------------------------------------------
    def position(self, contract: str) -> Position:
        trip = self.open.get(contract)
        p = self.protective.get(contract, Protective())
        if trip is None:
            m = self.marks.get(contract)
            return Position(contract, 0, 0, "0", mark_ticks=(m.last if m else None))
        return Position(contract, trip.direction, trip.size, price_str(trip.avg, contract), trip.entry_ns,
                        p.stop_ticks, p.target_ticks, p.stop_order_id, p.target_order_id,
                        self.mark_ticks(contract, trip.direction), self.unrealized_cents(contract),
                        trip.signal_id, trip.model_version)

    def account(self) -> Account:
        return Account(self.account_id, self.balance_cents, self.day, self.realized_day_cents,
                       self.total_unrealized_cents(), self.fees_day_cents, self.consecutive_losses,
                       self.trades_today, self.high_water_cents, self.can_trade)

    def signed_positions(self) -> dict[str, int]:
        return {c: t.direction * t.size for c, t in self.open.items() if t.size}

    # -- persistence -----------------------------------------------------------
    def to_json(self) -> dict:
        return {
            "day": self.day, "account_id": self.account_id, "balance_cents": self.balance_cents,
            "high_water_cents": self.high_water_cents, "can_trade": self.can_trade,
            "realized_day_cents": self.realized_day_cents, "fees_day_cents": self.fees_day_cents,
            "consecutive_losses": self.consecutive_losses, "trades_today": self.trades_today,
            "open": {c: t.to_json() for c, t in self.open.items()},
            "protective": {c: dataclasses.asdict(p) for c, p in self.protective.items()},
            "trips": [dataclasses.asdict(t) for t in self.trips],
            "seen": {str(k): v for k, v in self.seen.items()},
            "fills_applied": self.fills_applied, "last_ns": self.last_ns,
        }

    def load_json(self, d: dict) -> None:
        self.day = d.get("day", "")
        self.account_id = int(d.get("account_id", 0))
        for k in ("balance_cents", "high_water_cents", "realized_day_cents", "fees_day_cents",
                  "consecutive_losses", "trades_today", "fills_applied", "last_ns"):
            setattr(self, k, int(d.get(k, getattr(self, k))))
        self.can_trade = bool(d.get("can_trade", True))
        self.open = {c: OpenTrip.from_json(t) for c, t in (d.get("open") or {}).items()}
        self.protective = {c: Protective(**p) for c, p in (d.get("protective") or {}).items()}
        self.trips = [RoundTrip(**t) for t in d.get("trips") or []]
        self.seen = {int(k): v for k, v in (d.get("seen") or {}).items()}
