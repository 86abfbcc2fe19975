"""What is worth telling the trader: bus messages in, Alerts out. No sockets, no wall clock:
every call gets `now_ns` (wall time) and, for the session, the market time.

Inputs: RiskEvents from every publisher (breakers, halts, the gateway's guard, crash loops
from the supervisord listener, any kind), the services' Heartbeats, the keeper's Position,
Account and RoundTrip messages. Alerts:

- a RiskEvent trip (severity from the event, or `alerts.severity` for that kind) and its
  clear (at the trip's severity, so it reaches whoever got the trip);
- a service silent for `service_silent_s`, a service restarted (new pid), and back;
- the market or the user hub down for longer than `hub_outage_s`, and back;
- an open position without a stop order for `unprotected_s` (the keeper's view, a second
  opinion next to the gateway's own `unprotected` event);
- the day's P&L past `loss_warn_fraction` of the daily loss limit;
- the end-of-day flatten result (flat, failed, or still holding after `eod_verify_s`)
  and the end-of-day summary.

A retained RiskEvent replayed by a snapshot (a restart of either side) alerts only when it
changes what was known: no alert storm on a resync.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from common.clock import to_ny
from common.instruments import cents_to_str
from common.messages import Account, Heartbeat, Position, RiskEvent, RoundTrip
from common.session import SessionCalendar
from services.alerts.alert import Alert, norm_severity
from services.alerts.config import AlertsConfig

NS = 1_000_000_000

TITLES = {
    "halt": "Order gateway halted: no new entries",
    "manual_halt": "Engine halted by the operator",
    "day_halt": "Entries halted for the day",
    "daily_loss": "Daily loss limit hit: flattened and halted",
    "unprotected": "Position WITHOUT a stop at the broker",
    "protection_invariant": "Protection invariant broken",
    "protection_failed": "Protective order failed",
    "flatten_failed": "Flatten not verified",
    "order_unknown": "Order outcome unknown",
    "overfill": "Entry overfilled",
    "position_mismatch": "Position disagrees with the broker",
    "stale_data": "Breaker: stale market data",
    "silent_service": "Breaker: a service is silent",
    "reject_storm": "Breaker: reject storm",
    "price_shock": "Breaker: price shock",
    "wide_spread": "Breaker: wide spread",
    "crash_loop": "Crash loop: service stopped",
}
def title_for(kind: str) -> str:
    """`crash_loop:orders` -> "Crash loop: service stopped: orders"; an unknown kind reads as words."""
    if kind in TITLES:
        return TITLES[kind]
    head, _, tail = kind.partition(":")
    if head in TITLES and tail:
        return f"{TITLES[head]}: {tail}"
    return kind.replace("_", " ").replace(":", ": ")


HUBS = {"feed": ("market", "feed_state", ("subscribed",)),
        "orders": ("user", "hub", ("connected", "disabled"))}


@dataclass
class _Watch:
    """A condition with a start time that alerts once after a grace period, and once when over."""
    since: int = 0
    alerted: bool = False
    detail: str = ""


class Rules:
    def __init__(self, sect: AlertsConfig, max_daily_loss_cents: int, session: SessionCalendar | None,
                 now_ns: int):
        self.sect = sect
        self.max_loss = max_daily_loss_cents
        self.session = session
        self.started = now_ns
        self.risk_state: dict[tuple[str, str], tuple[bool, str]] = {}   # (src, kind) -> (active, severity)
        self.transitions: dict[tuple[str, str], int] = {}
        self.corroborated = 0               # the same fact from a second service: folded into the first
        self.seen: dict[str, int] = {}
        self.pids: dict[str, int] = {}
        self.silent: dict[str, _Watch] = {}
        self.hubs: dict[str, _Watch] = {}
        self.unprotected: dict[str, _Watch] = {}
        self.positions: dict[str, Position] = {}
        self.working_orders: int | None = None   # from the order gateway's heartbeat
        self.account: Account | None = None
        self.loss_warned: set[str] = set()
        self.trips: dict[str, list[RoundTrip]] = {}
        self.eod_day = ""                   # the trading day whose flatten is being watched
        self.eod_since = 0
        self.eod_result = ""                # "", flat, failed, flat_after_failure, holding_reported
        self.summary_due = 0
        self.summarized: set[str] = set()
        self.raised = 0
        self.supervisor: dict[str, str] = {}    # program -> supervisord state, when readable

    # -- helpers -----------------------------------------------------------------
    def _alert(self, now_ns: int, kind: str, severity: str, title: str, text: str = "", *,
               key: str = "", src: str = "", resolved: bool = False, **data) -> Alert:
        self.raised += 1
        return Alert(kind, severity, title, text, key=key or kind, src=src, resolved=resolved,
                     ts_ns=now_ns, data=data)

    def severity_for(self, kind: str) -> str | None:
        """`alerts.severity` for this kind: an exact key, else the first matching pattern
        (`crash_loop*` covers `crash_loop:orders`)."""
        got = self.sect.severity.get(kind)
        if got is None:
            got = next((v for k, v in self.sect.severity.items() if fnmatch.fnmatchcase(kind, k)), None)
        return got

    def ignored(self, kind: str) -> bool:
        return any(fnmatch.fnmatchcase(kind, pat) for pat in self.sect.ignore)

    # -- risk events -----------------------------------------------------------------
    def on_risk(self, src: str, ev: RiskEvent, now_ns: int, snapshot: bool = False,
                market_ns: int = 0) -> list[Alert]:
        if ev.kind == "end_of_day" and ev.active:
            self._eod_start(now_ns, market_ns)
        if ev.kind == "flatten_failed" and ev.active and self.eod_day and not self.eod_result:
            self.eod_result = "failed"
            self.summary_due = 0
        if self.ignored(ev.kind):
            return []
        state_key = (src, ev.kind)
        prev = self.risk_state.get(state_key)
        if snapshot and (prev is None and not ev.active or prev is not None and prev[0] == ev.active):
            # a resync replaying what is known (or a clear of something never seen): nothing new
            if prev is None:
                self.risk_state[state_key] = (ev.active, norm_severity(ev.severity))
            return []
        if ev.active:
            severity = self.severity_for(ev.kind) or norm_severity(ev.severity)
        else:
            severity = prev[1] if prev is not None and prev[0] else norm_severity(ev.severity)
        was_on = self.fact_active(ev.kind)
        self.risk_state[state_key] = (ev.active, severity)
        if prev is None or prev[0] != ev.active:
            self.transitions[state_key] = self.transitions.get(state_key, 0) + 1
            if was_on == self.fact_active(ev.kind):
                # the fact is on (or off) whoever else says so: a second service reporting it (the
                # engine's crash_loop breaker echoing the supervision listener's) adds no news, and
                # one service clearing it while another still reports it is not "resolved"
                self.corroborated += 1
                return []
        title = title_for(ev.kind)
        on = "on" if ev.active else "off"
        # the key holds the transition number: a repeat of the same state is deduplicated, a
        # new trip after a clear never is (the last word the trader reads is the true state)
        return [self._alert(now_ns, ev.kind, severity, f"{title} ({src})", ev.detail,
                            key=f"risk:{src}:{ev.kind}:{on}#{self.transitions[state_key]}", src=src,
                            resolved=not ev.active)]

    def fact_active(self, kind: str) -> bool:
        """A risk fact is on while any service reports it on."""
        return any(active for (_, k), (active, _) in self.risk_state.items() if k == kind)

    # -- heartbeats --------------------------------------------------------------------
    def on_heartbeat(self, hb: Heartbeat, now_ns: int) -> list[Alert]:
        out: list[Alert] = []
        svc = hb.service
        self.seen[svc] = now_ns
        w = self.silent.pop(svc, None)
        if w is not None and w.alerted:
            out.append(self._alert(now_ns, "service_silent", "ERROR", f"{svc} is back",
                                   f"heartbeats again after {(now_ns - w.since) / NS:.0f} s",
                                   key=f"silent:{svc}:off@{w.since}", src=svc, resolved=True))
        old = self.pids.get(svc)
        self.pids[svc] = hb.pid
        if old is not None and old != hb.pid:
            out.append(self._alert(now_ns, "service_restarted", "WARNING", f"{svc} restarted",
                                   f"pid {old} -> {hb.pid}", key=f"restart:{svc}:{hb.pid}", src=svc))
        if svc == "orders" and isinstance(hb.stats, dict) and isinstance(hb.stats.get("working_orders"), int):
            self.working_orders = hb.stats["working_orders"]
        hub = HUBS.get(svc)
        if hub is not None and isinstance(hb.stats, dict) and hub[1] in hb.stats:
            name, field_name, up_states = hub
            state = str(hb.stats.get(field_name))
            out += self._hub(name, state in up_states, state, now_ns)
        return out

    def _hub(self, name: str, up: bool, state: str, now_ns: int) -> list[Alert]:
        w = self.hubs.get(name)
        if not up:
            if w is None:
                self.hubs[name] = _Watch(now_ns, False, state)
            else:
                w.detail = state
            return []
        if w is None:
            return []
        del self.hubs[name]
        if not w.alerted:
            return []
        return [self._alert(now_ns, "hub_outage", "ERROR", f"{name} hub back",
                            f"up again after {(now_ns - w.since) / NS:.0f} s", key=f"hub:{name}:off@{w.since}",
                            src=name, resolved=True)]

    # -- positions and account -----------------------------------------------------------
    def on_position(self, p: Position, now_ns: int) -> list[Alert]:
        self.positions[p.contract] = p
        naked = p.size > 0 and p.direction != 0 and p.stop_order_id is None
        w = self.unprotected.get(p.contract)
        if naked:
            if w is None:
                self.unprotected[p.contract] = _Watch(now_ns, False, self._pos_text(p))
            return []
        if w is None:
            return []
        del self.unprotected[p.contract]
        if not w.alerted:
            return []
        how = f"stop order {p.stop_order_id} working" if p.size else "position closed"
        return [self._alert(now_ns, "unprotected_position", "CRITICAL", f"{p.contract} protected again",
                            how, key=f"naked:{p.contract}:off@{w.since}", src="positions", resolved=True)]

    @staticmethod
    def _pos_text(p: Position) -> str:
        side = "long" if p.direction > 0 else "short"
        return f"{side} {p.size} {p.contract} @ {p.avg_price}"

    def on_account(self, a: Account, now_ns: int) -> list[Alert]:
        self.account = a
        day_pnl = a.realized_day_cents + a.unrealized_cents
        limit = self.max_loss
        if limit <= 0 or a.trading_day in self.loss_warned or day_pnl > -self.sect.loss_warn_fraction * limit:
            return []
        self.loss_warned.add(a.trading_day)
        share = -day_pnl / limit
        return [self._alert(now_ns, "daily_loss_warning", "WARNING" if share < 1 else "ERROR",
                            f"Day P&L {cents_to_str(day_pnl)}: {share:.0%} of the daily loss limit",
                            f"limit {cents_to_str(-limit)}, realized {cents_to_str(a.realized_day_cents)}, "
                            f"open {cents_to_str(a.unrealized_cents)}", key=f"losswarn:{a.trading_day}",
                            src="positions", day_pnl_cents=day_pnl, limit_cents=limit)]

    def on_round_trip(self, rt: RoundTrip) -> None:
        day = to_ny(rt.exit_ns).date().isoformat() if rt.exit_ns else ""
        self.trips.setdefault(day, []).append(rt)

    # -- end of day -------------------------------------------------------------------------
    def _eod_start(self, now_ns: int, market_ns: int) -> None:
        day = self._day(market_ns)
        if day and day == self.eod_day:
            return
        self.eod_day, self.eod_since, self.eod_result, self.summary_due = day or "today", now_ns, "", 0

    def _day(self, market_ns: int) -> str:
        if self.account is not None and self.account.trading_day:
            return self.account.trading_day
        return to_ny(market_ns).date().isoformat() if market_ns > 0 else ""

    def open_positions(self) -> list[Position]:
        return [p for p in self.positions.values() if p.size > 0 and p.direction != 0]

    def _eod(self, now_ns: int) -> list[Alert]:
        if not self.eod_day or self.eod_result in ("flat", "holding_reported"):
            return []
        day, held = self.eod_day, self.open_positions()
        if self.eod_result == "failed":
            self.eod_result = "holding_reported" if held else "flat_after_failure"
            if held:
                return [self._alert(now_ns, "eod_flatten", "CRITICAL", f"EOD flatten FAILED {day}",
                                    "still holding " + ", ".join(self._pos_text(p) for p in held) +
                                    ": close it at the broker now", key=f"eod:{day}:failed")]
        if not held and not self.working_orders:
            self.eod_result = "flat"
            self.summary_due = now_ns + int(self.sect.summary_delay_s * NS)
            a = self.account
            pnl = f"; day {cents_to_str(a.realized_day_cents)} in {a.trades_today} trades" if a else ""
            return [self._alert(now_ns, "eod_flatten", "INFO", f"EOD flatten done {day}: flat",
                                "no open position" + (", no working order" if self.working_orders == 0 else "") +
                                f" after the flatten time{pnl}", key=f"eod:{day}:flat")]
        if now_ns - self.eod_since > self.sect.eod_verify_s * NS and self.eod_result != "holding_reported":
            self.eod_result = "holding_reported"
            what = [self._pos_text(p) for p in held] + ([f"{self.working_orders} working orders"] if not held else [])
            return [self._alert(now_ns, "eod_flatten", "CRITICAL", f"EOD flatten: NOT flat {day}",
                                f"{self.sect.eod_verify_s:.0f} s after the flatten time still holding " +
                                ", ".join(what) + ": close it at the broker now", key=f"eod:{day}:holding")]
        return []

    def summary(self, now_ns: int, day: str) -> Alert:
        self.summarized.add(day)
        a = self.account
        if a is None:
            return self._alert(now_ns, "eod_summary", "INFO", f"Day summary {day}",
                               "no account figures received from the position keeper", key=f"summary:{day}")
        day = a.trading_day or day
        trips = self.trips.get(day, [])
        won = sum(1 for t in trips if t.pnl_cents > 0)
        wl = f" ({won} won, {len(trips) - won} lost)" if len(trips) == a.trades_today and trips else ""
        lines = [f"trades: {a.trades_today}{wl}",
                 f"net P&L: {cents_to_str(a.realized_day_cents)} after {cents_to_str(a.fees_day_cents)[1:]} fees",
                 f"balance: {cents_to_str(a.balance_cents)[1:]}",
                 f"losses in a row: {a.consecutive_losses}"]
        if trips:
            best, worst = max(t.pnl_cents for t in trips), min(t.pnl_cents for t in trips)
            lines.append(f"best {cents_to_str(best)}, worst {cents_to_str(worst)}")
        if self.eod_day and self.eod_result:
            lines.append(f"EOD flatten: {self.eod_result.replace('_', ' ')}")
        return self._alert(now_ns, "eod_summary", "INFO", f"Day summary {day}: "
                           f"{cents_to_str(a.realized_day_cents)} in {a.trades_today} trades", "\n".join(lines),
                           key=f"summary:{day}", trades=a.trades_today,
                           realized_cents=a.realized_day_cents, fees_cents=a.fees_day_cents,
                           balance_cents=a.balance_cents)

    # -- the timer ---------------------------------------------------------------------------
    def tick(self, now_ns: int, market_ns: int = 0) -> list[Alert]:
        out: list[Alert] = []
        s = self.sect
        for svc in s.services:
            never = svc not in self.seen
            last = self.seen.get(svc, self.started)
            limit = max(s.service_silent_s, s.startup_grace_s) if never else s.service_silent_s
            sv = self.supervisor.get(svc) or self.supervisor.get("*")
            if sv in ("STOPPED", "STOPPING", "SHUTDOWN"):
                continue                       # stopped on purpose: an operator or the shutdown
            if now_ns - last > limit * NS:
                w = self.silent.setdefault(svc, _Watch(last))
                if not w.alerted:
                    w.alerted = True
                    how = f"; supervisord: {sv}" if sv else ""
                    out.append(self._alert(now_ns, "service_silent", "ERROR", f"{svc} is silent",
                                           f"no heartbeat {'since the alerts service started' if never else 'for'} "
                                           f"{(now_ns - last) / NS:.0f} s{how}", key=f"silent:{svc}:on@{w.since}",
                                           src=svc))
        for name, w in self.hubs.items():
            if not w.alerted and now_ns - w.since > s.hub_outage_s * NS:
                w.alerted = True
                out.append(self._alert(now_ns, "hub_outage", "ERROR", f"{name} hub down",
                                       f"{w.detail} for {(now_ns - w.since) / NS:.0f} s", key=f"hub:{name}:on@{w.since}",
                                       src=name))
        for contract, w in self.unprotected.items():
            if not w.alerted and now_ns - w.since > s.unprotected_s * NS:
                w.alerted = True
                out.append(self._alert(now_ns, "unprotected_position", "CRITICAL",
                                       f"{contract} open WITHOUT a stop order",
                                       f"{w.detail}: no working stop for {(now_ns - w.since) / NS:.0f} s "
                                       "(position keeper's view)", key=f"naked:{contract}:on@{w.since}", src="positions"))
        out += self._eod(now_ns)
        if self.summary_due and now_ns >= self.summary_due and self.eod_day not in self.summarized:
            self.summary_due = 0
            out.append(self.summary(now_ns, self.eod_day))
        elif self.session is not None and market_ns > 0 and self.session.phase(market_ns) == "after":
            day = self.session.trading_day(market_ns)
            if day not in self.summarized and (self.account is None or self.account.trading_day == day):
                out.append(self.summary(now_ns, day))       # no flatten was seen: summarize at the close
        return out
