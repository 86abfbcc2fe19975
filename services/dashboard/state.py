"""What the dashboard knows: every bus message folded into one view, with no sockets.

`DashboardState.apply(env, now)` takes any envelope from any publisher; `view(now)` returns
the JSON-able picture the page draws. `now` is a monotonic clock in seconds, so heartbeat
and quote ages are measured by this process (not by the market clock, which may be the
simulator's or a replay's), and a page can say plainly when what it shows is old.

Money stays integer cents and prices integer ticks here; the page formats them.
"""
from __future__ import annotations

import collections
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from common.instruments import instrument_for
from common.messages import (
    Account, Bar, Envelope, FeedStatus, Fill, Heartbeat, OrderEvent, Position, Prediction, Quote, RiskEvent,
    RoundTrip, Signal,
)

SERVICES = ("feed", "inference", "engine", "orders", "positions")
WORKING = frozenset({1, 6, 8})      # broker OrderStatus: open, pending, suspended (bracket child)
ENTRY_KINDS = ("LONG_ENTRY", "SHORT_ENTRY", "REVERSE_TO_LONG", "REVERSE_TO_SHORT")


def bar_second(signal_id: str) -> int | None:
    """The bar (epoch seconds) a signal id was decided on: ids are CODE + bar start seconds."""
    digits = signal_id.lstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZ_")
    return int(digits) if digits.isdigit() else None


@dataclass
class Seen:
    """A heartbeat and when this process received it."""
    hb: Heartbeat
    at: float


