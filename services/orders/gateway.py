"""The order gateway: its state and the small helpers every part uses.

The behaviour is split by idea, one module each, mixed into Gateway: commands (the REP
socket), placing (orders at the broker), closing (reduce-only exits, flatten, restart),
brackets (stop, target, OCO, overfill), events (hub and REST order/fill/position events),
reconcile (REST reconciliation, protection invariant) and guard (timers). Everything runs on
the ServiceLoop thread, so no locks; broker calls are yielded by flows and run off the loop
(services/orders/broker_io.py). Pure decisions live in logic.py and states.py; what was sent
lives in journal.py.
"""
from __future__ import annotations

import collections
import json
import time
from typing import Any, Callable

from loguru import logger

from common.hops import HopStats
from common.messages import Fill, RiskEvent
from common.topstepx.rest import TopstepXClient
from services.orders import logic
from services.orders.book import OrderBook
from services.orders.brackets import BracketsMixin
from services.orders.broker_io import Flow, InlineRunner, Task
from services.orders.closing import ClosingMixin
from services.orders.commands import CommandsMixin
from services.orders.config import OrdersConfig
from services.orders.errors import Unconfirmed  # noqa: F401  (re-exported)
from services.orders.events import EventsMixin
from services.orders.guard import GuardMixin
from services.orders.journal import Journal
from services.orders.placing import PlacingMixin
from services.orders.reconcile import ReconcileMixin
from services.orders.states import ACTIVE as ACTIVE_STATES
from services.orders.states import Intent

ACTIVE = tuple(x.value for x in ACTIVE_STATES)       # journal rows still in play
TRIM_EVERY_S = 5.0       # how often trim_memory runs
PARK_S = 30.0            # a trade parked for its order's ack this long is handled as not ours
KEEP_PNL_DAYS = 3        # day_pnl keeps the latest trading days (the guard reads today's)


