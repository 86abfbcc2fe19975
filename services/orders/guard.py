"""The guard (timers): flatten time, the daily loss limit, retries of what did not finish.

A part of the Gateway (services/orders/gateway.py): methods on its state, run on the loop's thread.
"""
from __future__ import annotations

import time

from loguru import logger

from common.instruments import contract_name, instrument_for
from services.orders import logic
from services.orders.broker_io import Flow
from services.orders.states import IntentState


class GuardMixin:
    def day_pnl_cents(self) -> int:
        return self.day_pnl.get(self.day(), 0) if self.day() else sum(self.day_pnl.values())

    def unrealized(self) -> int:
        total = 0
        for c, p in self.positions.items():
            mark = self.marks.get(c)
            if mark is not None:
                total += logic.unrealized_cents(instrument_for(c), p.direction, p.size, p.avg_ticks_x4, mark)
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
                bool(self.book.live())
            if exposed or self.eod_done_day != day:
                if (yield from self.flatten(f"gw-eod-{day}", "eod", f"flatten time {self.cfg.trading.flatten_time:%H:%M}")):
                    self.eod_done_day = day
            return
        if not day:
            return
        real = self.day_pnl.get(day, 0)
        unreal = self.unrealized()
        if not (self.halted and h.get("kind") == "daily_loss") and logic.daily_loss_hit(real, unreal, self.max_loss_cents):
            detail = f"day P&L {real + unreal} cents (realized {real}, open {unreal}) <= -{self.max_loss_cents}"
            self.set_halt(f"daily loss: {detail}", "daily_loss")
            self.risk("daily_loss", True, detail, "ERROR")
            (yield from self.flatten(f"gw-dailyloss-{day}", "flatten", "daily loss limit"))

    def periodic(self) -> Flow:
        self.trim_memory()
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
            if it.state is IntentState.UNKNOWN and time.monotonic() - it.since > self.sect.unknown_flatten_s:
                self.risk("order_unknown", True, f"entry {it.key} unconfirmed after "
                          f"{self.sect.unknown_flatten_s:.0f} s: closing {contract_name(it.contract)}", "ERROR")
                ok, _, msg = (yield from self.close_contract(it.contract, it.key, "exit"))
                if ok:
                    if it.active:
                        self.save_intent(it.to(IntentState.FAILED))
                else:
                    logger.error(f"GUARD: closing after an unknown entry failed: {msg}; retrying")
