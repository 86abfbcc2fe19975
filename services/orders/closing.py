"""Closing: reduce-only by construction (Position/closeContract), protection cancelled only
once the broker shows flat; flatten, restart and shutdown.

A part of the Gateway (services/orders/gateway.py): methods on its state, run on the loop's thread.
"""
from __future__ import annotations

import time

from loguru import logger

from common.instruments import contract_name
from common.topstepx.rest import BrokerError, TopstepXError
from services.orders import broker_io
from services.orders import logic
from services.orders.book import BookOrder
from services.orders.broker_io import Flow, Sleep, call
from services.orders.states import IntentState


class ClosingMixin:
    def wait_flat(self, contract: str | None, prio: int = broker_io.EXIT) -> Flow:
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
                       prio: int = broker_io.EXIT) -> Flow:
        """Position/closeContract (or partialCloseContract for `size`): the broker closes what it
        holds, so the order can neither open nor flip a position whatever our view says.
        True if a close was sent, False if the broker says there is nothing to close.
        Raises TopstepXError when the broker could not be told. A full close whose outcome is
        unknown (5xx, 429, timeout) is sent again: closing what is left can never add to it.
        A partial close is not (a second one would close more than meant)."""
        self.closing[contract] = (key, leg, time.monotonic() + 30, self.book.max_id())
        self.stats["orders_sent"] += 1
        logger.info(f"ORDER: CLOSE {contract_name(contract)} {'all' if size is None else size} ({key}:{leg})")
        tries = 1 if size is not None else self.sect.protect_attempts + 2
        for attempt in range(tries):
            try:
                if size is None:
                    (yield call(self.rest.close_contract, self.acct, contract, prio=prio))
                else:
                    (yield call(self.rest.partial_close_contract, self.acct, contract, size, prio=prio))
                return True
            except BrokerError as exc:
                if "not found" in (exc.message or "").lower():
                    logger.info(f"ORDER: close {contract_name(contract)}: broker holds no position ({exc.message})")
                    return attempt > 0          # after an unknown first try, it may have been that one
                raise
            except TopstepXError as exc:
                if attempt + 1 >= tries:
                    raise
                logger.warning(f"ORDER: close {contract_name(contract)} try {attempt + 1} failed: {exc}; again")
                yield Sleep(0.3 * (attempt + 1))

    def _adopt_close_order(self, oid: int, contract: str, side: int, size: int) -> BookOrder | None:
        """The untagged market order a closeContract created: journal it under the exit's key and
        leg, so its fills and events carry the right leg."""
        key, leg, until, newer_than = self.closing.get(contract, ("", "", 0.0, 0))
        if not key or time.monotonic() > until or oid <= newer_than:
            return None
        attempt = self.next_attempt(key, leg)
        tag = logic.make_tag(key, leg, attempt)
        row = self.book.add(BookOrder(tag, key, leg, attempt, contract, logic.MARKET, side, size, via="closeContract"))
        self.journal.put_order(tag, key, leg, attempt, row.journal_data())
        self._register(tag, oid)
        return row

    def close_contract(self, contract: str, key: str, leg: str, prio: int = broker_io.EXIT) -> Flow:
        """Close the position first, confirm flat, then cancel what is left of its legs. If the close
        cannot be sent or confirmed, the stop stays at the broker. Returns (ok, None, message)."""
        self.busy_until[contract] = time.monotonic() + 5
        self.set_closing(contract, True)
        try:
            (yield from self.cancel_increasing(contract, prio))
            # no position read first: closeContract closes what the broker holds, or is refused
            sent = (yield from self.close_position(contract, key, leg, prio=prio))
        except TopstepXError as exc:
            self.set_closing(contract, False)
            return False, None, f"close failed: {exc}; protection left in place"
        if not (yield from self.wait_flat(contract, prio)):
            self.set_closing(contract, False)
            return False, None, "position not flat after the close; protection left in place"
        self.mark_closed(contract)
        left = (yield from self.cancel_all(contract, broker_io.PROTECT))
        if left:
            self.stale_legs.update(left)
            logger.warning(f"ORDER: flat, but {left} still working; cancelling again")
        return True, None, "closed" if sent else "already flat"

    def cancel_increasing(self, contract: str | None = None, prio: int = broker_io.EXIT) -> Flow:
        """Before a close: cancel working orders that would add to a position (entries), keep the
        stop and target of the position until it is gone. Raises TopstepXError."""
        entries = [o.id for o in self.book.working(contract, leg="entry")]
        yield from self.cancel_each(entries, prio)

    def set_closing(self, contract: str, closing: bool) -> None:
        """OPEN <-> CLOSING for the contract's open intents (a failed close leaves them open)."""
        for it in list(self.intents.values()):
            if it.contract == contract and it.state is (IntentState.OPEN if closing else IntentState.CLOSING):
                self.save_intent(it.to(IntentState.CLOSING if closing else IntentState.OPEN))

    def mark_closed(self, contract: str | None) -> None:
        for it in list(self.intents.values()):
            if contract is None or it.contract == contract:
                self.save_intent(it.to(IntentState.CLOSED))

    def flatten(self, key: str, leg: str, reason: str, budget_s: float = 30.0, prio: int = broker_io.FLATTEN) -> Flow:
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
            o = self.book.get(oid)
            if o is not None and o.finished:
                self.stale_legs.discard(oid)
            elif (yield from self.cancel(oid)):
                self.stale_legs.discard(oid)

    def keep_for_restart(self) -> Flow:
        """Stopped for a restart: leave every position that has a working stop at the broker to
        the next gateway (it adopts it from the journal and the broker); close any that has none."""
        try:
            ps = yield from self.broker_positions(broker_io.PROTECT)
            working = yield from self.working_orders(None, broker_io.PROTECT)
        except TopstepXError as exc:
            logger.error(f"RESTART: cannot read the broker ({exc}); flattening instead")
            return (yield from self.shutdown())
        ok = True
        for c, p in ps.items():
            stops = [o for o in working if o.get("contractId") == c and int(o.get("type", 0)) in logic.STOP_TYPES
                     and int(o.get("side", -1)) == logic.close_side(p.direction) and int(o.get("size", 0)) >= p.size]
            if stops:
                logger.warning(f"RESTART: keeping {contract_name(c)} {p.direction * p.size:+d}, protected by stop "
                               f"order {stops[0]['id']}; the next gateway adopts it")
                continue
            logger.error(f"RESTART: {contract_name(c)} {p.direction * p.size:+d} has no working stop: closing it")
            done, _, msg = yield from self.close_contract(c, f"gw-restart-{time.time_ns()}", "flatten", broker_io.FLATTEN)
            ok &= done
        return ok

    def shutdown(self) -> Flow:
        logger.warning("SHUTDOWN: cancelling working orders, flattening, verifying")
        ok = (yield from self.flatten(f"gw-shutdown-{time.time_ns()}", "flatten", "shutdown", budget_s=25.0))
        logger.info(f"SHUTDOWN: {'flat' if ok else 'NOT verified flat'}; state saved")
        return ok
