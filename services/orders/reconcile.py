"""Reconciliation with the broker over REST and the protection invariant.

A part of the Gateway (services/orders/gateway.py): methods on its state, run on the loop's thread.
"""
from __future__ import annotations

import time

from loguru import logger

from common.instruments import contract_name
from common.messages import OrderReply
from common.topstepx.rest import TopstepXError
from services.orders import broker_io
from services.orders import logic
from services.orders.broker_io import Flow, call
from services.orders.broker_view import created_ns
from services.orders.journal import as_record
from services.orders.states import IntentState


FULL_EVERY_S = 30.0      # a full reconciliation (the session's every order and trade) at least this often
OVERLAP_S = 60.0         # a windowed search reaches this far behind the newest broker record seen


class ReconcileMixin:
    def search_window(self) -> tuple[float, float] | None:
        """(orders since, trades since) for a windowed reconciliation, or None for a full one.

        A full search lists the session's every order and trade: ~100 KiB by midday, parsed and
        served while a stop may be going out (stamped: the stop waited 5-10 ms behind one). A
        windowed one asks from OVERLAP_S behind the newest record of the last search (the
        broker's own timestamps: the simulator's clock is not this box's), and never later than
        the creation of any order the book holds live, so every live order is in it. Full at
        start, every FULL_EVERY_S, while a live order's creation is not known yet, and whenever a
        windowed one sees the protection invariant broken (it repairs only on full data)."""
        marks = self.search_marks
        live = [o.created_ns for o in self.book.live()]
        if self.want_full or time.monotonic() >= self.next_full or None in marks.values() or 0 in live:
            return None
        floor = self.since()
        o_since = min([marks["orders"] - OVERLAP_S] + [ns / 1e9 - 1.0 for ns in live])
        return max(floor, o_since), max(floor, marks["trades"] - OVERLAP_S)

    def _mark(self, name: str, records: list[dict]) -> None:
        """The newest creation time in a search's answer (0: none yet: the window is the session)."""
        newest = max((created_ns(r) for r in records), default=0) / 1e9
        self.search_marks[name] = max(self.search_marks[name] or 0.0, newest)

    def reconcile(self, initial: bool = False, prio: int = broker_io.POLL) -> Flow:
        got: dict[str, list] = {}
        window = None if initial else self.search_window()
        full = window is None
        o_since, t_since = (self.since(), self.since()) if full else window
        for name, fn, args in (("orders", self.rest.orders, (self.acct, o_since)),
                               ("trades", self.rest.trades, (self.acct, t_since)),
                               ("positions", self.rest.open_positions, (self.acct,))):
            try:
                got[name] = yield call(fn, *args, prio=prio)
            except TopstepXError as exc:
                logger.warning(f"SYNC: reconciliation: {name} failed: {exc}")
        kind = "reconciles_full" if full else "reconciles_windowed"
        self.stats[kind] = self.stats.get(kind, 0) + 1
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
        self._mark("orders", orders)
        self._mark("trades", got["trades"])
        if full:
            self.want_full, self.next_full = False, time.monotonic() + FULL_EVERY_S
        (yield from self.drop_vanished(orders, prio))
        self.stats["reconciles"] += 1
        if fresh:
            self.journal.set("initialized", True)
        self.last_reconcile = time.monotonic()
        if self.hub_state == "connected" and not self.hub_reconciled:
            self.hub_reconciled = True
            self.risk("user_hub_down", False, "user hub up and reconciled; entries allowed")
        (yield from self.resolve_intents(orders, initial))
        (yield from self.check_invariant(orders, initial, complete=full))
        return True

    def drop_vanished(self, orders: list[dict], prio: int = broker_io.POLL) -> Flow:
        """An order the journal holds as working that the broker knows nothing of (not in its
        order history, not open) is not working: it would otherwise be reported, swept and
        counted as protection forever. Seen when a simulated broker was started afresh."""
        seen = {int(o["id"]) for o in orders if o.get("id") is not None}
        ghosts = [o.id for o in self.book.live() if o.id not in seen]
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
            o = self.book.get(oid)
            if o is None:
                continue
            logger.warning(f"SYNC: order {oid} ({o.tag}) is working in the journal but unknown to the broker; "
                           "marked cancelled")
            self.on_order({"id": oid, "customTag": o.tag, "contractId": o.contract, "status": logic.CANCELLED,
                           "fillVolume": o.fill_volume, "size": o.size})

    def resolve_intents(self, orders: list[dict], initial: bool) -> Flow:
        by_tag = {o.get("customTag"): o for o in orders}
        for it in list(self.intents.values()):
            key = it.key
            if it.state in (IntentState.PLACING, IntentState.UNKNOWN):
                found = [by_tag[o.tag] for o in self.book.of_key(key, "entry") if o.tag in by_tag]
                if found:
                    self._adopt_entry(it, int(found[-1]["id"]))
                elif initial or time.monotonic() - it.since > self.sect.unknown_flatten_s:
                    pos = self.positions.get(it.contract)
                    if pos is not None:
                        self.risk("order_unknown", True, f"entry {key} unconfirmed but a position is open: closing", "ERROR")
                        (yield from self.close_contract(it.contract, key, "exit"))
                    if it.active:
                        it.to(IntentState.FAILED)
                    rec = self.journal.intent(key)
                    if rec and rec["reply"] is None:
                        self.journal.set_reply(key, as_record(OrderReply(key, False, "error", "entry not placed")))
                    self.save_intent(it)
                    continue
                self.save_intent(it)
            if it.state in (IntentState.WORKING, IntentState.OPEN):
                # recompute the filled quantity from the broker's order view (a restart may have missed it)
                o = self.book.get(it.entry_oid)
                if o and o.fill_volume > it.filled and it.fill_ticks is not None:
                    it.filled = o.fill_volume
                if it.filled > 0 and it.fill_ticks is not None:
                    it.to(IntentState.OPEN)
                    # at start, protect only what the broker still holds: a position closed while
                    # the gateway was down (or a broker started afresh) is closed below, not protected
                    if (initial and it.contract in self.positions) or \
                            (not initial and not (it.stop_oid and it.target_oid)):
                        self.spawn_protect(it)
                if it.state is IntentState.OPEN and it.contract not in self.positions \
                        and time.monotonic() > self.busy_until.get(it.contract, 0):
                    logger.info(f"SYNC: {key}: broker shows flat; intent closed")
                    for x in (it.stop_oid, it.target_oid):
                        o = self.book.get(x)
                        if o is not None and o.working:
                            (yield from self.cancel(x, broker_io.PROTECT))
                    self.save_intent(it.to(IntentState.CLOSED))

    def check_invariant(self, orders: list[dict], immediate: bool = False, complete: bool = True) -> Flow:
        """Every position has its stop at the broker; nothing works while flat. `complete`:
        `orders` is the session's every order; a windowed list may lack a stray order older
        than its window, so a problem it shows is confirmed by a full search before repairing."""
        now = time.monotonic()
        busy = {c for c, t in self.busy_until.items() if t > now}
        busy |= {it.contract for it in self.intents.values() if it.in_flight or it.state is IntentState.CLOSING}
        bos = []
        for o in orders:
            if int(o.get("status", 0)) not in logic.WORKING:
                continue
            bos.append(logic.BrokerOrder(int(o["id"]), o["contractId"], int(o["type"]), int(o["side"]), int(o["size"]),
                                     int(o["status"]), o.get("customTag") or ""))
        rep = logic.check_protection(list(self.positions.values()), bos, busy)
        if not rep:
            self.violations.clear()
            return
        sig = ";".join(rep.problems)
        self.violations[sig] = self.violations.get(sig, 0) + 1
        if not complete:
            self.want_full = True          # the next poll is full, and repairs if it sees it too
            return
        if not immediate and self.violations[sig] < 2:
            return                         # must be seen twice: the broker view may be mid-change
        self.violations.clear()
        self.stats["repairs"] += 1
        self.risk("protection_invariant", True, "; ".join(rep.problems), "ERROR")
        for oid in rep.cancel:
            (yield from self.cancel(oid, broker_io.PROTECT))
        for oid, size in rep.resize:
            try:
                (yield call(self.rest.modify_order, self.acct, oid, size=size, prio=broker_io.PROTECT))
            except TopstepXError as exc:
                logger.warning(f"REPAIR: resize {oid} failed: {exc}")
        repair_key = f"gw-repair-{time.time_ns()}"
        for pos, leg, type_ in [(p, "stop", logic.STOP) for p in rep.place_stop] + \
                               [(p, "target", logic.LIMIT) for p in rep.place_target]:
            it = self.active_intent(pos.contract)
            if it is not None and it.fill_ticks is not None:
                key, base = it.key, it.fill_ticks
                sd, td = it.stop_ticks, it.target_ticks
            else:
                key, base = repair_key, round(pos.avg_ticks_x4 / 4)
                sd, td = self.sect.repair_stop_ticks, self.sect.repair_target_ticks
                leg = "repair" if leg == "stop" else leg
            stop_px, tgt_px = logic.bracket_ticks(base, pos.direction, sd, td)
            px = stop_px if type_ == logic.STOP else tgt_px
            try:
                oid = (yield from self.send(key, leg, pos.contract, type_, logic.close_side(pos.direction), pos.size, px,
                                            prio=broker_io.PROTECT))
                if it is not None:
                    setattr(it, "stop_oid" if type_ == logic.STOP else "target_oid", oid)
                    self.save_intent(it)
            except TopstepXError as exc:
                self.risk("protection_failed", True, f"repair {leg} for {contract_name(pos.contract)} failed: {exc}", "ERROR")
                if type_ == logic.STOP:
                    (yield from self.close_contract(pos.contract, key, "exit", broker_io.PROTECT))
        self.risk("protection_invariant", False, "repaired")
