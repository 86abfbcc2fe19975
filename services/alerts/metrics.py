"""Prometheus metrics from the heartbeats every service already publishes.

The bus loop records the latest heartbeat of each service (`observe`); a scrape, on the
exporter's own thread, turns that record into metric families (`collect`). A lock guards the
hand-over; a scrape never waits on the bus, and the bus never waits on a scrape.

Names are `scalper_*`; money stays in integer cents, as on the bus. A service that stops
beating reads `scalper_service_up 0` after `stale_s`; its other series keep their last values.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from common.messages import Heartbeat

HUB_UP = {"feed": ("market", "feed_state", ("subscribed",)), "orders": ("user", "hub", ("connected",))}


def _num(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    return float(v) if isinstance(v, (int, float)) else None


@dataclass
class _Seen:
    hb: Heartbeat
    at: float                          # monotonic seconds of the last heartbeat
    restarts: int = 0
    quotes_per_s: float = 0.0
    prev_quotes: tuple[float, float] | None = None   # (monotonic s, feed quote count)


@dataclass
class MetricsState:
    services: list[str]
    stale_s: float = 5.0
    clock: Callable[[], float] = time.monotonic
    seen: dict[str, _Seen] = field(default_factory=dict)
    breakers: set[str] = field(default_factory=set)      # every breaker name ever seen, so a clear reads 0
    rules: set[str] = field(default_factory=set)
    contracts: set[str] = field(default_factory=set)
    extra: dict[str, Callable[[], list[Metric]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def observe(self, hb: Heartbeat) -> None:
        """Called on the bus loop for every heartbeat."""
        now = self.clock()
        with self.lock:
            prev = self.seen.get(hb.service)
            cur = _Seen(hb, now)
            if prev is not None:
                cur.restarts = prev.restarts + (1 if prev.hb.pid != hb.pid else 0)
                cur.quotes_per_s, cur.prev_quotes = prev.quotes_per_s, prev.prev_quotes
            st = hb.stats if isinstance(hb.stats, dict) else {}
            q = _num(st.get("quotes"))
            if hb.service == "feed" and q is not None:
                if cur.prev_quotes is not None and now > cur.prev_quotes[0] and q >= cur.prev_quotes[1]:
                    cur.quotes_per_s = (q - cur.prev_quotes[1]) / (now - cur.prev_quotes[0])
                cur.prev_quotes = (now, q)
            if hb.service == "engine":
                self.breakers.update(str(b) for b in st.get("breakers") or [])
                self.rules.update(str(r) for r in st.get("rules") or [])
            if hb.service == "positions" and isinstance(st.get("open"), dict):
                self.contracts.update(str(c) for c in st["open"])
            self.seen[hb.service] = cur

    # -- scrape side -------------------------------------------------------------
    def collect(self) -> list[Metric]:
        now = self.clock()
        with self.lock:
            seen = dict(self.seen)
            breakers, rules, contracts = sorted(self.breakers), sorted(self.rules), sorted(self.contracts)
        out: list[Metric] = []
        up = GaugeMetricFamily("scalper_service_up", "1 while the service's heartbeat is fresh", labels=["service"])
        age = GaugeMetricFamily("scalper_service_heartbeat_age_seconds", "seconds since the last heartbeat",
                                labels=["service"])
        uptime = GaugeMetricFamily("scalper_service_uptime_seconds", "the service's own uptime", labels=["service"])
        restarts = CounterMetricFamily("scalper_service_restarts", "new pids seen since the exporter started",
                                       labels=["service"])
        state = GaugeMetricFamily("scalper_service_state", "1 for the state the service reports",
                                  labels=["service", "state"])
        for svc in sorted(set(self.services) | set(seen)):
            s = seen.get(svc)
            fresh = s is not None and now - s.at <= self.stale_s
            up.add_metric([svc], 1.0 if fresh else 0.0)
            if s is None:
                continue
            age.add_metric([svc], round(now - s.at, 3))
            uptime.add_metric([svc], float(s.hb.uptime_s))
            restarts.add_metric([svc], float(s.restarts))
            for st in ("ok", "degraded", "halted", "starting", "stopping"):
                state.add_metric([svc, st], 1.0 if s.hb.state == st else 0.0)
        out += [up, age, uptime, restarts, state]
        out += self._feed(seen.get("feed"))
        out += self._orders(seen.get("orders"))
        out += self._positions(seen.get("positions"), contracts)
        out += self._engine(seen.get("engine"), breakers, rules)
        out += self._rest(seen)
        out += self._hubs(seen)
        for fn in list(self.extra.values()):
            out += fn()
        return out

    @staticmethod
    def _stats(s: _Seen | None) -> dict:
        return s.hb.stats if s is not None and isinstance(s.hb.stats, dict) else {}

    def _feed(self, s: _Seen | None) -> list[Metric]:
        st = self._stats(s)
        if not st:
            return []
        out: list[Metric] = []
        for name, key, doc in (("scalper_feed_quotes", "quotes", "quotes published by the feed"),
                               ("scalper_feed_trades", "trades", "trades published by the feed")):
            v = _num(st.get(key))
            if v is not None:
                c = CounterMetricFamily(name, doc)
                c.add_metric([], v)
                out.append(c)
        qps = GaugeMetricFamily("scalper_feed_quotes_per_second", "quotes per second between the last two heartbeats")
        qps.add_metric([], round(s.quotes_per_s, 3))
        out.append(qps)
        lat = st.get("pub_latency_us")
        if isinstance(lat, dict):
            g = GaugeMetricFamily("scalper_feed_publish_latency_microseconds",
                                  "hub message received -> published on the bus", labels=["quantile"])
            for q, k in (("0.5", "median"), ("0.99", "p99")):
                v = _num(lat.get(k))
                if v is not None:
                    g.add_metric([q], v)
            out.append(g)
        return out

    def _orders(self, s: _Seen | None) -> list[Metric]:
        st = self._stats(s)
        if not st:
            return []
        hop = GaugeMetricFamily("scalper_hop_latency_microseconds",
                                "per-hop latency of recent entries, tick received -> broker ack (common/hops.py)",
                                labels=["segment", "quantile"])
        for k, v in st.items():
            if k.startswith("hop_") and k.endswith(("_us_p50", "_us_p99")) and _num(v) is not None:
                seg = k[len("hop_"):].rsplit("_us_", 1)[0]
                hop.add_metric([seg, "0.5" if k.endswith("p50") else "0.99"], float(v))
        out: list[Metric] = [hop]
        for name, key, doc in (("scalper_open_orders", "working_orders", "orders working at the broker"),
                               ("scalper_orders_halted", "halted", "1 while the order gateway is halted")):
            v = _num(st.get(key))
            if v is not None:
                g = GaugeMetricFamily(name, doc)
                g.add_metric([], v)
                out.append(g)
        for name, key, doc in (("scalper_orders_sent", "orders_sent", "orders sent to the broker"),
                               ("scalper_orders_rejects", "rejects", "orders the broker rejected"),
                               ("scalper_orders_fills", "fills", "fills seen by the gateway")):
            v = _num(st.get(key))
            if v is not None:
                c = CounterMetricFamily(name, doc)
                c.add_metric([], v)
                out.append(c)
        return out

    def _positions(self, s: _Seen | None, contracts: list[str]) -> list[Metric]:
        st = self._stats(s)
        if not st:
            return []
        out: list[Metric] = []
        pos = GaugeMetricFamily("scalper_position_contracts", "signed open position (+long, -short)",
                                labels=["contract"])
        held = st.get("open") if isinstance(st.get("open"), dict) else {}
        for c in contracts:
            pos.add_metric([c], float(_num(held.get(c)) or 0.0))
        out.append(pos)
        for name, key, doc in (("scalper_pnl_realized_day_cents", "realized_day_cents", "realized P&L today, net of fees"),
                               ("scalper_pnl_unrealized_cents", "unrealized_cents", "open P&L at the last mark"),
                               ("scalper_trades_today", "trades_today", "round trips today"),
                               ("scalper_consecutive_losses", "consecutive_losses", "losing round trips in a row"),
                               ("scalper_position_mismatch", "mismatch_active", "1 while the keeper disagrees with the broker")):
            v = _num(st.get(key))
            if v is not None:
                g = GaugeMetricFamily(name, doc)
                g.add_metric([], v)
                out.append(g)
        return out

    def _engine(self, s: _Seen | None, breakers: list[str], rules: list[str]) -> list[Metric]:
        st = self._stats(s)
        if not st:
            return []
        active_b = set(str(b) for b in st.get("breakers") or [])
        active_r = set(str(r) for r in st.get("rules") or [])
        b = GaugeMetricFamily("scalper_breaker_active", "1 while the engine's breaker is tripped", labels=["breaker"])
        for name in breakers:
            b.add_metric([name], 1.0 if name in active_b else 0.0)
        r = GaugeMetricFamily("scalper_risk_rule_active", "1 while an account rule blocks entries", labels=["rule"])
        for name in rules:
            r.add_metric([name], 1.0 if name in active_r else 0.0)
        n = GaugeMetricFamily("scalper_breakers_active", "breakers tripped now")
        n.add_metric([], float(len(active_b)))
        return [b, r, n]

    def _rest(self, seen: dict[str, _Seen]) -> list[Metric]:
        free = GaugeMetricFamily("scalper_rest_budget_remaining", "REST calls left in the current minute",
                                 labels=["service"])
        limited = CounterMetricFamily("scalper_rest_429", "HTTP 429 answers from the broker", labels=["service"])
        for svc in ("orders", "positions"):
            st = self._stats(seen.get(svc))
            v = _num(st.get("rest_free"))
            if v is not None:
                free.add_metric([svc], v)
            v = _num(st.get("http_429"))
            if v is not None:
                limited.add_metric([svc], v)
        return [free, limited]

    def _hubs(self, seen: dict[str, _Seen]) -> list[Metric]:
        up = GaugeMetricFamily("scalper_hub_connected", "1 while the SignalR hub is connected and subscribed",
                               labels=["hub"])
        state = GaugeMetricFamily("scalper_hub_state", "1 for the hub's current state", labels=["hub", "state"])
        for svc, (hub, key, good) in HUB_UP.items():
            st = self._stats(seen.get(svc))
            if key not in st:
                continue
            cur = str(st[key])
            up.add_metric([hub], 1.0 if cur in good else 0.0)
            state.add_metric([hub, cur], 1.0)
        return [up, state]


class Collector:
    """prometheus_client's custom-collector protocol over a MetricsState."""

    def __init__(self, state: MetricsState):
        self.state = state

    def collect(self) -> Iterator[Metric]:
        yield from self.state.collect()
