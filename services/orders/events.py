"""Broker events (user hub or REST, the same path; idempotent): orders, fills, positions.

A part of the Gateway (services/orders/gateway.py): methods on its state, run on the loop's thread.
"""
from __future__ import annotations

import sys
import time
from typing import Any

from loguru import logger

from common.instruments import instrument_for
from common.messages import Fill, OrderEvent, OrderReply
from common.topstepx.rest import parse_time, unwrap
from services.orders import broker_io
from services.orders import logic
from services.orders.book import BookOrder
from services.orders.broker_view import BadBrokerRecord, OrderUpdate, TradeUpdate, created_ns
from services.orders.errors import cents
from services.orders.journal import as_record
from services.orders.states import Intent, IntentState
from services.orders.states import next_status


class EventsMixin:
    def order_event(self, o: BookOrder) -> OrderEvent:
        pt = o.price_ticks
        return OrderEvent(o.id, o.tag, o.contract, o.leg, o.side, o.type, o.size, o.status,
                          limit_ticks=pt if o.type == logic.LIMIT else None,
                          stop_ticks=pt if o.type == logic.STOP else None,
                          fill_volume=o.fill_volume, filled_price=o.filled_price,
                          intent_key=o.key, signal_id=self._intent_field(o.key, "signal_id", o.key))

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
        oid = raw.get("id")
        was = self.book.pruned_status(oid) if type(oid) is int else None
        if was is not None and raw.get("status") == was:
            # a forgotten finished order reported as it ended: a poll lists the session's every
            # order, and converting each one first cost the loop ~8 us an order, ms per poll
            return
        try:
            u = OrderUpdate.of(raw)              # the one conversion of the broker's record
        except BadBrokerRecord as exc:
            logger.warning(f"BROKER: order record ignored: {exc}")
            return
        tag, oid = u.tag, u.id
        row = self.book.by_tag(tag) if tag else None
        if row is None and oid not in self.book:
            if self._pruned_unchanged(oid, u):
                return                      # a finished order we have forgotten, reported again as it was
            # (an untagged one may be a closeContract order of ours: by id, never adopted twice)
            found = self.journal.order(tag) if tag else self.journal.order_by_id(oid)
            if found is not None and self._journal_unchanged(found, u):
                return
            row = self._recall(found)
        if row is None and logic.bracket_child(tag) is not None:
            row = self._adopt_bracket_child(tag, u)
        if row is None:
            if oid not in self.book and (tag or u.type != logic.MARKET or self._adopt_close_order(
                    oid, u.contract, u.side, u.size) is None):
                return                      # not one of ours
        elif row.id is None:
            self._register(tag, oid)
        o = self.book.get(oid)
        if o is None:
            return
        if o.leg == "entry":
            it = self.intents.get(o.key)
            if it is not None and it.state in (IntentState.PLACING, IntentState.UNKNOWN) and not u.finished_unfilled:
                self._adopt_entry(it, oid)       # (a refused attempt is not the entry: a retry may follow)
        if not o.created_ns:             # the reconciliation's search window must reach back to it
            o.created_ns = created_ns(raw)
        inst = instrument_for(u.contract or o.contract)
        px = u.stop_price if o.type == logic.STOP else u.limit_price
        changed = self.book.update(o, time.monotonic(), status=u.status, fill_volume=u.fill_volume,
                                   size=u.size or o.size,
                                   filled_price="" if u.filled_price is None else str(u.filled_price),
                                   price_ticks=None if px is None else inst.to_ticks_rounded(px))
        if not changed:
            return
        self.journal.put_order(o.tag, o.key, o.leg, o.attempt, o.journal_data(), oid)
        terminal = o.finished
        self.publish(self.order_event(o), key=str(oid), forget=terminal)
        if o.leg == "entry" and terminal and o.fill_volume == 0:
            it = self.intents.get(o.key)
            if it is not None and it.state in (IntentState.WORKING, IntentState.UNKNOWN) and it.entry_oid == oid:
                it.to(IntentState.REJECTED if o.status == logic.REJECTED else IntentState.CANCELLED)
                logger.warning(f"ORDER: entry {o.tag} ended with status {o.status} and no fill")
                self.save_intent(it)

    def _pruned_unchanged(self, oid: int, u: OrderUpdate) -> bool:
        """A pruned (finished) order reported with the status it ended with: nothing to do, and
        no journal read (reconciliation lists the whole session's orders every few seconds)."""
        was = self.book.pruned_status(oid)
        return was is not None and (u.status is None or next_status(was, u.status) == was)

    def _journal_unchanged(self, found: dict, u: OrderUpdate) -> bool:
        """A finished order of ours the book no longer holds (its note evicted), reported as it
        ended: noted again, not brought back (a session's whole order list comes every poll)."""
        old = BookOrder.from_journal(found)
        if old.id is None or not old.finished or (u.status is not None and next_status(old.status, u.status) != old.status):
            return False
        self.book.note_pruned(old.id, old.status)
        return True

    def _recall(self, row: dict | None) -> BookOrder | None:
        """An order pruned from the book (or not yet in it) read back from the journal, so a late
        event for it is still recognised as ours and applied by the same rules."""
        if row is None:
            return None
        o = BookOrder.from_journal(row, time.monotonic())
        if self.book.by_tag(o.tag) is not None or (o.id is not None and o.id in self.book):
            return self.book.by_tag(o.tag) or self.book.get(o.id)
        if self.book.has_key(o.key):
            self.book.add(o)
            return o
        # the book holds all of a key's orders or none: bring back the whole key
        for r in self.journal.orders_of_key(o.key):
            self.book.add(BookOrder.from_journal(r, time.monotonic()))
        return self.book.by_tag(o.tag)

    def _adopt_bracket_child(self, tag: str, u: OrderUpdate) -> BookOrder | None:
        """A native bracket child (entry tag + -SL / -TP): journaled as the intent's stop or target."""
        base, leg = logic.bracket_child(tag)
        parent = self.book.by_tag(base) or self._recall(self.journal.order(base))
        if parent is None:
            return None
        row = self.book.add(BookOrder(tag, parent.key, leg, parent.attempt, u.contract or parent.contract, u.type,
                                      u.side, u.size, None, u.status or 0, native=True))
        self.journal.put_order(tag, parent.key, leg, parent.attempt, row.journal_data())
        it = self.intents.get(parent.key)
        oid = u.id
        if it is not None:
            setattr(it, "stop_oid" if leg == "stop" else "target_oid", oid)
            self.save_intent(it)
        logger.info(f"ORDER: native bracket {leg} {oid} ({tag}) for {parent.key}")
        return row

    def _adopt_entry(self, it: dict, oid: int) -> None:
        """An entry whose placement outcome was unknown (timeout, restart) is found at the broker."""
        key = it.key
        was = it.state.value
        it.entry_oid = oid
        it.to(IntentState.WORKING)
        (logger.info if was == "placing" else logger.warning)(
            f"SYNC: entry {key} found at the broker as order {oid} (was {was})")
        if was == "unknown":
            self.risk("order_unknown", False, f"entry {key} resolved: order {oid}")
        rec = self.journal.intent(key)
        if rec and rec["reply"] is None:
            self.journal.set_reply(key, as_record(OrderReply(key, True, "accepted", "",
                                                          {"order_id": oid, "size": it.size})))
        self.save_intent(it)

    def on_trade(self, raw: dict, publish: bool = True, park: bool = True) -> None:
        t_rx = time.perf_counter_ns()
        tid = raw.get("id")
        if type(tid) is int and tid in self.seen_trades:   # a poll lists the session's every trade
            return
        try:
            t = TradeUpdate.of(raw)              # the one conversion of the broker's record
        except BadBrokerRecord as exc:
            logger.warning(f"BROKER: trade record ignored: {exc}")
            return
        tid = t.id
        if tid in self.seen_trades:
            return
        if self.journal.has_fill(tid):          # a trade of a day trimmed from memory, reported again
            return
        self.seen_trades[tid] = ""
        if t.voided:
            return
        contract = t.contract or self.contract
        inst = instrument_for(contract)
        oid = t.order_id
        ts = parse_time(t.timestamp)
        price = inst.to_ticks_rounded(t.price)
        fees = cents(t.fees)
        pnl = None if t.pnl is None else cents(t.pnl)
        day = self.calendar.trading_day(ts) if ts else self.day()
        net = (pnl or 0) - fees
        o = self.book.get(oid) or self._recall(self.journal.order_by_id(oid)) or \
            self._adopt_close_order(oid, contract, t.side, t.size)
        if o is None and publish and park and self.placing_since(time.monotonic() - 30):
            # a fill of an order whose placement has not returned yet: keep it until the ack
            self.seen_trades.pop(tid, None)
            self.parked.setdefault(oid, []).append(raw)
            self.parked_at.setdefault(oid, time.monotonic())
            return
        self.seen_trades[tid] = day = sys.intern(day)      # one string per day, not per trade
        leg, key = (o.leg, o.key) if o else ("unknown", "")
        if o is not None and o.status in (logic.PENDING_CANCEL, logic.CANCELLED):
            self.stats["fills_after_cancel"] = self.stats.get("fills_after_cancel", 0) + 1
            logger.warning(f"FILL: trade {tid} fills {o.tag} after its cancel was sent")
        side, size = t.side, t.size
        fill = Fill(tid, oid, contract, leg, side, size, price, fees, pnl, ts, intent_key=key,
                    signal_id=str(self._intent_field(key, "signal_id", key)) if key else "",
                    model_version=str(self._intent_field(key, "model_version", "")) if key else "")
        it = self.intents.get(key) if o is not None else None
        entry = publish and leg == "entry" and it is not None
        overfill = None
        with self.journal.transaction():             # the fill and what it does to its entry: one commit
            self.journal.add_fill(tid, oid, {"day": day, "net": net, "leg": leg, "key": key,
                                             "fill": as_record(fill) if publish else None})
            if entry:
                overfill = self._entry_filled(it, o, size, price, t_rx)
        self.day_pnl[day] = self.day_pnl.get(day, 0) + net
        self.last_fill_day = max(self.last_fill_day, day)
        if not publish:
            return
        if entry:
            if overfill is not None:
                self.spawn(self.on_overfill(contract, *overfill), "overfill")
            self.spawn_protect(it)        # before the fill's log line and publish: the stop goes out first
        self.stats["fills"] += 1
        logger.info(logic.fill_line(contract, side, size, price, leg))
        self.publish(fill, key=str(tid))
        if o is None:
            logger.warning(f"FILL: trade {tid} for order {oid} that is not ours")
            return
        if entry:
            return
        if leg in ("stop", "target", "repair") and it is not None and it.active:
            it.closed += size
            remaining = it.filled - it.closed
            others = [x for x in (it.stop_oid, it.target_oid) if x and x != oid]
            if remaining <= 0:
                for x in others:
                    self.spawn(self.cancel(x, broker_io.PROTECT), f"oco-cancel-{x}")
                it.to(IntentState.CLOSED)
                logger.info(f"ORDER: {o.tag} filled; OCO sibling(s) {others} cancelled")
            else:
                for x in others:
                    self.spawn(self._modify_size(x, remaining), f"oco-resize-{x}")
            self.save_intent(it)
            if remaining < 0:
                self.spawn(self.on_overfill(contract, 0, f"{o.tag} filled {size} with only {size + remaining} "
                                                         "open: both legs filled"), "overfill")
        elif leg in ("stop", "target", "repair"):
            # a protective leg filled after its position was closed (a fill after the cancel was sent)
            self.spawn(self.on_overfill(contract, 0, f"{o.tag} filled {size} after its position was closed"),
                       "overfill")

    def _entry_filled(self, it: Intent, o: BookOrder, size: int, price: int, t_rx: int) -> tuple[int, str] | None:
        """An entry's fill on its intent (journaled by the caller with the fill). Returns the
        (intended signed size, detail) of an overfill to close, else None."""
        overfill = None
        it.filled += size
        meant = o.size or it.size
        if it.filled > meant:
            it.filled = meant
            overfill = (it.direction * meant, f"entry {o.tag} filled {it.filled + size} > size {meant}")
        if it.fill_ticks is None:
            it.fill_ticks = price
            it.protect_t0 = t_rx
        if it.state is not IntentState.CLOSING:
            it.to(IntentState.OPEN)
        self.save_intent(it)
        return overfill

    def _on_position(self, p: dict) -> None:
        bp = logic.position_of(p)
        if bp is None:
            self.positions.pop(p.get("contractId"), None)
        else:
            self.positions[bp.contract] = bp

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