class Gateway(CommandsMixin, PlacingMixin, ClosingMixin, BracketsMixin, EventsMixin, ReconcileMixin, GuardMixin):
    """The gateway's state and its small helpers; the behaviour is in the mixins, one idea each."""

    def __init__(self, cfg, sect: OrdersConfig, rest: TopstepXClient, journal: Journal, account_id: int,
                 publish: Callable[..., Any], clock, calendar):
        self.cfg = cfg
        self.sect = sect
        self.rest = rest
        self.journal = journal
        self.acct = account_id
        self.publish = publish
        self.clock = clock
        self.calendar = calendar
        self.contract = cfg.trading.contract
        self.max_contracts = cfg.risk.max_contracts
        self.max_loss_cents = cfg.risk.max_daily_loss_cents
        self.intents: dict[str, Intent] = {}
        self.book = OrderBook()                    # every order we sent or adopted, by tag and id
        self.seen_trades: dict[int, str] = {}       # trade id -> trading day, of the latest two days (trim_memory)
        self.day_pnl: dict[str, int] = {}          # trading day -> realized net cents (all trades)
        self.positions: dict[str, logic.BrokerPosition] = {}
        self.marks: dict[str, int] = {}
        h = journal.get("halt") or {}
        self.halted: bool = bool(h.get("halted"))
        self.halt_reason: str = h.get("reason", "")
        self.halt_day: str = h.get("day", "")
        self.hub_state = "disabled" if not sect.user_hub else "connecting"
        self.hub_reconciled = not sect.user_hub     # a REST reconciliation succeeded since the hub (re)connected
        self.last_reconcile = 0.0
        # the reconciliation's search window (reconcile.py search_window): the newest broker
        # creation time (epoch s) of the last search's orders and trades, None before a full one
        self.search_marks: dict[str, float | None] = {"orders": None, "trades": None}
        self.next_full = 0.0                       # monotonic time a full reconciliation is due
        self.want_full = False                     # a windowed one saw a problem: confirm in full
        self.violations: dict[str, int] = {}
        self.busy_until: dict[str, float] = {}      # contract -> monotonic time to leave alone in the invariant check
        self.eod_done_day = ""
        self.closing: dict[str, tuple] = {}   # contract -> (key, leg, until, max known order id): a closeContract sent
        self.flatten_pending: tuple[str, str, str] | None = None  # a flatten not yet verified: retried
        self.stale_legs: set[int] = set()                      # left working after a confirmed flat
        self.runner: Any = InlineRunner()                    # __main__ swaps in a LoopRunner once started
        self.singletons: dict[str, Task] = {}                  # periodic, guard, reconcile: one at a time
        self.commands: dict[str, Task] = {}                    # commands still running, by key
        self.protecting: dict[str, bool] = {}                  # intent key -> run protect once more after
        self.parked: dict[int, list[dict]] = {}                # order id -> trades that came before its ack
        self.parked_at: dict[int, float] = {}                  # order id -> monotonic time its first trade was parked
        self.overfill_pending: dict[str, int] = {}
        # None: not known yet (tried on the next entry); False after the broker's Position Brackets refusal
        self.native_brackets: bool | None = False if sect.native_brackets == "off" else journal.get("native_brackets")             # contract -> intended signed size, close failed
        self.last_fill_day = ""
        self.stats: dict[str, int] = {"commands": 0, "orders_sent": 0, "fills": 0, "repairs": 0,
                                      "unknown_outcomes": 0, "rejects": 0, "reconciles": 0, "reconcile_errors": 0}
        self.bench: collections.deque[dict] = collections.deque(maxlen=1000)   # latency samples (bench_orders)
        self.trimmed_at = time.monotonic()
        self.cmd_t0 = 0
        self.cmd_hops: dict[str, int] = {}           # the current command's hop timestamps (wall ns)
        self.hops = HopStats()                       # tick -> order ack, per stage, for every entry
        self.book.restore(journal.orders(), time.monotonic())
        for it in journal.intents(ACTIVE):
            if it["action"] in ("enter", "reverse"):
                self.intents[it["key"]] = Intent.from_dict(it["data"])
        # a command cut off by a restart before its reply (exit, flatten, ...): forget the key so a
        # resend runs it again (each step checks the broker first); entries are resolved by tag instead
        for it in journal.intents(("new",)):
            if it["reply"] is None:
                journal.forget_intent(it["key"])
        for row in journal.db.execute("SELECT trade_id, data FROM fills"):
            d = json.loads(row[1])
            self.day_pnl[d.get("day", "")] = self.day_pnl.get(d.get("day", ""), 0) + d.get("net", 0)
            self.last_fill_day = max(self.last_fill_day, d.get("day", ""))
            self.seen_trades[row[0]] = d.get("day", "")
        self.trim_memory(force=True)

    def republish_fills(self) -> int:
        """After a restart: retain the journal's fills of the latest trading day again, so a
        subscriber's snapshot is complete even if the last live copy died with the old process."""
        n = 0
        for row in self.journal.db.execute("SELECT trade_id, data FROM fills ORDER BY trade_id"):
            d = json.loads(row[1])
            if d.get("fill") and d.get("day") == self.last_fill_day:
                self.publish(Fill(**d["fill"]), key=str(row[0]))
                n += 1
        return n

    def now_ns(self) -> int:
        return self.clock.now_ns()

    def since(self) -> float:
        """Start of the Order/search and Trade/search window: the current session (an hour before
        its open), never more than search_lookback_h back. The simulator's clock follows its tape
        (days away from the wall clock), so against it the whole (small) history is asked for."""
        if self.cfg.api.mode == "sim":
            return 0.0
        now = time.time()
        floor = now - self.sect.search_lookback_h * 3600
        n = self.now_ns()
        if n <= 0:
            return floor
        return max(floor, min(now, self.calendar.today(n).start_ns / 1e9 - 3600))

    def day(self) -> str:
        """The trading day by the clock; with an event clock and no market data yet, the day of the
        latest broker fill (so the daily loss rule still holds)."""
        n = self.now_ns()
        return self.calendar.trading_day(n) if n > 0 else self.last_fill_day

    def risk(self, kind: str, active: bool, detail: str, severity: str = "WARNING") -> None:
        log = logger.info if not active else logger.error if severity == "ERROR" else logger.warning
        log(f"RISK: {kind} {'TRIPPED' if active else 'CLEARED'}: {detail}")
        self.publish(RiskEvent(kind, active, severity, detail))

    def active_intent(self, contract: str) -> Intent | None:
        for it in self.intents.values():
            if it.contract == contract and it.active:
                return it
        return None

    def save_intent(self, it: Intent) -> None:
        self.journal.set_intent(it.key, state=it.state.value, data=it.as_dict())
        if not it.active:
            self.intents.pop(it.key, None)

    def next_attempt(self, key: str, leg: str) -> int:
        """The book holds all of a key's orders or none; a key it does not hold may have been
        pruned, so the journal says which attempts are taken (a tag is never sent twice)."""
        n = self.book.next_attempt(key, leg)
        if not self.book.has_key(key):
            while self.journal.order(logic.make_tag(key, leg, n)) is not None:
                n += 1
        return n

    def set_halt(self, reason: str, kind: str) -> None:
        self.halted, self.halt_reason = True, reason
        self.halt_day = self.day()
        self.journal.set("halt", {"halted": True, "reason": reason, "kind": kind, "day": self.halt_day})

    def clear_halt(self) -> None:
        self.halted, self.halt_reason, self.halt_day = False, "", ""
        self.journal.set("halt", {"halted": False})

    def trim_memory(self, now: float | None = None, force: bool = False) -> None:
        """Nothing the gateway holds grows with the day (the journal keeps the full record):
        finished orders of intents that are over leave the book after its window, trade ids of
        days before the latest two leave seen_trades (a repeat is still caught in the journal),
        fills parked for an ack that never came are handled as not ours, and the day P&L keeps
        the last few days. Run from the periodic flow, every TRIM_EVERY_S."""
        now = time.monotonic() if now is None else now
        if not force and now - self.trimmed_at < TRIM_EVERY_S:
            return
        self.trimmed_at = now
        self.book.prune(now, {key for key, it in self.intents.items() if it.active})
        days = sorted(set(self.seen_trades.values()))
        if len(days) > 2:
            keep = set(days[-2:])
            self.seen_trades = {tid: day for tid, day in self.seen_trades.items() if day in keep}
        for day in sorted(self.day_pnl)[:-KEEP_PNL_DAYS]:
            del self.day_pnl[day]
        for oid, t in list(self.parked_at.items()):
            if now - t > PARK_S:
                del self.parked_at[oid]
                for raw in self.parked.pop(oid, []):
                    self.on_trade(raw, park=False)

    def spawn(self, gen: Flow, name: str) -> Task:
        return self.runner.spawn(gen, name)

    def spawn_once(self, name: str, make: Callable[[], Flow]) -> Task | None:
        """Start a flow unless one of the same name is still running (polls, guard, reconcile)."""
        cur = self.singletons.get(name)
        if cur is not None and not cur.done:
            return None
        task = self.spawn(make(), name)
        self.singletons[name] = task
        return task

    def drop_queued(self, prio: int, why: str) -> int:
        pool = getattr(self.runner, "pool", None)
        return pool.drop(prio, why) if pool is not None else 0
