"""Broker events (user hub or REST, the same path; idempotent): orders, fills, positions.

A part of the Gateway (services/orders/gateway.py): methods on its state, run on the loop's thread.
"""
from __future__ import annotations

import time
from typing import Any

from loguru import logger

from common.instruments import instrument_for
from common.messages import Fill, OrderEvent, OrderReply
from common.topstepx.rest import parse_time, unwrap
from services.orders import broker_io
from services.orders import logic
from services.orders.broker_view import BadBrokerRecord, OrderUpdate, TradeUpdate
from services.orders.errors import cents
from services.orders.journal import as_record
from services.orders.states import Intent, IntentState
from services.orders.states import next_status


class EventsMixin:
    def order_event(self, o: dict) -> OrderEvent:
        pt = o.get("price_ticks")
        return OrderEvent(o["id"], o["tag"], o["contract"], o["leg"], o.get("side", 0), o.get("type", 0),
                          o.get("size", 0), o.get("status", 0),
                          limit_ticks=pt if o.get("type") == logic.LIMIT else None,
                          stop_ticks=pt if o.get("type") == logic.STOP else None,
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
        try:
            u = OrderUpdate.of(raw)              # the one conversion of the broker's record
        except BadBrokerRecord as exc:
            logger.warning(f"BROKER: order record ignored: {exc}")
            return
        tag, oid = u.tag, u.id
        row = self.rows.get(tag)
        if row is None and logic.bracket_child(tag) is not None:
            row = self._adopt_bracket_child(tag, u)
        if row is None:
            if oid not in self.orders and (tag or u.type != logic.MARKET or self._adopt_close_order(
                    oid, u.contract, u.side, u.size) is None):
                return                      # not one of ours
        elif row["order_id"] is None:
            self._register(tag, oid, row["data"])
        o = self.orders.get(oid)
        if o is None:
            return
        if o["leg"] == "entry":
            it = self.intents.get(o["key"])
            if it is not None and it.state in (IntentState.PLACING, IntentState.UNKNOWN) and not u.finished_unfilled:
                self._adopt_entry(it, oid)       # (a refused attempt is not the entry: a retry may follow)
        inst = instrument_for(u.contract or o["contract"])
        new = {"status": next_status(o.get("status"), o.get("status", 0) if u.status is None else u.status),
               "fill_volume": u.fill_volume, "size": u.size or o.get("size", 0),
               "filled_price": "" if u.filled_price is None else str(u.filled_price)}
        px = u.stop_price if o.get("type") == logic.STOP else u.limit_price
        if px is not None:
            new["price_ticks"] = inst.to_ticks_rounded(px)
        changed = any(o.get(k) != v for k, v in new.items())
        o.update(new)
        if not changed:
            return
        self.journal.put_order(o["tag"], o["key"], o["leg"], self.rows[o["tag"]]["attempt"],
                               {k: o.get(k) for k in ("contract", "type", "side", "size", "price_ticks", "status",
                                                      "fill_volume")}, oid)
        terminal = o["status"] in logic.TERMINAL
        self.publish(self.order_event(o), key=str(oid), forget=terminal)
        if o["leg"] == "entry" and terminal and o["fill_volume"] == 0:
            it = self.intents.get(o["key"])
            if it is not None and it.state in (IntentState.WORKING, IntentState.UNKNOWN) and it.entry_oid == oid:
                it.to(IntentState.REJECTED if o["status"] == logic.REJECTED else IntentState.CANCELLED)
                logger.warning(f"ORDER: entry {o['tag']} ended with status {o['status']} and no fill")
                self.save_intent(it)

    def _adopt_bracket_child(self, tag: str, u: OrderUpdate) -> dict | None:
        """A native bracket child (entry tag + -SL / -TP): journaled as the intent's stop or target."""
        base, leg = logic.bracket_child(tag)
        parent = self.rows.get(base)
        if parent is None:
            return None
        data = {"contract": u.contract or parent["data"]["contract"], "type": u.type, "side": u.side, "size": u.size,
                "price_ticks": None, "status": u.status or 0, "fill_volume": 0, "native": True}
        row = {"tag": tag, "order_id": None, "key": parent["key"], "leg": leg, "attempt": parent["attempt"],
               "data": data, "t": 0.0}
        self.rows[tag] = row
        self.journal.put_order(tag, parent["key"], leg, parent["attempt"], data)
        it = self.intents.get(parent["key"])
        oid = u.id
        if it is not None:
            setattr(it, "stop_oid" if leg == "stop" else "target_oid", oid)
            self.save_intent(it)
        logger.info(f"ORDER: native bracket {leg} {oid} ({tag}) for {parent['key']}")
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

    def on_trade(self, raw: dict, publish: bool = True) -> None:
        t_rx = time.perf_counter_ns()
        try:
            t = TradeUpdate.of(raw)              # the one conversion of the broker's record
        except BadBrokerRecord as exc:
            logger.warning(f"BROKER: trade record ignored: {exc}")
            return
        tid = t.id
        if tid in self.seen_trades:
            return
        self.seen_trades.add(tid)
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
        o = self.orders.get(oid) or self._adopt_close_order(oid, contract, t.side, t.size)
        if o is None and publish and self.placing_since(time.monotonic() - 30):
            # a fill of an order whose placement has not returned yet: keep it until the ack
            self.seen_trades.discard(tid)
            self.parked.setdefault(oid, []).append(raw)
            return
        leg, key = (o["leg"], o["key"]) if o else ("unknown", "")
        if o is not None and o.get("status") in (logic.PENDING_CANCEL, logic.CANCELLED):
            self.stats["fills_after_cancel"] = self.stats.get("fills_after_cancel", 0) + 1
            logger.warning(f"FILL: trade {tid} fills {o['tag']} after its cancel was sent")
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

    def _entry_filled(self, it: Intent, o: dict, size: int, price: int, t_rx: int) -> tuple[int, str] | None:
        """An entry's fill on its intent (journaled by the caller with the fill). Returns the
        (intended signed size, detail) of an overfill to close, else None."""
        overfill = None
        it.filled += size
        if it.filled > o.get("size", it.size):
            meant = o.get("size", it.size)
            it.filled = meant
            overfill = (it.direction * meant, f"entry {o['tag']} filled {it.filled + size} > size {meant}")
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
