"""Brackets and OCO: the stop and target of a filled entry, resized with more fills, and an
overfill (both legs, a fill after a cancel, an entry over its size) closed at once.

A part of the Gateway (services/orders/gateway.py): methods on its state, run on the loop's thread.
"""
from __future__ import annotations

import time

from loguru import logger

from common.instruments import contract_name
from common.topstepx.rest import BrokerError, TopstepXError
from services.orders import broker_io
from services.orders import logic
from services.orders.broker_io import Flow, Sleep, call
from services.orders.states import Intent


class BracketsMixin:
    def on_overfill(self, contract: str, intended: int, detail: str) -> Flow:
        """More was filled than meant (both legs filled, a fill after a cancel, an entry over its
        size): close the excess at once, raise an ERROR risk event, halt entries."""
        self.stats["overfills"] = self.stats.get("overfills", 0) + 1
        self.risk("overfill", True, detail, "ERROR")
        self.set_halt(f"overfill: {detail}", "overfill")
        self.risk("halt", True, f"halted: overfill: {detail}")
        (yield from self.close_excess(contract, intended))

    def close_excess(self, contract: str, intended: int, prio: int = broker_io.FLATTEN) -> Flow:
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

    def _modify_size(self, oid: int, size: int, prio: int = broker_io.PROTECT) -> Flow:
        o = self.book.get(oid)
        if o is None or o.size == size or o.finished or o.status == logic.SUSPENDED:
            return                       # (a suspended bracket child follows its entry at the broker)
        try:
            (yield call(self.rest.modify_order, self.acct, oid, size=size, prio=prio))
            o.size = size
            logger.info(f"ORDER: {o.tag} resized to {size}")
        except TopstepXError as exc:
            logger.warning(f"ORDER: resize {o.tag} to {size} failed: {exc} (the invariant check repairs it)")

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
        stop_px, tgt_px = logic.bracket_ticks(it.fill_ticks, d, it.stop_ticks, it.target_ticks)
        side = logic.close_side(d)
        self.busy_until[c] = time.monotonic() + 3
        if it.native and not (it.stop_oid and it.target_oid):
            # the broker's bracket children come on the hub with the entry; give them a moment,
            # then look them up; placed here (client-side OCO) only if they are not there
            for _ in range(10):
                if it.stop_oid and it.target_oid:
                    break
                yield Sleep(0.1)
            if not (it.stop_oid and it.target_oid):
                try:
                    for o in (yield call(self.rest.orders, self.acct, self.since(), prio=broker_io.PROTECT)):
                        if logic.bracket_child(o.get("customTag") or "") is not None:
                            self.on_order(o)
                except TopstepXError as exc:
                    logger.warning(f"ORDER: bracket children of {it.key} not confirmed: {exc}")
        for leg, type_, px, field in (("stop", logic.STOP, stop_px, "stop_oid"), ("target", logic.LIMIT, tgt_px, "target_oid")):
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
                    setattr(it, field, (yield from self.send(it.key, leg, c, type_, side, size, px, prio=broker_io.PROTECT)))
                    if leg == "stop" and it.protect_t0:
                        self.bench.append({"leg": "stop_ack", "fill_to_stop_ack_ns": time.perf_counter_ns() - it.protect_t0})
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
                    ok, _, msg = (yield from self.close_contract(c, it.key, "exit", broker_io.PROTECT))
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
        for o in self.book.of_key(key, leg):
            if o.id and not o.finished:
                return o.id
        return None
