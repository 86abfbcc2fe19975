"""The order gateway's broker edge: commands, bracket flow, reconciliation and the guard.

Everything here runs on the ServiceLoop thread (hub callbacks are handed over with
call_soon_threadsafe), so no locks. Broker calls go through TopstepXClient. The pure
decisions live in services.orders.logic; what was sent lives in services.orders.journal.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from decimal import Decimal
from typing import Any, Callable

from loguru import logger

from common.hops import HopStats
from common.instruments import contract_name, instrument_for
from common.messages import Fill, OrderCommand, OrderEvent, OrderReply, RiskEvent
from common.topstepx.rest import (
    BrokerError, OutcomeUnknown, RateLimited, TopstepXClient, TopstepXError, parse_time, unwrap,
)
from services.orders import broker_io as IO
from services.orders import logic as L
from services.orders.broker_io import Flow, InlineRunner, Sleep, Task, call
from services.orders.config import OrdersConfig
from services.orders.journal import Journal
from services.orders.states import ACTIVE as ACTIVE_STATES
from services.orders.states import Intent, after_cancel_sent, next_status
from services.orders.states import IntentState as S

ACTIVE = tuple(x.value for x in ACTIVE_STATES)       # journal rows still in play


class Unconfirmed(TopstepXError):
    """A write whose outcome could not be confirmed by looking its tag up in bounded time."""


def _cents(value: Any) -> int:
    return int((Decimal(str(value or 0)) * 100).to_integral_value())


class Gateway:
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
        self.orders: dict[int, dict] = {}          # order id -> our view of the order
        self.rows: dict[str, dict] = {}            # tag -> journal row {key, leg, attempt, order_id}
        self.seen_trades: set[int] = journal.fill_ids()
        self.day_pnl: dict[str, int] = {}          # trading day -> realized net cents (all trades)
        self.positions: dict[str, L.BrokerPosition] = {}
        self.marks: dict[str, int] = {}
        h = journal.get("halt") or {}
        self.halted: bool = bool(h.get("halted"))
        self.halt_reason: str = h.get("reason", "")
        self.halt_day: str = h.get("day", "")
        self.hub_state = "disabled" if not sect.user_hub else "connecting"
        self.hub_reconciled = not sect.user_hub     # a REST reconciliation succeeded since the hub (re)connected
        self.last_reconcile = 0.0
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
        self.overfill_pending: dict[str, int] = {}             # contract -> intended signed size, close failed
        self.last_fill_day = ""
        self.stats: dict[str, int] = {"commands": 0, "orders_sent": 0, "fills": 0, "repairs": 0,
                                      "unknown_outcomes": 0, "rejects": 0, "reconciles": 0, "reconcile_errors": 0}
        self.bench: list[dict] = []                  # latency samples (bench_orders reads the heartbeat)
        self.cmd_t0 = 0
        self.cmd_hops: dict[str, int] = {}           # the current command's hop timestamps (wall ns)
        self.hops = HopStats()                       # tick -> order ack, per stage, for every entry
        for r in journal.orders():
            self.rows[r["tag"]] = r
            if r["order_id"]:
                self.orders[r["order_id"]] = {"id": r["order_id"], "tag": r["tag"], "key": r["key"], "leg": r["leg"],
                                              **r["data"], "status": r["data"].get("status", 6)}
        for it in journal.intents(ACTIVE):
            if it["action"] in ("enter", "reverse"):
                self.intents[it["key"]] = Intent.from_dict(it["data"])
        # a command cut off by a restart before its reply (exit, flatten, ...): forget the key so a
        # resend runs it again (each step checks the broker first); entries are resolved by tag instead
        for it in journal.intents(("new",)):
            if it["reply"] is None:
                journal.db.execute("DELETE FROM intents WHERE key=?", (it["key"],))
        for row in journal.db.execute("SELECT data FROM fills"):
            d = json.loads(row[0])
            self.day_pnl[d.get("day", "")] = self.day_pnl.get(d.get("day", ""), 0) + d.get("net", 0)
            self.last_fill_day = max(self.last_fill_day, d.get("day", ""))

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

    # ------------------------------------------------------------------
    # helpers
    # ------------------------------------------------------------------
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
        n = 0
        while L.make_tag(key, leg, n) in self.rows:
            n += 1
        return n

    def set_halt(self, reason: str, kind: str) -> None:
        self.halted, self.halt_reason = True, reason
        self.halt_day = self.day()
        self.journal.set("halt", {"halted": True, "reason": reason, "kind": kind, "day": self.halt_day})

    def clear_halt(self) -> None:
        self.halted, self.halt_reason, self.halt_day = False, "", ""
        self.journal.set("halt", {"halted": False})

    # ------------------------------------------------------------------
    # sending orders
    # ------------------------------------------------------------------
    def send(self, key: str, leg: str, contract: str, type_: int, side: int, size: int,
             price_ticks: int | None = None, extra: dict | None = None, prio: int = IO.ENTRY) -> Flow:
        """Place one order with tag key:leg:attempt, journaled before it goes out. Returns the order id.
        Raises BrokerError (refused), RateLimited, Unconfirmed (outcome unknown and not found by tag)."""
        attempt = self.next_attempt(key, leg)
        tag = L.make_tag(key, leg, attempt)
        inst = instrument_for(contract)
        data = {"contract": contract, "type": type_, "side": side, "size": size, "price_ticks": price_ticks,
                "status": 6, "fill_volume": 0, **(extra or {})}
        row = {"tag": tag, "order_id": None, "key": key, "leg": leg, "attempt": attempt, "data": data,
               "t": time.monotonic()}
        self.rows[tag] = row
        self.journal.put_order(tag, key, leg, attempt, data)
        logger.info(L.order_line(contract, type_, side, size, None if type_ == L.MARKET else price_ticks))
        price = inst.to_price(price_ticks) if price_ticks is not None else None
        self.stats["orders_sent"] += 1
        t0 = time.perf_counter_ns()
        sent_wall = time.time_ns()
        try:
            oid = (yield call(self.rest.place_order, self.acct, contract, type_, side, size,
                                        limit_price=price if type_ == L.LIMIT else None,
                                        stop_price=price if type_ == L.STOP else None, custom_tag=tag, prio=prio))
        except BrokerError as exc:
            self.stats["rejects"] += 1
            oid = exc.payload.get("orderId")
            if oid:
                self._register(tag, int(oid), {**data, "status": L.REJECTED})
            logger.warning(f"ORDER: {tag} rejected by the broker: errorCode {exc.code} {exc.message}")
            raise
        except OutcomeUnknown as exc:
            self.stats["unknown_outcomes"] += 1
            logger.warning(f"ORDER: {tag}: outcome unknown ({exc}); looking it up by tag")
            found = (yield from self.lookup_tag(tag, prio))
            if found is None:
                raise Unconfirmed(f"{tag}: {exc}; not found at the broker") from None
            oid = int(found["id"])
            logger.warning(f"ORDER: {tag} exists at the broker as order {oid} (status {found.get('status')})")
            self._register(tag, oid, data)
            self.on_order(found)
            return oid
        self.bench.append({"leg": leg, "recv_ns": self.cmd_t0, "sent_ns": t0, "ack_ns": time.perf_counter_ns()})
        del self.bench[:-1000]
        if leg == "entry" and self.cmd_hops:
            self.hops.add({**self.cmd_hops, "order_sent": sent_wall, "order_ack": time.time_ns()})
        self._register(tag, oid, data)
        return oid

    def placing_since(self, t: float) -> bool:
        """An order of ours sent after monotonic time t whose id we do not know yet."""
        return any(r["order_id"] is None and r.get("t", 0) > t for r in self.rows.values())

    def _register(self, tag: str, oid: int, data: dict) -> None:
        row = self.rows[tag]
        row["order_id"] = oid
        self.journal.set_order_id(tag, oid)
        cur = self.orders.get(oid, {})
        self.orders[oid] = {**data, **cur, "id": oid, "tag": tag, "key": row["key"], "leg": row["leg"]}
        for raw in self.parked.pop(oid, []):           # its fills came before the broker's ack
            self.on_trade(raw)

    def lookup_tag(self, tag: str, prio: int = IO.POLL) -> Flow:
        """The broker's order with this customTag; None if two searches agree it does not exist.
        Raises Unconfirmed if the broker cannot be asked within lookup_timeout_s."""
        deadline = time.monotonic() + self.sect.lookup_timeout_s
        misses = 0
        while True:
            try:
                for o in (yield call(self.rest.orders, self.acct, self.since(), prio=prio)):
                    if o.get("customTag") == tag:
                        return o
                misses += 1
                if misses >= 2:
                    return None
            except TopstepXError as exc:
                logger.warning(f"ORDER: looking up {tag} failed: {exc}")
            if time.monotonic() > deadline:
                raise Unconfirmed(f"{tag}: could not confirm within {self.sect.lookup_timeout_s} s")
            yield Sleep(0.3)

    def cancel(self, oid: int, prio: int = IO.PROTECT) -> Flow:
        try:
            (yield call(self.rest.cancel_order, self.acct, oid, prio=prio))
            logger.info(f"ORDER: cancel {oid} ({self.orders.get(oid, {}).get('tag', '?')})")
            if oid in self.orders:
                o = self.orders[oid]
                o["status"] = after_cancel_sent(o.get("status", 0))
            return True
        except BrokerError as exc:        # not found / already terminal: nothing works any more
            logger.info(f"ORDER: cancel {oid}: {exc}")
            return True
        except TopstepXError as exc:
            logger.warning(f"ORDER: cancel {oid} failed: {exc}")
            return False

    # ------------------------------------------------------------------
    # commands
    # ------------------------------------------------------------------
    def handle(self, cmd: OrderCommand, hops: dict[str, int] | None = None) -> OrderReply:
        """One command from the REP socket. `hops` are the envelope's stage timestamps (tick
        received ... engine decided); the gateway adds its own for the latency figures."""
        self.cmd_t0 = time.perf_counter_ns()
        self.cmd_hops = {**(hops or {}), "cmd_recv": time.time_ns()}
        self.stats["commands"] += 1
        if cmd.action == "status":
            return self.status(cmd)
        if cmd.action not in ("enter", "exit", "reverse", "flatten", "cancel_all", "halt", "resume"):
            return OrderReply(cmd.key, False, "error", f"unknown action {cmd.action!r}")
        if not cmd.key:
            return OrderReply(cmd.key, False, "error", "missing idempotency key")
        prev = self.journal.intent(cmd.key)
        if prev is not None:
            if prev["reply"] is not None:
                return OrderReply(**prev["reply"])
            if cmd.key in self.commands:
                return self.commands[cmd.key]
            return OrderReply(cmd.key, False, "error", "command with this key is still being processed")
        self.journal.put_intent(cmd.key, cmd.action, "new", {"cmd": asdict(cmd)})
        if cmd.action in ("halt", "resume"):           # no broker call: answered at once
            return self.finish_command(cmd, getattr(self, f"cmd_{cmd.action}")(cmd))
        if cmd.action == "flatten":
            self.drop_queued(IO.ENTRY, "flatten")      # queued entries would only be closed again
        task = self.spawn(self.run_command(cmd), f"{cmd.action} {cmd.key}")
        if task.done:
            return task.result
        self.commands[cmd.key] = task
        task.on_done(lambda t, key=cmd.key: self.commands.pop(key, None))
        return task

    def run_command(self, cmd: OrderCommand) -> Flow:
        try:
            reply = yield from getattr(self, f"cmd_{cmd.action}")(cmd)
        except Exception as exc:   # never leave a key without an answer
            logger.exception(f"ORDER: {cmd.action} {cmd.key} failed: {exc}")
            reply = OrderReply(cmd.key, False, "error", f"{type(exc).__name__}: {exc}")
        return self.finish_command(cmd, reply)

    def finish_command(self, cmd: OrderCommand, reply: OrderReply) -> OrderReply:
        self.journal.set_reply(cmd.key, asdict(reply))
        if self.journal.intent(cmd.key)["state"] == "new":
            self.journal.set_intent(cmd.key, state="done")
        return reply

    def command_answered_early(self, task: Task) -> None:
        """The socket answered `accepted` before the outcome was known: the outcome follows on
        the bus (an OrderReply on orders_pub, keyed by the command's key)."""
        def publish(t: Task) -> None:
            if isinstance(t.result, OrderReply):
                logger.info(f"ORDER: outcome of {t.name}: {t.result.status} {t.result.message}".rstrip())
                self.publish(t.result, key=f"reply:{t.result.key}", forget=True)
        task.on_done(publish)

    # ------------------------------------------------------------------
    # running flows
    # ------------------------------------------------------------------
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

    def status(self, cmd: OrderCommand) -> OrderReply:
        pos = self.positions.get(cmd.contract or self.contract)
        working = [{"order_id": o["id"], "tag": o["tag"], "leg": o["leg"], "type": o.get("type"),
                    "side": o.get("side"), "size": o.get("size"), "status": o.get("status")}
                   for o in self.orders.values() if o.get("status") in L.LIVE]
        return OrderReply(cmd.key, True, "ok", detail={
            "halted": self.halted, "halt_reason": self.halt_reason, "working_orders": working,
            "position": ({"contract": pos.contract, "direction": pos.direction, "size": pos.size} if pos else None),
            "in_flight": [k for k, it in self.intents.items() if it.in_flight],
            "hub": self.hub_state, "day_pnl_cents": self.day_pnl_cents(),
            "entries_ok": self.hub_reconciled,
            "latency_samples": self.bench[-1000:] if cmd.reason == "bench" else []})

    def entry_check(self, contract: str, size: int) -> tuple[str, str] | None:
        now = self.now_ns()
        known = now > 0
        it = self.active_intent(contract)
        pos = self.positions.get(contract)
        return L.entry_refusal(
            halted=self.halted, halt_reason=self.halt_reason, size=size, max_contracts=self.max_contracts,
            open_size=(pos.size if pos else 0) or (it.filled if it else 0),
            in_flight=it is not None, past_flatten=known and self.calendar.must_be_flat(now),
            entries_allowed=(not known) or self.calendar.entries_allowed(now),
            broker_ok=self.hub_reconciled)

    def cmd_enter(self, cmd: OrderCommand) -> Flow:
        contract = cmd.contract or self.contract
        if cmd.direction not in (1, -1):
            return OrderReply(cmd.key, False, "error", f"direction must be +1 or -1, not {cmd.direction}")
        refusal = self.entry_check(contract, cmd.size)
        if refusal:
            logger.warning(f"ORDER: entry {cmd.key} {refusal[0]}: {refusal[1]}")
            return OrderReply(cmd.key, False, refusal[0], refusal[1])
        return (yield from self._enter(cmd, contract))

    def _enter(self, cmd: OrderCommand, contract: str) -> Flow:
        it = Intent(cmd.key, contract, cmd.direction, cmd.size,
                    stop_ticks=cmd.stop_ticks or self.sect.repair_stop_ticks,
                    target_ticks=cmd.target_ticks or self.sect.repair_target_ticks,
                    signal_id=cmd.signal_id or cmd.key, model_version=cmd.model_version, since=time.monotonic())
        self.intents[cmd.key] = it
        self.journal.put_intent(cmd.key, cmd.action, it.state.value, it.as_dict())
        size = cmd.size
        while True:
            if self.halted or self.flatten_pending:
                self.save_intent(it.to(S.FAILED))
                return OrderReply(cmd.key, False, "halted", f"gateway halted: {self.halt_reason or 'flattening'}")
            try:
                oid = (yield from self.send(cmd.key, "entry", contract, L.MARKET, L.entry_side(cmd.direction), size))
                break
            except BrokerError as exc:
                if exc.code == L.INSUFFICIENT_FUNDS and L.reduced_size(size) > 0:
                    size = L.reduced_size(size)
                    logger.warning(f"ORDER: insufficient margin; retrying {cmd.key} with size {size}")
                    continue
                self.save_intent(it.to(S.REJECTED))
                return OrderReply(cmd.key, False, "rejected", f"errorCode {exc.code} {exc.message}".strip(),
                                  {"code": exc.code, "order_id": exc.payload.get("orderId")})
            except Unconfirmed as exc:
                it.since = time.monotonic()
                self.save_intent(it.to(S.UNKNOWN))
                self.risk("order_unknown", True, f"entry {cmd.key}: {exc}; resolving, flatten if unconfirmed", "ERROR")
                return OrderReply(cmd.key, False, "error", f"outcome unknown: {exc}", {"in_flight": True})
            except (RateLimited, TopstepXError) as exc:
                self.save_intent(it.to(S.FAILED))
                return OrderReply(cmd.key, False, "error", str(exc))
        it.entry_oid, it.size = oid, size
        if it.state is S.PLACING:            # a fill may have come in first
            it.to(S.WORKING)
        self.save_intent(it)
        return OrderReply(cmd.key, True, "accepted", "", {"order_id": oid, "size": size})

    def cmd_exit(self, cmd: OrderCommand) -> Flow:
        contract = cmd.contract or self.contract
        ok, _, msg = (yield from self.close_contract(contract, cmd.key, "exit"))
        if not ok:
            return OrderReply(cmd.key, False, "error", msg)
        return OrderReply(cmd.key, True, "flat", msg)

    def cmd_reverse(self, cmd: OrderCommand) -> Flow:
        contract = cmd.contract or self.contract
        if cmd.direction not in (1, -1):
            return OrderReply(cmd.key, False, "error", f"direction must be +1 or -1, not {cmd.direction}")
        if self.halted:
            return OrderReply(cmd.key, False, "halted", f"gateway halted: {self.halt_reason}")
        ok, exit_oid, msg = (yield from self.close_contract(contract, cmd.key, "exit"))
        if not ok:
            return OrderReply(cmd.key, False, "error", f"exit failed: {msg}")
        refusal = self.entry_check(contract, cmd.size)
        if refusal:
            return OrderReply(cmd.key, True, refusal[0], f"exited; entry {refusal[0]}: {refusal[1]}",
                              {"exit_order_id": exit_oid})
        rep = (yield from self._enter(cmd, contract))
        rep.detail["exit_order_id"] = exit_oid
        return rep

    def cmd_flatten(self, cmd: OrderCommand) -> Flow:
        ok = (yield from self.flatten(cmd.key, "flatten", cmd.reason or "flatten command"))
        return OrderReply(cmd.key, ok, "flat" if ok else "error", "" if ok else "not verified flat; retrying")

    def cmd_cancel_all(self, cmd: OrderCommand) -> Flow:
        left = (yield from self.cancel_all())
        return OrderReply(cmd.key, not left, "cancelled" if not left else "error",
                          "" if not left else f"{len(left)} orders still working", {"working": left})

    def cmd_halt(self, cmd: OrderCommand) -> OrderReply:
        self.set_halt(cmd.reason or "operator halt", "manual")
        self.drop_queued(IO.ENTRY, "halt")
        self.risk("halt", True, f"halted: {self.halt_reason}")
        return OrderReply(cmd.key, True, "halted", self.halt_reason)

    def cmd_resume(self, cmd: OrderCommand) -> OrderReply:
        h = self.journal.get("halt") or {}
        if h.get("kind") == "daily_loss" and h.get("day") == self.day():
            return OrderReply(cmd.key, False, "refused", "daily loss halt holds until the next trading day")
        self.clear_halt()
        self.risk("halt", False, "resumed")
        return OrderReply(cmd.key, True, "resumed")

    # ------------------------------------------------------------------
    # closing
    # ------------------------------------------------------------------
    def working_orders(self, contract: str | None = None, prio: int = IO.EXIT) -> Flow:
        got = yield call(self.rest.open_orders, self.acct, prio=prio)
        return [o for o in got if contract is None or o.get("contractId") == contract]

    def cancel_all(self, contract: str | None = None, prio: int = IO.EXIT) -> Flow:
        """Cancel every working order (of a contract) and verify; returns ids still working."""
        left: list[int] = []
        for round_ in range(3):
            try:
                working = (yield from self.working_orders(contract, prio))
            except TopstepXError as exc:
                logger.warning(f"ORDER: cannot list working orders: {exc}")
                yield Sleep(0.3)
                continue
            left = [int(o["id"]) for o in working]
            if not left:
                return []
            for oid in left:
                (yield from self.cancel(oid, prio))
            yield Sleep(0.05 * (round_ + 1))
        return left

    def broker_positions(self, prio: int = IO.EXIT) -> Flow:
        """The broker's positions from a fresh REST answer. It replaces the view wholesale: a
        contract the broker does not list is flat (a cached position is never an order's basis)."""
        fresh: dict[str, L.BrokerPosition] = {}
        for p in (yield call(self.rest.open_positions, self.acct, prio=prio)):
            bp = L.position_of(p)
            if bp is not None:
                fresh[bp.contract] = bp
        self.positions = fresh
        return dict(fresh)

    def broker_position(self, contract: str, prio: int = IO.EXIT) -> Flow:
        return (yield from self.broker_positions(prio)).get(contract)

    def wait_flat(self, contract: str | None, prio: int = IO.EXIT) -> Flow:
        """True once REST confirms flat. Between REST reads the user hub's position events are
        watched (no REST): a REST read is made when the hub shows flat, or once a second."""
        deadline = time.monotonic() + self.sect.flat_verify_s
        last_rest = 0.0
        while True:
            hub_flat = self.hub_state == "connected" and \
                not any(p.size for c, p in self.positions.items() if contract is None or c == contract)
            if hub_flat or time.monotonic() - last_rest >= self.sect.flat_rest_every_s:
                last_rest = time.monotonic()
                try:
                    ps = (yield from self.broker_positions(prio))
                    if not any(p.size for c, p in ps.items() if contract is None or c == contract):
                        return True
                except TopstepXError as exc:
                    logger.warning(f"GUARD: position check failed: {exc}")
                self.stats["flat_checks"] = self.stats.get("flat_checks", 0) + 1
            if time.monotonic() > deadline:
                return False
            yield Sleep(0.05)

    def close_position(self, contract: str, key: str, leg: str, size: int | None = None,
                       prio: int = IO.EXIT) -> Flow:
        """Position/closeContract (or partialCloseContract for `size`): the broker closes what it
        holds, so the order can neither open nor flip a position whatever our view says.
        True if a close was sent, False if the broker says there is nothing to close.
        Raises TopstepXError when the broker could not be told."""
        self.closing[contract] = (key, leg, time.monotonic() + 30, max(self.orders, default=0))
        self.stats["orders_sent"] += 1
        logger.info(f"ORDER: CLOSE {contract_name(contract)} {'all' if size is None else size} ({key}:{leg})")
        try:
            if size is None:
                (yield call(self.rest.close_contract, self.acct, contract, prio=prio))
            else:
                (yield call(self.rest.partial_close_contract, self.acct, contract, size, prio=prio))
            return True
        except BrokerError as exc:
            if "not found" in (exc.message or "").lower():
                logger.info(f"ORDER: close {contract_name(contract)}: broker holds no position ({exc.message})")
                return False
            raise

    def _adopt_close_order(self, oid: int, contract: str, side: int, size: int) -> dict | None:
        """The untagged market order a closeContract created: journal it under the exit's key and
        leg, so its fills and events carry the right leg."""
        key, leg, until, newer_than = self.closing.get(contract, ("", "", 0.0, 0))
        if not key or time.monotonic() > until or oid <= newer_than:
            return None
        attempt = self.next_attempt(key, leg)
        tag = L.make_tag(key, leg, attempt)
        data = {"contract": contract, "type": L.MARKET, "side": side, "size": size, "price_ticks": None,
                "status": 6, "fill_volume": 0, "via": "closeContract"}
        self.rows[tag] = {"tag": tag, "order_id": None, "key": key, "leg": leg, "attempt": attempt, "data": data}
        self.journal.put_order(tag, key, leg, attempt, data)
        self._register(tag, oid, data)
        return self.orders[oid]

    def close_contract(self, contract: str, key: str, leg: str, prio: int = IO.EXIT) -> Flow:
        """Close the position first, confirm flat, then cancel what is left of its legs. If the close
        cannot be sent or confirmed, the stop stays at the broker. Returns (ok, None, message)."""
        self.busy_until[contract] = time.monotonic() + 5
        self.set_closing(contract, True)
        try:
            (yield from self.cancel_increasing(contract, prio))
            pos = (yield from self.broker_position(contract, prio))
            sent = pos is not None and (yield from self.close_position(contract, key, leg, prio=prio))
        except TopstepXError as exc:
            self.set_closing(contract, False)
            return False, None, f"close failed: {exc}; protection left in place"
        if not (yield from self.wait_flat(contract, prio)):
            self.set_closing(contract, False)
            return False, None, "position not flat after the close; protection left in place"
        self.mark_closed(contract)
        left = (yield from self.cancel_all(contract, IO.PROTECT))
        if left:
            self.stale_legs.update(left)
            logger.warning(f"ORDER: flat, but {left} still working; cancelling again")
        return True, None, "closed" if sent else "already flat"

    def cancel_increasing(self, contract: str | None = None, prio: int = IO.EXIT) -> Flow:
        """Before a close: cancel working orders that would add to a position (entries), keep the
        stop and target of the position until it is gone. Raises TopstepXError."""
        for o in (yield from self.working_orders(contract, prio)):
            mine = self.orders.get(int(o["id"]))
            if mine is not None and mine["leg"] == "entry":
                (yield from self.cancel(int(o["id"]), prio))

    def set_closing(self, contract: str, closing: bool) -> None:
        """OPEN <-> CLOSING for the contract's open intents (a failed close leaves them open)."""
        for it in list(self.intents.values()):
            if it.contract == contract and it.state is (S.OPEN if closing else S.CLOSING):
                self.save_intent(it.to(S.CLOSING if closing else S.OPEN))

    def mark_closed(self, contract: str | None) -> None:
        for it in list(self.intents.values()):
            if contract is None or it.contract == contract:
                self.save_intent(it.to(S.CLOSED))

    def flatten(self, key: str, leg: str, reason: str, budget_s: float = 30.0, prio: int = IO.FLATTEN) -> Flow:
        """Close every position (closeContract), verify flat over REST, then cancel every working
        order and verify. Protection is cancelled only once the broker shows flat."""
        logger.warning(f"GUARD: flatten ({reason})")
        end = time.monotonic() + budget_s
        for c in list(self.positions) + [self.contract]:
            self.busy_until[c] = time.monotonic() + 5
        pause = 0.2
        while time.monotonic() < end:
            try:
                (yield from self.cancel_increasing(None, prio))
                ps = (yield from self.broker_positions(prio))
            except TopstepXError as exc:
                logger.warning(f"GUARD: flatten cannot read the broker: {exc}")
                yield Sleep(pause)
                pause = min(2.0, pause * 2)
                continue
            for c in list(ps):
                try:
                    (yield from self.close_position(c, key, leg, prio=prio))
                except TopstepXError as exc:
                    logger.error(f"GUARD: flatten close of {c} failed: {exc}")
            if (yield from self.wait_flat(None, prio)):
                self.mark_closed(None)
                left = (yield from self.cancel_all(None, prio))
                if not left:
                    logger.info(f"GUARD: verified flat with no working orders ({reason})")
                    if self.flatten_pending:
                        self.flatten_pending = None
                        self.risk("flatten_failed", False, f"verified flat ({reason})")
                    return True
                self.stale_legs.update(left)
        self.risk("flatten_failed", True, f"not verified flat ({reason}); retrying", "ERROR")
        self.flatten_pending = (key, leg, reason)
        return False

    def retry_stale_legs(self) -> Flow:
        """Orders left working after a confirmed flat (a cancel refused or rate limited)."""
        for oid in list(self.stale_legs):
            o = self.orders.get(oid)
            if o is not None and o.get("status") in L.TERMINAL:
                self.stale_legs.discard(oid)
            elif (yield from self.cancel(oid)):
                self.stale_legs.discard(oid)

    def on_overfill(self, contract: str, intended: int, detail: str) -> Flow:
        """More was filled than meant (both legs filled, a fill after a cancel, an entry over its
        size): close the excess at once, raise an ERROR risk event, halt entries."""
        self.stats["overfills"] = self.stats.get("overfills", 0) + 1
        self.risk("overfill", True, detail, "ERROR")
        self.set_halt(f"overfill: {detail}", "overfill")
        self.risk("halt", True, f"halted: overfill: {detail}")
        (yield from self.close_excess(contract, intended))

    def close_excess(self, contract: str, intended: int, prio: int = IO.FLATTEN) -> Flow:
        """Bring the broker's position back to `intended` (signed; 0 = flat) by closing only."""
        key = f"gw-overfill-{time.time_ns()}"
        self.overfill_pending.pop(contract, None)
        try:
            pos = (yield from self.broker_position(contract, prio))
            if pos is None:
                return
            if intended == 0 or pos.direction != (1 if intended > 0 else -1):
                (yield from self.close_contract(contract, key, "flatten", prio))
            elif pos.size > abs(intended):
                (yield from self.close_position(contract, key, "flatten", size=pos.size - abs(intended), prio=prio))
        except TopstepXError as exc:
            logger.error(f"GUARD: closing the overfill in {contract_name(contract)} failed: {exc}; the guard retries")
            self.overfill_pending[contract] = intended

    # ------------------------------------------------------------------
    # broker events (hub or REST, same path; idempotent)
    # ------------------------------------------------------------------
    def order_event(self, o: dict) -> OrderEvent:
        inst = instrument_for(o["contract"])
        pt = o.get("price_ticks")
        return OrderEvent(o["id"], o["tag"], o["contract"], o["leg"], o.get("side", 0), o.get("type", 0),
                          o.get("size", 0), o.get("status", 0),
                          limit_ticks=pt if o.get("type") == L.LIMIT else None,
                          stop_ticks=pt if o.get("type") == L.STOP else None,
                          fill_volume=o.get("fill_volume", 0), filled_price=o.get("filled_price", ""),
                          intent_key=o["key"], signal_id=self._intent_field(o["key"], "signal_id", o["key"]))

    def _intent_field(self, key: str, name: str, default: Any = "") -> Any:
        it = self.intents.get(key)
        if it is not None:
            return getattr(it, name, default)
        row = self.journal.intent(key)
        if row:
            d = row["data"]
            return d.get(name) or d.get("cmd", {}).get(name) or default
        return default

    def on_order(self, raw: dict) -> None:
        tag = raw.get("customTag") or ""
        oid = int(raw["id"])
        row = self.rows.get(tag)
        if row is None:
            if oid not in self.orders and (tag or int(raw.get("type", 0)) != L.MARKET or self._adopt_close_order(
                    oid, raw.get("contractId") or "", int(raw.get("side", 0)), int(raw.get("size") or 0)) is None):
                return                      # not one of ours
        elif row["order_id"] is None:
            self._register(tag, oid, row["data"])
        o = self.orders.get(oid)
        if o is None:
            return
        if o["leg"] == "entry":
            it = self.intents.get(o["key"])
            dead = int(raw.get("status", 0)) in L.TERMINAL and not int(raw.get("fillVolume") or 0)
            if it is not None and it.state in (S.PLACING, S.UNKNOWN) and not dead:
                self._adopt_entry(it, oid)       # (a refused attempt is not the entry: a retry may follow)
        inst = instrument_for(raw.get("contractId") or o["contract"])
        fp = raw.get("filledPrice")
        new = {"status": next_status(o.get("status"), int(raw.get("status", o.get("status", 0)))), "fill_volume": int(raw.get("fillVolume") or 0),
               "size": int(raw.get("size") or o.get("size", 0)),
               "filled_price": str(Decimal(str(fp))) if fp not in (None, 0) else ""}
        px = raw.get("stopPrice") if o.get("type") == L.STOP else raw.get("limitPrice")
        if px is not None:
            new["price_ticks"] = inst.to_ticks_rounded(px)
        changed = any(o.get(k) != v for k, v in new.items())
        o.update(new)
        if not changed:
            return
        self.journal.put_order(o["tag"], o["key"], o["leg"], self.rows[o["tag"]]["attempt"],
                               {k: o.get(k) for k in ("contract", "type", "side", "size", "price_ticks", "status",
                                                      "fill_volume")}, oid)
        terminal = o["status"] in L.TERMINAL
        self.publish(self.order_event(o), key=str(oid), forget=terminal)
        if o["leg"] == "entry" and terminal and o["fill_volume"] == 0:
            it = self.intents.get(o["key"])
            if it is not None and it.state in (S.WORKING, S.UNKNOWN) and it.entry_oid == oid:
                it.to(S.REJECTED if o["status"] == L.REJECTED else S.CANCELLED)
                logger.warning(f"ORDER: entry {o['tag']} ended with status {o['status']} and no fill")
                self.save_intent(it)

    def _adopt_entry(self, it: dict, oid: int) -> None:
        """An entry whose placement outcome was unknown (timeout, restart) is found at the broker."""
        key = it.key
        was = it.state.value
        it.entry_oid = oid
        it.to(S.WORKING)
        logger.warning(f"SYNC: entry {key} found at the broker as order {oid} (was {was})")
        if was == "unknown":
            self.risk("order_unknown", False, f"entry {key} resolved: order {oid}")
        rec = self.journal.intent(key)
        if rec and rec["reply"] is None:
            self.journal.set_reply(key, asdict(OrderReply(key, True, "accepted", "",
                                                          {"order_id": oid, "size": it.size})))
        self.save_intent(it)

    def on_trade(self, raw: dict, publish: bool = True) -> None:
        tid = int(raw["id"])
        if tid in self.seen_trades:
            return
        self.seen_trades.add(tid)
        if raw.get("voided"):
            return
        contract = raw.get("contractId") or self.contract
        inst = instrument_for(contract)
        oid = int(raw.get("orderId") or 0)
        ts = parse_time(raw.get("creationTimestamp"))
        price = inst.to_ticks_rounded(raw["price"])
        fees = _cents(raw.get("fees")) + _cents(raw.get("commissions"))
        pnl = None if raw.get("profitAndLoss") is None else _cents(raw["profitAndLoss"])
        day = self.calendar.trading_day(ts) if ts else self.day()
        net = (pnl or 0) - fees
        o = self.orders.get(oid) or self._adopt_close_order(oid, contract, int(raw.get("side", 0)),
                                                             int(raw.get("size", 0)))
        if o is None and publish and self.placing_since(time.monotonic() - 30):
            # a fill of an order whose placement has not returned yet: keep it until the ack
            self.seen_trades.discard(tid)
            self.parked.setdefault(oid, []).append(raw)
            return
        leg, key = (o["leg"], o["key"]) if o else ("unknown", "")
        if o is not None and o.get("status") in (L.PENDING_CANCEL, L.CANCELLED):
            self.stats["fills_after_cancel"] = self.stats.get("fills_after_cancel", 0) + 1
            logger.warning(f"FILL: trade {tid} fills {o['tag']} after its cancel was sent")
        side, size = int(raw.get("side", 0)), int(raw.get("size", 0))
        fill = Fill(tid, oid, contract, leg, side, size, price, fees, pnl, ts, intent_key=key,
                    signal_id=str(self._intent_field(key, "signal_id", key)) if key else "",
                    model_version=str(self._intent_field(key, "model_version", "")) if key else "")
        self.journal.add_fill(tid, oid, {"day": day, "net": net, "leg": leg, "key": key,
                                         "fill": asdict(fill) if publish else None})
        self.day_pnl[day] = self.day_pnl.get(day, 0) + net
        self.last_fill_day = max(self.last_fill_day, day)
        if not publish:
            return
        self.stats["fills"] += 1
        logger.info(L.fill_line(contract, side, size, price, leg))
        self.publish(fill, key=str(tid))
        if o is None:
            logger.warning(f"FILL: trade {tid} for order {oid} that is not ours")
            return
        it = self.intents.get(key)
        if leg == "entry" and it is not None:
            it.filled += size
            if it.filled > o.get("size", it.size):
                meant = o.get("size", it.size)
                it.filled = meant
                self.spawn(self.on_overfill(contract, it.direction * meant,
                                            f"entry {o['tag']} filled {it.filled + size} > size {meant}"), "overfill")
            if it.fill_ticks is None:
                it.fill_ticks = price
                it.protect_t0 = time.perf_counter_ns()
            if it.state is not S.CLOSING:
                it.to(S.OPEN)
            self.save_intent(it)
            self.spawn_protect(it)
        elif leg in ("stop", "target", "repair") and it is not None and it.active:
            it.closed += size
            remaining = it.filled - it.closed
            others = [x for x in (it.stop_oid, it.target_oid) if x and x != oid]
            if remaining <= 0:
                for x in others:
                    self.spawn(self.cancel(x, IO.PROTECT), f"oco-cancel-{x}")
                it.to(S.CLOSED)
                logger.info(f"ORDER: {o['tag']} filled; OCO sibling(s) {others} cancelled")
            else:
                for x in others:
                    self.spawn(self._modify_size(x, remaining), f"oco-resize-{x}")
            self.save_intent(it)
            if remaining < 0:
                self.spawn(self.on_overfill(contract, 0, f"{o['tag']} filled {size} with only {size + remaining} "
                                                         "open: both legs filled"), "overfill")
        elif leg in ("stop", "target", "repair"):
            # a protective leg filled after its position was closed (a fill after the cancel was sent)
            self.spawn(self.on_overfill(contract, 0, f"{o['tag']} filled {size} after its position was closed"),
                       "overfill")

    def _modify_size(self, oid: int, size: int, prio: int = IO.PROTECT) -> Flow:
        o = self.orders.get(oid)
        if o is None or o.get("size") == size or o.get("status") in L.TERMINAL:
            return
        try:
            (yield call(self.rest.modify_order, self.acct, oid, size=size, prio=prio))
            o["size"] = size
            logger.info(f"ORDER: {o['tag']} resized to {size}")
        except TopstepXError as exc:
            logger.warning(f"ORDER: resize {o['tag']} to {size} failed: {exc} (the invariant check repairs it)")

    def spawn_protect(self, it: Intent) -> None:
        """One protect flow per intent at a time; a fill meanwhile runs it once more after."""
        if it.key in self.protecting:
            self.protecting[it.key] = True
            return
        self.protecting[it.key] = False

        def again(_task) -> None:
            rerun = self.protecting.pop(it.key, False)
            if rerun and it.active:
                self.spawn_protect(it)
        self.spawn(self.protect(it), f"protect-{it.key}").on_done(again)

    def protect(self, it: Intent) -> Flow:
        """Stop and target for the filled quantity at the fill price ± the distances; resize on more
        fills. The stop is tried a few times (a 5xx burst); if it cannot be placed, close."""
        c, d, size = it.contract, it.direction, it.filled
        stop_px, tgt_px = L.bracket_ticks(it.fill_ticks, d, it.stop_ticks, it.target_ticks)
        side = L.close_side(d)
        self.busy_until[c] = time.monotonic() + 3
        for leg, type_, px, field in (("stop", L.STOP, stop_px, "stop_oid"), ("target", L.LIMIT, tgt_px, "target_oid")):
            if getattr(it, field):
                (yield from self._modify_size(getattr(it, field), size))
                continue
            existing = self._tag_order(it.key, leg)
            if existing is not None:
                setattr(it, field, existing)
                (yield from self._modify_size(existing, size))
                continue
            err: Exception | None = None
            for attempt in range(self.sect.protect_attempts):
                try:
                    setattr(it, field, (yield from self.send(it.key, leg, c, type_, side, size, px, prio=IO.PROTECT)))
                    err = None
                    break
                except BrokerError as exc:
                    err = exc
                    break
                except TopstepXError as exc:             # 5xx, 429, timeout: the broker did not take it
                    err = exc
                    logger.warning(f"ORDER: {leg} for {it.key} attempt {attempt + 1} failed: {exc}")
                    yield Sleep(0.2 * (attempt + 1))
            if err is not None:
                self.risk("protection_failed", True, f"{leg} for {it.key} failed: {err}", "ERROR")
                if leg == "stop":
                    ok, _, msg = (yield from self.close_contract(c, it.key, "exit", IO.PROTECT))
                    if not ok:
                        self.risk("unprotected", True, f"{contract_name(c)} unprotected and not closed: {msg}", "ERROR")
                        self.flatten_pending = self.flatten_pending or (f"gw-unprotected-{time.time_ns()}", "flatten",
                                                                        "a position without a stop")
                    return
            self.save_intent(it)
        if it.protect_t0 and it.stop_oid and it.target_oid:
            self.bench.append({"protected_ns": time.perf_counter_ns() - it.protect_t0, "leg": "protect"})
            it.protect_t0 = None
        self.save_intent(it)

    def _tag_order(self, key: str, leg: str) -> int | None:
        """A sent order of this key and leg that is still alive (journal + broker view)."""
        for tag, row in self.rows.items():
            if row["key"] == key and row["leg"] == leg and row["order_id"]:
                o = self.orders.get(row["order_id"], {})
                if o.get("status") not in L.TERMINAL:
                    return row["order_id"]
        return None

    def _on_position(self, p: dict) -> None:
        bp = L.position_of(p)
        if bp is None:
            self.positions.pop(p.get("contractId"), None)
        else:
            self.positions[bp.contract] = bp

    # hub handlers (on the loop thread)
    def on_hub(self, target: str, args: list) -> None:
        for a in args:
            items = a if isinstance(a, list) else [a]
            for item in items:
                d = unwrap(item)
                if not isinstance(d, dict) or d.get("accountId", self.acct) != self.acct:
                    continue
                try:
                    if target == "GatewayUserOrder":
                        self.on_order(d)
                    elif target == "GatewayUserTrade":
                        self.on_trade(d)
                    elif target == "GatewayUserPosition":
                        self._on_position(d)
                except Exception as exc:
                    logger.exception(f"HUB: {target} event failed: {exc}")

    def on_hub_state(self, state: str, detail: str) -> None:
        was = self.hub_state
        self.hub_state = state
        if state != "connected":
            if self.hub_reconciled and self.sect.user_hub:
                self.risk("user_hub_down", True, f"user hub {state}: {detail}; entries paused until reconciled")
            self.hub_reconciled = False
        elif was != "connected":
            logger.info("HUB: user hub connected; reconciling over REST")
            self.spawn_once("reconcile", lambda: self.reconcile())

    # ------------------------------------------------------------------
    # reconciliation, invariant, guard (timers)
    # ------------------------------------------------------------------
    def reconcile(self, initial: bool = False, prio: int = IO.POLL) -> Flow:
        got: dict[str, list] = {}
        for name, fn, args in (("orders", self.rest.orders, (self.acct, self.since())),
                               ("trades", self.rest.trades, (self.acct, self.since())),
                               ("positions", self.rest.open_positions, (self.acct,))):
            try:
                got[name] = yield call(fn, *args, prio=prio)
            except TopstepXError as exc:
                logger.warning(f"SYNC: reconciliation: {name} failed: {exc}")
        fresh = initial and not self.journal.get("initialized")
        # each part on its own: fills still come in while (say) Order/search fails
        for o in got.get("orders", []):
            self.on_order(o)
        if "trades" in got and ("orders" in got or not fresh):
            for t in sorted(got["trades"], key=lambda t: int(t["id"])):
                self.on_trade(t, publish=not fresh)
        if "positions" in got:
            self.positions = {}
            for p in got["positions"]:
                self._on_position(p)
        if len(got) < 3:
            self.stats["reconcile_errors"] += 1
            return False
        orders = got["orders"]
        (yield from self.drop_vanished(orders, prio))
        self.stats["reconciles"] += 1
        if fresh:
            self.journal.set("initialized", True)
        self.last_reconcile = time.monotonic()
        if self.hub_state == "connected" and not self.hub_reconciled:
            self.hub_reconciled = True
            self.risk("user_hub_down", False, "user hub up and reconciled; entries allowed")
        (yield from self.resolve_intents(orders, initial))
        (yield from self.check_invariant(orders, initial))
        return True

    def drop_vanished(self, orders: list[dict], prio: int = IO.POLL) -> Flow:
        """An order the journal holds as working that the broker knows nothing of (not in its
        order history, not open) is not working: it would otherwise be reported, swept and
        counted as protection forever. Seen when a simulated broker was started afresh."""
        seen = {int(o["id"]) for o in orders if o.get("id") is not None}
        ghosts = [oid for oid, o in self.orders.items() if o.get("status") in L.LIVE and oid not in seen]
        if not ghosts:
            return
        try:
            open_ids = {int(o["id"]) for o in (yield call(self.rest.open_orders, self.acct, prio=prio))}
        except TopstepXError as exc:
            logger.warning(f"SYNC: cannot confirm {len(ghosts)} journal orders missing at the broker: {exc}")
            return
        for oid in ghosts:
            if oid in open_ids:
                continue
            o = self.orders[oid]
            logger.warning(f"SYNC: order {oid} ({o['tag']}) is working in the journal but unknown to the broker; "
                           "marked cancelled")
            self.on_order({"id": oid, "customTag": o["tag"], "contractId": o["contract"], "status": L.CANCELLED,
                           "fillVolume": o.get("fill_volume", 0), "size": o.get("size", 0)})

    def resolve_intents(self, orders: list[dict], initial: bool) -> Flow:
        by_tag = {o.get("customTag"): o for o in orders}
        for it in list(self.intents.values()):
            key = it.key
            if it.state in (S.PLACING, S.UNKNOWN):
                found = [by_tag[t] for t, r in self.rows.items() if r["key"] == key and r["leg"] == "entry" and t in by_tag]
                if found:
                    self._adopt_entry(it, int(found[-1]["id"]))
                elif initial or time.monotonic() - it.since > self.sect.unknown_flatten_s:
                    pos = self.positions.get(it.contract)
                    if pos is not None:
                        self.risk("order_unknown", True, f"entry {key} unconfirmed but a position is open: closing", "ERROR")
                        (yield from self.close_contract(it.contract, key, "exit"))
                    if it.active:
                        it.to(S.FAILED)
                    rec = self.journal.intent(key)
                    if rec and rec["reply"] is None:
                        self.journal.set_reply(key, asdict(OrderReply(key, False, "error", "entry not placed")))
                    self.save_intent(it)
                    continue
                self.save_intent(it)
            if it.state in (S.WORKING, S.OPEN):
                # recompute the filled quantity from the broker's order view (a restart may have missed it)
                o = self.orders.get(it.entry_oid or -1)
                if o and o.get("fill_volume", 0) > it.filled and it.fill_ticks is not None:
                    it.filled = o["fill_volume"]
                if it.filled > 0 and it.fill_ticks is not None:
                    it.to(S.OPEN)
                    # at start, protect only what the broker still holds: a position closed while
                    # the gateway was down (or a broker started afresh) is closed below, not protected
                    if (initial and it.contract in self.positions) or \
                            (not initial and not (it.stop_oid and it.target_oid)):
                        self.spawn_protect(it)
                if it.state is S.OPEN and it.contract not in self.positions \
                        and time.monotonic() > self.busy_until.get(it.contract, 0):
                    logger.info(f"SYNC: {key}: broker shows flat; intent closed")
                    for x in (it.stop_oid, it.target_oid):
                        if x and self.orders.get(x, {}).get("status") in L.WORKING:
                            (yield from self.cancel(x, IO.PROTECT))
                    self.save_intent(it.to(S.CLOSED))

    def check_invariant(self, orders: list[dict], immediate: bool = False) -> Flow:
        now = time.monotonic()
        busy = {c for c, t in self.busy_until.items() if t > now}
        busy |= {it.contract for it in self.intents.values() if it.in_flight or it.state is S.CLOSING}
        bos = []
        for o in orders:
            if int(o.get("status", 0)) not in L.WORKING:
                continue
            inst = instrument_for(o["contractId"])
            bos.append(L.BrokerOrder(int(o["id"]), o["contractId"], int(o["type"]), int(o["side"]), int(o["size"]),
                                     int(o["status"]), o.get("customTag") or ""))
        rep = L.check_protection(list(self.positions.values()), bos, busy)
        if not rep:
            self.violations.clear()
            return
        sig = ";".join(rep.problems)
        self.violations[sig] = self.violations.get(sig, 0) + 1
        if not immediate and self.violations[sig] < 2:
            return                         # must be seen twice: the broker view may be mid-change
        self.violations.clear()
        self.stats["repairs"] += 1
        self.risk("protection_invariant", True, "; ".join(rep.problems), "ERROR")
        for oid in rep.cancel:
            (yield from self.cancel(oid, IO.PROTECT))
        for oid, size in rep.resize:
            try:
                (yield call(self.rest.modify_order, self.acct, oid, size=size, prio=IO.PROTECT))
            except TopstepXError as exc:
                logger.warning(f"REPAIR: resize {oid} failed: {exc}")
        repair_key = f"gw-repair-{time.time_ns()}"
        for pos, leg, type_ in [(p, "stop", L.STOP) for p in rep.place_stop] + \
                               [(p, "target", L.LIMIT) for p in rep.place_target]:
            it = self.active_intent(pos.contract)
            inst = instrument_for(pos.contract)
            if it is not None and it.fill_ticks is not None:
                key, base = it.key, it.fill_ticks
                sd, td = it.stop_ticks, it.target_ticks
            else:
                key, base = repair_key, round(pos.avg_ticks_x4 / 4)
                sd, td = self.sect.repair_stop_ticks, self.sect.repair_target_ticks
                leg = "repair" if leg == "stop" else leg
            stop_px, tgt_px = L.bracket_ticks(base, pos.direction, sd, td)
            px = stop_px if type_ == L.STOP else tgt_px
            try:
                oid = (yield from self.send(key, leg, pos.contract, type_, L.close_side(pos.direction), pos.size, px,
                                            prio=IO.PROTECT))
                if it is not None:
                    setattr(it, "stop_oid" if type_ == L.STOP else "target_oid", oid)
                    self.save_intent(it)
            except TopstepXError as exc:
                self.risk("protection_failed", True, f"repair {leg} for {contract_name(pos.contract)} failed: {exc}", "ERROR")
                if type_ == L.STOP:
                    (yield from self.close_contract(pos.contract, key, "exit", IO.PROTECT))
        self.risk("protection_invariant", False, "repaired")

    def day_pnl_cents(self) -> int:
        return self.day_pnl.get(self.day(), 0) if self.day() else sum(self.day_pnl.values())

    def unrealized(self) -> int:
        total = 0
        for c, p in self.positions.items():
            mark = self.marks.get(c)
            if mark is not None:
                total += L.unrealized_cents(instrument_for(c), p.direction, p.size, p.avg_ticks_x4, mark)
        return total

    def guard(self) -> Flow:
        now = self.now_ns()
        day = self.day()
        h = self.journal.get("halt") or {}
        if self.halted and h.get("kind") == "daily_loss" and day and h.get("day") != day:
            logger.info(f"GUARD: new trading day {day}: daily loss halt of {h.get('day')} cleared")
            self.clear_halt()
            self.risk("halt", False, f"new trading day {day}: daily loss halt cleared")
        if now > 0 and self.calendar.must_be_flat(now):    # no time rules before the event clock has data
            exposed = bool(self.positions) or any(it.active for it in self.intents.values()) or \
                any(o.get("status") in L.LIVE for o in self.orders.values())
            if exposed or self.eod_done_day != day:
                if (yield from self.flatten(f"gw-eod-{day}", "eod", f"flatten time {self.cfg.trading.flatten_time:%H:%M}")):
                    self.eod_done_day = day
            return
        if not day:
            return
        real = self.day_pnl.get(day, 0)
        unreal = self.unrealized()
        if not (self.halted and h.get("kind") == "daily_loss") and L.daily_loss_hit(real, unreal, self.max_loss_cents):
            detail = f"day P&L {real + unreal} cents (realized {real}, open {unreal}) <= -{self.max_loss_cents}"
            self.set_halt(f"daily loss: {detail}", "daily_loss")
            self.risk("daily_loss", True, detail, "ERROR")
            (yield from self.flatten(f"gw-dailyloss-{day}", "flatten", "daily loss limit"))

    def periodic(self) -> Flow:
        if self.flatten_pending:
            key, leg, reason = self.flatten_pending
            (yield from self.flatten(key, leg, reason, budget_s=2.0))
        if self.stale_legs:
            (yield from self.retry_stale_legs())
        for c, intended in list(self.overfill_pending.items()):
            (yield from self.close_excess(c, intended))
        busy = any(it.in_flight for it in self.intents.values())
        period = self.sect.poll_s if (busy or not self.hub_reconciled) else self.sect.idle_poll_s
        if time.monotonic() - self.last_reconcile >= period:
            reserve = 0 if getattr(self.rest.limiter, "reserve", 0) else self.sect.rate_reserve
            if self.rest.limiter.free() < reserve + 3:
                self.stats["polls_deferred"] = self.stats.get("polls_deferred", 0) + 1
                return                      # keep the REST budget for orders; poll when it refills
            if not (yield from self.reconcile(False)):
                self.last_reconcile = time.monotonic()      # no tight loop against a failing broker
                (yield from self.flatten_unconfirmed())

    def flatten_unconfirmed(self) -> Flow:
        """An entry whose outcome is still unknown after unknown_flatten_s while the broker's order
        search keeps failing: close whatever is open in that contract rather than sit unprotected."""
        for it in list(self.intents.values()):
            if it.state is S.UNKNOWN and time.monotonic() - it.since > self.sect.unknown_flatten_s:
                self.risk("order_unknown", True, f"entry {it.key} unconfirmed after "
                          f"{self.sect.unknown_flatten_s:.0f} s: closing {contract_name(it.contract)}", "ERROR")
                ok, _, msg = (yield from self.close_contract(it.contract, it.key, "exit"))
                if ok:
                    if it.active:
                        self.save_intent(it.to(S.FAILED))
                else:
                    logger.error(f"GUARD: closing after an unknown entry failed: {msg}; retrying")

    def keep_for_restart(self) -> Flow:
        """Stopped for a restart: leave every position that has a working stop at the broker to
        the next gateway (it adopts it from the journal and the broker); close any that has none."""
        try:
            ps = yield from self.broker_positions(IO.PROTECT)
            working = yield from self.working_orders(None, IO.PROTECT)
        except TopstepXError as exc:
            logger.error(f"RESTART: cannot read the broker ({exc}); flattening instead")
            return (yield from self.shutdown())
        ok = True
        for c, p in ps.items():
            stops = [o for o in working if o.get("contractId") == c and int(o.get("type", 0)) in L.STOP_TYPES
                     and int(o.get("side", -1)) == L.close_side(p.direction) and int(o.get("size", 0)) >= p.size]
            if stops:
                logger.warning(f"RESTART: keeping {contract_name(c)} {p.direction * p.size:+d}, protected by stop "
                               f"order {stops[0]['id']}; the next gateway adopts it")
                continue
            logger.error(f"RESTART: {contract_name(c)} {p.direction * p.size:+d} has no working stop: closing it")
            done, _, msg = yield from self.close_contract(c, f"gw-restart-{time.time_ns()}", "flatten", IO.FLATTEN)
            ok &= done
        return ok

    def shutdown(self) -> Flow:
        logger.warning("SHUTDOWN: cancelling working orders, flattening, verifying")
        ok = (yield from self.flatten(f"gw-shutdown-{time.time_ns()}", "flatten", "shutdown", budget_s=25.0))
        logger.info(f"SHUTDOWN: {'flat' if ok else 'NOT verified flat'}; state saved")
        return ok
