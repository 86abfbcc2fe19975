"""The position keeper: gateway fills + feed quotes -> positions, P&L, round trips, session
files; the broker is the truth (reconciliation on a REST thread, applied on the loop).

Its sockets are built and wired to the loop by services/positions/__main__.py and handed in
with `connect`; everything here runs on the loop thread except `fetch` (the REST thread).
"""
from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

from loguru import logger

from common.bus import Publisher, ServiceLoop, Subscriber
from common.clock import NY, EventClock, from_dt
from common.instruments import cents_to_str
from common.messages import Fill, Heartbeat, OrderEvent, Query, Quote, Reply, RiskEvent, RoundTrip
from common.session import SessionCalendar
from common.statefile import BadStateFile
from common.topstepx.rest import parse_time
from services.positions import journal
from services.positions.config import PositionsConfig
from services.positions.ledger import Ledger
from services.positions.reconcile import Reconciler, broker_positions, cents, compare, fill_from_trade

LATENCY_HINTS = ("latency", "_us", "_ms", "lag")


class Keeper:
    def __init__(self, cfg, sect: PositionsConfig, clock, log_dir: Path):
        self.cfg, self.sect, self.clock, self.log_dir = cfg, sect, clock, log_dir
        self.calendar = SessionCalendar.from_config(cfg.trading)
        self.ledger = Ledger(cfg.risk.starting_capital_cents, self.calendar.trading_day, sect.fees)
        self.recon = Reconciler()
        self.contract = cfg.trading.contract
        self.published: set[str] = {self.contract}
        self.service_stats: dict[str, dict] = {}
        self.counts = {"fills": 0, "order_events": 0, "quotes": 0, "round_trips": 0, "reconciles": 0,
                       "reconcile_errors": 0, "ingested_fills": 0, "adopted": 0, "queries": 0}
        self.dirty_marks = False
        self.sync_busy = False
        self.sync_pending: tuple[str, bool] | None = None
        self.need_forced = True
        self.recheck_at = 0.0
        self.last_sync_ok_ns = 0
        self.orders_snapshots = 0
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="positions-rest")
        self.rest = None
        self.account_id = cfg.api.account_id
        self.realized_warned: tuple = ()
        self.last_alert: tuple = ((), 0.0)
        self.fresh = True           # no saved state: the first broker balance is the high-water mark

    # -- setup -------------------------------------------------------------
    def restore(self) -> None:
        """Load the saved ledger. A corrupt or truncated file raises BadStateFile: the keeper
        stops (exit 3) rather than start empty and forget the day's losses and high-water mark."""
        path = journal.state_path(self.log_dir)
        try:
            data = journal.load_state(self.log_dir)
            if data is not None and not isinstance(data, dict):
                raise ValueError(f"a JSON {type(data).__name__}, not an object")
            if data is not None:
                self.ledger.load_json(data)
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise BadStateFile("positions", path, f"{type(exc).__name__}: {exc}") from None
        if data is None:
            logger.info(f"STATE: no saved state ({path}); starting empty, rebuilding from the broker")
            return
        self.fresh = False
        a = self.ledger.account()
        logger.info(f"STATE: restored {a.trading_day}: {a.trades_today} trades, realized "
                    f"{cents_to_str(a.realized_day_cents)}, {a.consecutive_losses} consecutive losses, "
                    f"balance {cents_to_str(a.balance_cents)}, open {self.ledger.signed_positions() or 'none'}")

    def connect(self, loop: ServiceLoop, pub: Publisher, rest, orders: Subscriber, feed: Subscriber,
                others: list[Subscriber]) -> None:
        """The keeper's sockets (built by __main__): its publisher, the broker's REST client (None:
        fills only), the gateway's and the feed's subscribers and the other services' heartbeats."""
        self.loop, self.pub, self.rest = loop, pub, rest
        self.orders, self.feed, self.others = orders, feed, others
        if not self.ledger.account_id and self.cfg.api.account_id:
            self.ledger.account_id = self.cfg.api.account_id

    def now_ns(self) -> int:
        return self.clock.now_ns() or time.time_ns()

    # -- bus input -----------------------------------------------------------
    def on_orders(self) -> None:
        changed = False
        for env in self.orders.drain():
            msg = env.msg
            if isinstance(msg, Fill):
                changed |= self.on_fill(msg, "bus")
            elif isinstance(msg, OrderEvent):
                self.counts["order_events"] += 1
                if self.ledger.apply_order_event(msg):
                    self.published.add(msg.contract)
                    changed = True
            elif isinstance(msg, Heartbeat):
                self.service_stats[msg.service] = dict(msg.stats)
        if self.orders.stats.snapshots > self.orders_snapshots:
            first = self.orders_snapshots == 0
            self.orders_snapshots = self.orders.stats.snapshots
            if not first:
                logger.warning("RECONCILE: order gateway resynced by snapshot (restart or gap); checking the broker")
                self.request_sync("orders resync", True)
        if changed:
            self.publish_all()
            self.save()

    def on_fill(self, fill: Fill, source: str) -> bool:
        if fill.trade_id in self.ledger.seen:
            self.ledger.duplicates += 1
            return False
        self.counts["fills"] += 1
        self.published.add(fill.contract)
        trips = self.ledger.apply_fill(fill)
        logger.debug(f"POSITIONS: fill {fill.trade_id} ({source}) {'BUY' if fill.side == 0 else 'SELL'} "
                     f"{fill.size} {fill.contract} @ {fill.price_ticks} ticks leg {fill.leg}")
        for rt in trips:
            self.on_trip(rt)
        return True

    def on_trip(self, rt: RoundTrip) -> None:
        self.counts["round_trips"] += 1
        logger.info(f"TRADE CLOSED: {cents_to_str(rt.pnl_cents)} ({rt.ticks} ticks)")
        logger.info(f"POSITIONS: round trip {'LONG' if rt.direction > 0 else 'SHORT'} {rt.size} {rt.contract} "
                    f"{rt.entry_price} -> {rt.exit_price}, fees ${journal.usd(rt.fees_cents)}, exit {rt.exit_reason}, "
                    f"day {cents_to_str(self.ledger.realized_day_cents)} in {self.ledger.trades_today} trades, "
                    f"{self.ledger.consecutive_losses} losses in a row")
        self.pub.publish(rt, ts_ns=rt.exit_ns or None)
        self.write_files()

    def on_feed(self) -> None:
        for env in self.feed.drain():
            msg = env.msg
            if isinstance(msg, Quote):
                self.counts["quotes"] += 1
                self.ledger.apply_quote(msg.contract, msg.bid_ticks, msg.ask_ticks, msg.last_ticks)
                if msg.contract in self.ledger.open:
                    self.dirty_marks = True
                ts = msg.exch_ns
            elif isinstance(msg, Heartbeat):
                self.service_stats[msg.service] = dict(msg.stats)
                ts = msg.exch_ns
            else:
                continue
            if isinstance(self.clock, EventClock) and ts > 0 and not env.snapshot:
                self.clock.advance(ts)

    def on_heartbeats(self, sub: Subscriber) -> None:
        for env in sub.drain():
            if isinstance(env.msg, Heartbeat):
                self.service_stats[env.msg.service] = dict(env.msg.stats)

    def tick(self) -> None:
        now = self.clock.now_ns()
        if now and self.ledger.day and self.calendar.trading_day(now) > self.ledger.day:
            old = self.ledger.day
            self.write_files()
            self.ledger.advance(now)
            logger.info(f"POSITIONS: trading day {old} over; new day {self.ledger.day}, high-water "
                        f"{cents_to_str(self.ledger.high_water_cents)}")
            self.publish_all()
            self.save()
        elif now:
            self.ledger.advance(now)
        if self.recheck_at and time.monotonic() >= self.recheck_at:
            self.recheck_at = 0.0
            self.request_sync("recheck", False)
        if self.dirty_marks:
            self.dirty_marks = False
            self.publish_all()

    # -- publishing and files ----------------------------------------------------
    def publish_all(self) -> None:
        for c in sorted(self.published | set(self.ledger.open)):
            self.pub.publish(self.ledger.position(c), key=c)
        self.pub.publish(self.ledger.account(), key="account")

    def save(self) -> None:
        try:
            journal.save_state(self.log_dir, self.ledger.to_json())
        except OSError as exc:
            logger.error(f"STATE: cannot save {journal.state_path(self.log_dir)}: {exc}")

    def latency(self) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for svc, stats in self.service_stats.items():
            got = {k: v for k, v in stats.items()
                   if any(h in k for h in LATENCY_HINTS) and isinstance(v, (int, float)) and not isinstance(v, bool)}
            if got:
                out[svc] = got
        return out

    def write_files(self) -> None:
        day = self.ledger.day
        if not day:
            return
        try:
            journal.write_trades_csv(self.log_dir, day, self.ledger.trips)
            a = self.ledger.account()
            journal.write_metrics(self.log_dir, day, journal.metrics(self.ledger.trips, self.latency(), {
                "trading_day": day, "balance_usd": float(journal.usd(a.balance_cents)),
                "high_water_usd": float(journal.usd(a.high_water_cents)),
                "consecutive_losses": a.consecutive_losses,
                "fills": self.counts["fills"], "position_mismatches": self.recon.mismatches}))
        except OSError as exc:
            logger.error(f"POSITIONS: cannot write the session files in {self.log_dir}: {exc}")

    def heartbeat(self) -> None:
        a = self.ledger.account()
        state = "degraded" if self.recon.active or self.need_forced else "ok"
        self.pub.heartbeat(state, exch_ns=self.clock.now_ns(), stats={
            **self.counts, "duplicates": self.ledger.duplicates, "trading_day": a.trading_day,
            "realized_day_cents": a.realized_day_cents, "unrealized_cents": a.unrealized_cents,
            "trades_today": a.trades_today, "consecutive_losses": a.consecutive_losses,
            "open": {c: q for c, q in self.ledger.signed_positions().items()},
            "mismatch_active": self.recon.active, "reconcile_checks": self.recon.checks,
            "mismatches": self.recon.mismatches, "last_sync_ok_ns": self.last_sync_ok_ns,
            "orders_gaps": self.orders.stats.gaps, "malformed": self.orders.stats.malformed + self.feed.stats.malformed,
            # for the Prometheus exporter (services/alerts)
            "rest_free": self.rest.limiter.free() if self.rest is not None else None,
            "http_429": self.rest.stats["http_429"] if self.rest is not None else 0})

    # -- queries -------------------------------------------------------------------
    def on_query(self, env) -> Reply:
        q = env.msg
        if not isinstance(q, Query):
            return Reply(False, f"expected a Query, got {env.type}")
        self.counts["queries"] += 1
        if q.what in ("status", "position"):
            contract = str(q.params.get("contract") or "") or next(iter(self.ledger.open), self.contract)
            data = {"position": dataclasses.asdict(self.ledger.position(contract)),
                    "account": dataclasses.asdict(self.ledger.account()),
                    "positions": [dataclasses.asdict(self.ledger.position(c)) for c in sorted(self.ledger.open)]}
            if q.what == "status":
                data["reconcile"] = {"mismatch_active": self.recon.active, "checks": self.recon.checks,
                                     "mismatches": self.recon.mismatches, "last_ok_ns": self.last_sync_ok_ns}
            return Reply(True, data=data)
        if q.what == "trades":
            return Reply(True, data={"trading_day": self.ledger.day,
                                     "trades": [dataclasses.asdict(t) for t in self.ledger.trips]})
        return Reply(False, f"unknown query {q.what!r}; known: status, position, trades")

    # -- reconciliation ------------------------------------------------------------
    def request_sync(self, reason: str, forced: bool) -> None:
        forced = forced or self.need_forced
        if self.rest is None:
            return
        if self.sync_busy:
            if self.sync_pending is None or forced:
                self.sync_pending = (reason, forced)
            return
        self.sync_busy = True
        start_ns = self.trades_since()
        known = {oid for p in self.ledger.protective.values() for oid in (p.stop_order_id, p.target_order_id) if oid}
        fut = self.pool.submit(self.fetch, start_ns, known)
        fut.add_done_callback(lambda f: self.loop.call_soon_threadsafe(lambda: self.apply_sync(f, reason, forced)))

    def trades_since(self) -> int:
        if self.ledger.day:
            d = datetime.fromisoformat(self.ledger.day).replace(tzinfo=NY)
            return from_dt(d)
        now = self.clock.now_ns()
        if not now:
            # an event clock before its first event does not know the day (the simulator's tape
            # runs days away from the wall clock): ask the broker for its whole history
            return 0
        return now - int(self.sect.trades_lookback_h * 3600e9)

    def fetch(self, start_ns: int, known_orders: set[int] = frozenset()) -> dict:
        """On the REST thread: the broker's account, positions, trades of the day and order tags."""
        aid = self.account_id
        accounts = self.rest.accounts()
        if aid is None:
            if not accounts:
                raise RuntimeError("Account/search returned no account")
            aid = int(accounts[0]["id"])
        acct = next((a for a in accounts if int(a.get("id", -1)) == aid), None)
        positions = self.rest.open_positions(aid)
        trades = self.rest.trades(aid, start_ns / 1e9)
        tags: dict[int, str] = {}
        if any(int(t["id"]) not in self.ledger.seen for t in trades):
            tags = {int(o["id"]): o.get("customTag") or "" for o in self.rest.orders(aid, start_ns / 1e9)}
        working = {int(o["id"]) for o in self.rest.open_orders(aid)} if known_orders else set()
        # account last: its balance then includes every trade listed above
        accounts = self.rest.accounts()
        acct = next((a for a in accounts if int(a.get("id", -1)) == aid), acct)
        return {"account_id": aid, "account": acct, "positions": positions, "trades": trades, "tags": tags,
                "gone": known_orders - working}

    def apply_sync(self, fut, reason: str, forced: bool) -> None:
        self.sync_busy = False
        try:
            snap = fut.result()
        except Exception as exc:
            self.counts["reconcile_errors"] += 1
            logger.warning(f"RECONCILE: broker check ({reason}) failed: {type(exc).__name__}: {exc}")
            self._next_pending()
            return
        self.counts["reconciles"] += 1
        self.account_id = snap["account_id"]
        self.ledger.account_id = snap["account_id"]
        broker = broker_positions(snap["positions"])
        broker_qty = {c: q for c, (q, _) in broker.items()}
        fills = {}
        for row in snap["trades"]:
            tid = int(row.get("id", 0))
            if tid in self.ledger.seen or tid in fills:
                continue
            f = fill_from_trade(row, snap["tags"])
            if f is not None:
                fills[tid] = f
        ours = self.ledger.signed_positions()
        # The first check after a start and the last one at shutdown count the trades they read
        # before positions are compared: after a restart the keeper catches up on what filled while
        # it was down (a kill -9 mid-trade is not a disagreement with the broker), and at shutdown
        # the gateway's flatten fills may still be on their way through the bus. Any other check
        # alarms on a position the keeper learns of only from the broker.
        moves = ({tid: (f.contract, f.size if f.side == 0 else -f.size) for tid, f in fills.items()}
                 if reason in ("start", "shutdown") else None)
        dec = self.recon.decide(ours, broker_qty, set(fills), forced, moves)
        changed = False
        if dec.act:
            detail = "; ".join(m.text() for m in dec.mismatches)
            now = time.monotonic()
            if (detail, reason) != self.last_alert[0] or now - self.last_alert[1] > 30:
                self.last_alert = ((detail, reason), now)
                for m in dec.mismatches:
                    logger.error(f"ALERT: position mismatch ({reason}): {m.text()}; adopting the broker's state")
                self.pub.publish(RiskEvent("position_mismatch", True, "ERROR", detail), key="position_mismatch")
            else:   # the same disagreement again right after adopting it: say it once, not every second
                logger.warning(f"RECONCILE: mismatch persists after adoption: {detail}")
        if dec.ingest:
            todo = sorted((fills[t] for t in dec.ingest), key=lambda f: (f.exch_ns, f.trade_id))
            if not self.ledger.day and todo:    # fresh start: the broker's latest day is today
                self.ledger.day = max(self.calendar.trading_day(f.exch_ns) for f in todo if f.exch_ns)
            applied = 0
            for f in todo:
                day = self.calendar.trading_day(f.exch_ns) if f.exch_ns else self.ledger.day
                if self.ledger.day and day < self.ledger.day:
                    self.ledger.seen[f.trade_id] = day      # an earlier day's trade: not today's stats
                    continue
                if self.on_fill(f, "broker"):
                    applied += 1
            if applied:
                self.counts["ingested_fills"] += applied
                logger.warning(f"RECONCILE: applied {applied} fill(s) from Trade/search that the bus did not deliver")
            changed = True
        if dec.act:
            for m in compare(self.ledger.signed_positions(), broker_qty):
                qty, avg = broker.get(m.contract, (0, None))
                self.ledger.adopt(m.contract, qty, avg, self.now_ns())
                self.published.add(m.contract)
                self.counts["adopted"] += 1
                logger.warning(f"RECONCILE: adopted the broker's {m.contract}: {qty:+d} @ {avg}")
            changed = True
        elif dec.mismatches:
            logger.info(f"RECONCILE: broker differs ({'; '.join(m.text() for m in dec.mismatches)}); "
                        f"looking again in {self.sect.recheck_s} s")
            self.recheck_at = time.monotonic() + self.sect.recheck_s
        elif fills and not dec.ingest:
            self.recheck_at = time.monotonic() + self.sect.recheck_s
        for c, p in self.ledger.protective.items():    # stop/target orders the broker no longer works
            if p.stop_order_id in snap["gone"]:
                logger.info(f"RECONCILE: stop order {p.stop_order_id} of {c} is no longer working at the broker")
                p.stop_order_id = p.stop_ticks = None
                self.published.add(c)
                changed = True
            if p.target_order_id in snap["gone"]:
                logger.info(f"RECONCILE: target order {p.target_order_id} of {c} is no longer working at the broker")
                p.target_order_id = p.target_ticks = None
                self.published.add(c)
                changed = True
        acct = snap["account"]
        if acct is not None:
            bal = cents(acct.get("balance"))
            if bal is not None and bal != self.ledger.balance_cents:
                if self.ledger.balance_cents and abs(bal - self.ledger.balance_cents) > 0 and not dec.ingest:
                    logger.debug(f"RECONCILE: balance {cents_to_str(self.ledger.balance_cents)} -> broker {cents_to_str(bal)}")
                self.ledger.balance_cents = bal
                changed = True
            can = bool(acct.get("canTrade", True))
            if can != self.ledger.can_trade:
                self.ledger.can_trade = can
                changed = True
            if self.fresh and bal is not None:     # no saved history: today's opening balance
                self.ledger.high_water_cents = bal
                self.fresh = False
        self.check_realized(snap["trades"], set(fills) - dec.ingest)
        if dec.resolved:
            logger.info("RECONCILE: keeper and broker in step again")
            self.pub.publish(RiskEvent("position_mismatch", False, "INFO", "in step with the broker"),
                             key="position_mismatch", forget=True)
        if forced:
            if self.need_forced:
                logger.info(f"RECONCILE: {reason}: broker account {self.account_id}, positions "
                            f"{broker_qty or 'none'}, {len(snap['trades'])} trades in the window")
            self.need_forced = False
        self.last_sync_ok_ns = time.time_ns()
        if changed:
            self.publish_all()
            self.save()
            self.write_files()
        self._next_pending()

    def check_realized(self, rows: list[dict], pending: set[int]) -> None:
        """Cross-check the day's realized P&L with the broker's trades (gross P&L minus fees); say so
        when they differ (the trades CSV is built from fills; the balance is always the broker's)."""
        if pending or not self.ledger.day:
            return
        gross = fees = 0
        for r in rows:
            if r.get("voided") or self.calendar.trading_day(parse_time(r.get("creationTimestamp"))) != self.ledger.day:
                continue
            gross += cents(r.get("profitAndLoss")) or 0
            fees += (cents(r.get("fees")) or 0) + (cents(r.get("commissions")) or 0)
        broker = gross - fees
        key = (broker, self.ledger.realized_day_cents)
        if broker != self.ledger.realized_day_cents and key != self.realized_warned:
            self.realized_warned = key
            logger.warning(f"RECONCILE: realized P&L of {self.ledger.day} differs: keeper "
                           f"{cents_to_str(self.ledger.realized_day_cents)}, broker trades {cents_to_str(broker)} "
                           f"(gross {cents_to_str(gross)}, fees ${journal.usd(fees)})")

    def _next_pending(self) -> None:
        if self.sync_pending is not None:
            reason, forced = self.sync_pending
            self.sync_pending = None
            self.request_sync(reason, forced)

    # -- shutdown ---------------------------------------------------------------------
    def final_sync(self) -> None:
        """Before the last files: take the fills already on the socket, then one broker check,
        done here and now. The order gateway stops just before the keeper and flattens on its way
        out; that round trip belongs in today's trades and report."""
        try:
            self.on_orders()
        except Exception as exc:
            logger.warning(f"POSITIONS: final read of the gateway's fills failed: {exc}")
        if self.rest is None:
            return
        from concurrent.futures import Future
        fut: Future = Future()
        known = {oid for p in self.ledger.protective.values() for oid in (p.stop_order_id, p.target_order_id) if oid}
        try:
            fut.set_result(self.fetch(self.trades_since(), known))
        except Exception as exc:
            fut.set_exception(exc)
        self.apply_sync(fut, "shutdown", True)

    def shutdown(self) -> None:
        self.final_sync()
        self.save()
        self.write_files()
        if self.sect.report_on_shutdown and self.ledger.day:
            try:
                from services.positions.report import build_report
                path = build_report(self.log_dir, self.ledger.day)
                logger.info(f"POSITIONS: session report {path}")
            except Exception as exc:
                logger.exception(f"POSITIONS: report failed: {exc}")
        a = self.ledger.account()
        logger.info(f"POSITIONS: {a.trading_day}: {a.trades_today} trades, realized {cents_to_str(a.realized_day_cents)}, "
                    f"fees ${journal.usd(a.fees_day_cents)}; state saved")
        self.pool.shutdown(wait=False, cancel_futures=True)