@dataclass
class DashboardState:
    contract: str
    max_daily_loss_cents: int
    stale_s: float = 3.0
    bars_kept: int = 1800
    recent: int = 50
    beats: dict[str, Seen] = field(default_factory=dict)
    feed_status: FeedStatus | None = None
    quote: Quote | None = None
    quote_at: float = 0.0
    position: Position | None = None
    account: Account | None = None
    orders: dict[int, OrderEvent] = field(default_factory=dict)
    prediction: Prediction | None = None
    bars: collections.deque = field(default_factory=collections.deque)
    markers: collections.deque = field(default_factory=collections.deque)
    trips: list[RoundTrip] = field(default_factory=list)
    signals: collections.deque = field(default_factory=collections.deque)
    risk_events: collections.deque = field(default_factory=collections.deque)
    active_risk: dict[str, RiskEvent] = field(default_factory=dict)
    last_message_at: float = 0.0
    messages: int = 0

    def __post_init__(self) -> None:
        self.inst = instrument_for(self.contract)
        self.bars = collections.deque(maxlen=self.bars_kept)
        self.markers = collections.deque(maxlen=4 * self.recent)
        self.signals = collections.deque(maxlen=self.recent)
        self.risk_events = collections.deque(maxlen=self.recent)

    # -- input ----------------------------------------------------------------
    def apply(self, env: Envelope, now: float) -> None:
        msg = env.msg
        self.messages += 1
        self.last_message_at = now
        if isinstance(msg, Heartbeat):
            self.beats[msg.service] = Seen(msg, now)
        elif isinstance(msg, Quote):
            if msg.contract == self.contract:
                self.quote, self.quote_at = msg, now
        elif isinstance(msg, FeedStatus):
            self.feed_status = msg
        elif isinstance(msg, Bar):
            if msg.contract == self.contract and msg.interval_s == 1:
                if self.bars and self.bars[-1][0] >= msg.start_ns:
                    return                                  # a snapshot repeating a bar we have
                self.bars.append((msg.start_ns, msg.open_ticks, msg.high_ticks, msg.low_ticks, msg.close_ticks))
        elif isinstance(msg, Prediction):
            if msg.contract == self.contract:
                self.prediction = msg
        elif isinstance(msg, Signal):
            if not env.snapshot or not any(s["id"] == msg.signal_id for s in self.signals):
                self.signals.append({"ts_ns": env.ts_ns, "id": msg.signal_id, "kind": msg.kind,
                                     "confidence": round(msg.confidence, 4), "price_ticks": msg.price_ticks,
                                     "reason": msg.reason})
        elif isinstance(msg, RiskEvent):
            self._risk(msg, env.ts_ns)
        elif isinstance(msg, OrderEvent):
            self.orders[msg.order_id] = msg
            if len(self.orders) > 500:                       # forget the oldest finished orders
                for oid in [o for o, ev in self.orders.items() if ev.status not in WORKING][:100]:
                    del self.orders[oid]
        elif isinstance(msg, Fill):
            if msg.contract == self.contract and not any(m.get("trade_id") == msg.trade_id for m in self.markers):
                self.markers.append({"trade_id": msg.trade_id, "ts_ns": msg.exch_ns, "leg": msg.leg,
                                     "side": msg.side, "size": msg.size, "price_ticks": msg.price_ticks})
        elif isinstance(msg, Position):
            if msg.contract == self.contract or msg.direction != 0:
                self.position = msg
        elif isinstance(msg, Account):
            if self.account is not None and msg.trading_day != self.account.trading_day:
                self.trips.clear()                           # a new trading day starts with an empty page
                self.markers.clear()
            self.account = msg
        elif isinstance(msg, RoundTrip):
            self.add_trips([msg])

    def _risk(self, ev: RiskEvent, ts_ns: int) -> None:
        if ev.active:
            self.active_risk[ev.kind] = ev
        else:
            self.active_risk.pop(ev.kind, None)
        # the gateway stamps its events with the wall clock, the engine with market time: show
        # each at the market time it arrived, so the list reads in one clock in every mode
        at = self.quote.exch_ns if self.quote is not None else ts_ns
        self.risk_events.append({"ts_ns": at, "kind": ev.kind, "active": ev.active,
                                 "severity": ev.severity, "detail": ev.detail})

    def add_trips(self, trips: list[RoundTrip]) -> None:
        """Round trips from the bus or from the keeper's `trades` query; each once, in exit order."""
        have = {(t.entry_ns, t.exit_ns, t.signal_id, t.size) for t in self.trips}
        for t in trips:
            if (t.entry_ns, t.exit_ns, t.signal_id, t.size) not in have:
                self.trips.append(t)
        self.trips.sort(key=lambda t: t.exit_ns)

    def missing_trips(self) -> bool:
        """The keeper counted more round trips today than we hold: ask it for the list."""
        return self.account is not None and self.account.trades_today > len(self.trips)

    # -- output ---------------------------------------------------------------
    def price(self, ticks: int | None) -> str | None:
        return None if ticks is None else str(self.inst.to_price(ticks))

    def view(self, now: float) -> dict[str, Any]:
        acct = self.account
        pos = self.position
        realized = acct.realized_day_cents if acct else 0
        unrealized = pos.unrealized_cents if pos and pos.direction else 0
        day_pnl = realized + unrealized
        services = {}
        for name in SERVICES:
            seen = self.beats.get(name)
            if seen is None:
                services[name] = {"state": "silent", "age_s": None, "stale": True}
                continue
            hb = seen.hb
            age = now - seen.at
            services[name] = {"state": hb.state, "pid": hb.pid, "uptime_s": round(hb.uptime_s, 1),
                              "age_s": round(age, 2), "stale": age > self.stale_s, "exch_ns": hb.exch_ns}
        feed_stats = self._stats("feed")
        orders_stats = self._stats("orders")
        engine_stats = self._stats("engine")
        quote_age = (now - self.quote_at) if self.quote else None
        working = [self._order(o) for o in self.orders.values() if o.status in WORKING]
        halts = []
        if orders_stats.get("halted"):
            halts.append("order gateway halted")
        manual = "manual_halt" in (engine_stats.get("breakers") or [])
        if manual:
            halts.append("engine: manual halt")
        eng = self.beats.get("engine")
        if eng is not None and eng.hb.state == "halted" and not manual:
            halts.append("engine: no new entries (breaker or day halt)")
        breakers = sorted(set(engine_stats.get("breakers") or []) | set(engine_stats.get("rules") or []))
        return {
            "contract": self.contract,
            "tick_size": str(self.inst.tick_size),
            "services": services,
            "feed": {"state": (self.feed_status.state if self.feed_status else feed_stats.get("feed_state", "unknown")),
                     "detail": self.feed_status.detail if self.feed_status else "",
                     "quote_age_s": None if quote_age is None else round(quote_age, 2),
                     "stale": quote_age is None or quote_age > self.stale_s},
            "hubs": {"market": feed_stats.get("feed_state", "unknown"), "user": orders_stats.get("hub", "unknown")},
            "rest_free": {s: self._stats(s).get("rest_free") for s in ("orders", "positions")},
            "quote": None if self.quote is None else {
                "bid": self.price(self.quote.bid_ticks), "ask": self.price(self.quote.ask_ticks),
                "last": self.price(self.quote.last_ticks), "exch_ns": self.quote.exch_ns},
            "position": self._position(pos),
            "working_orders": working,
            "pnl": {"realized_cents": realized, "unrealized_cents": unrealized, "day_cents": day_pnl,
                    "fees_cents": acct.fees_day_cents if acct else 0,
                    "balance_cents": acct.balance_cents if acct else None,
                    "trades_today": acct.trades_today if acct else 0,
                    "consecutive_losses": acct.consecutive_losses if acct else 0,
                    "trading_day": acct.trading_day if acct else "",
                    "loss_limit_cents": self.max_daily_loss_cents,
                    "loss_room_cents": self.max_daily_loss_cents + day_pnl},
            "breakers": breakers,
            "halts": halts,
            "risk_active": [{"kind": k, "severity": e.severity, "detail": e.detail} for k, e in self.active_risk.items()],
            "prediction": self._prediction(),
            "chart": {"t0_ns": self.bars[0][0] if self.bars else 0,      # bars: [seconds from t0, close, high, low]
                      "bars": [[(b[0] - self.bars[0][0]) // 1_000_000_000, b[4], b[2], b[3]] for b in self.bars],
                      "markers": list(self.markers),
                      "stop_ticks": pos.stop_ticks if pos and pos.direction else None,
                      "target_ticks": pos.target_ticks if pos and pos.direction else None,
                      "entry_price": pos.avg_price if pos and pos.direction else None},
            "equity": self._equity(day_pnl if acct else None, unrealized),
            "trades": [self._trip(t) for t in self.trips[-self.recent:]][::-1],
            "signals": list(self.signals)[::-1],
            "risk_events": list(self.risk_events)[::-1],
            "latency": self._latency(orders_stats),
            "bus": {"messages": self.messages,
                    "last_message_age_s": None if not self.last_message_at else round(now - self.last_message_at, 2)},
        }

    def _stats(self, service: str) -> dict:
        seen = self.beats.get(service)
        return seen.hb.stats if seen else {}

    def _order(self, o: OrderEvent) -> dict:
        return {"order_id": o.order_id, "leg": o.leg, "side": "BUY" if o.side == 0 else "SELL", "size": o.size,
                "type": o.order_type, "status": o.status, "limit": self.price(o.limit_ticks),
                "stop": self.price(o.stop_ticks), "tag": o.tag}

    def _position(self, pos: Position | None) -> dict:
        if pos is None or not pos.direction:
            return {"side": "FLAT", "direction": 0, "size": 0, "avg_price": None, "stop": None, "target": None,
                    "mark": None, "unrealized_cents": 0}
        return {"side": "LONG" if pos.direction > 0 else "SHORT", "direction": pos.direction, "size": pos.size,
                "avg_price": pos.avg_price, "stop": self.price(pos.stop_ticks), "target": self.price(pos.target_ticks),
                "mark": self.price(pos.mark_ticks), "unrealized_cents": pos.unrealized_cents,
                "entry_ns": pos.entry_ns, "signal_id": pos.signal_id}

    def _prediction(self) -> dict | None:
        p = self.prediction
        if p is None:
            return None
        return {"direction": p.direction, "confidence": round(p.confidence, 4), "probs": [round(x, 4) for x in p.probs],
                "bar_start_ns": p.bar_start_ns, "model_version": p.model_version, "close": self.price(p.close_ticks),
                "atr_ticks": round(p.atr_ticks, 2), "in_range": p.features_in_range}

    def _trip(self, t: RoundTrip) -> dict:
        return {**dataclasses.asdict(t), "side": "LONG" if t.direction > 0 else "SHORT"}

    def _equity(self, day_pnl: int | None, unrealized: int) -> list[list[int]]:
        """[[time ns, cumulative net cents], ...]: 0 before the first trade, one point per round
        trip, and now: the keeper's realized (which also holds the open position's entry fees)
        plus unrealized, so the line ends where the P&L panel says."""
        pts: list[list[int]] = []
        run = 0
        if self.trips:
            pts.append([self.trips[0].entry_ns or self.trips[0].exit_ns, 0])
        for t in self.trips:
            run += t.pnl_cents
            pts.append([t.exit_ns, run])
        last_ns = self.quote.exch_ns if self.quote else (pts[-1][0] if pts else 0)
        if last_ns:
            pts.append([last_ns, day_pnl if day_pnl is not None else run + unrealized])
        return pts

    def _latency(self, orders_stats: dict) -> dict:
        recent = orders_stats.get("hops_recent") or []
        summary = {k[len("hop_"):]: v for k, v in orders_stats.items()
                   if k.startswith("hop_") and isinstance(v, (int, float))}
        return {"recent": recent[-10:][::-1], "summary": summary}

